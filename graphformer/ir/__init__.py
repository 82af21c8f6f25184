"""The IR: a graph of primitive op nodes after expansion (params substituted, blocks inlined).

Every node has a path name (`encoder.3.attn`) that is the same in diagnostics, state-dict keys, ONNX
node names and diagram ids. Graph inputs are nodes with op `input`. A node lists its producers by port
(`node.inputs`); `connect()` derives the edges, after which the queries below (consumers, topological
order, the live set, ties) answer from them. Inference writes `shape` (a TensorType or None when unknown)
into each node; backends only read. Nothing outside this module sees how the edges are stored.

Compact storage: a repeated block call may be held as a `Repeat` (one body graph per distinct
instantiation, plus which repetition uses which) instead of every repetition's nodes. The analyses that
know it walk `entries()` and `value()`; every other query unrolls the graph first (`unroll()`), to exactly
the nodes, edges, order and block-input checks a full expansion makes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..base import graphs
from ..base.diagnostics import Span
from ..base.dims import Dim
from ..base.errors import UsageError
from ..ops import REGISTRY
from ..ops.base import Attrs, TensorType


@dataclass(frozen=True)
class Frame:
    """One level of block nesting: the call node's path, the block name, and the repetition."""

    path: str             # e.g. `encoder` (the call node); repetitions live at `encoder.3`
    block: str
    index: int | None     # repetition index, None when not repeated
    count: int | None     # total repetitions, None when not repeated
    call_span: Span | None = None
    owner: int | None = None   # `share`: the repetition whose parameters this one uses (None: its own)
    groups: int | None = None  # `share`: how many parameter sets the repetitions of the call have

    @property
    def owner_prefix(self) -> str | None:
        """`encoder.0.` for repetition `encoder.3.` when it uses repetition 0's parameters, else None."""
        return None if self.owner is None else f"{self.path}.{self.owner}."


@dataclass
class IRNode:
    name: str
    op: str
    attrs: Attrs | None
    inputs: dict[str, str]          # port -> producing node name (ordered as the op's ports)
    span: Span | None
    scope: tuple[Frame, ...] = ()
    shape: TensorType | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class BodyFacts:
    """A body inferred at one input type: its output, parameters and FLOPs, or the first error."""

    out: TensorType | None
    params: dict[str, tuple[int, ...]]
    flops: Any                      # a Dim
    error: tuple[str, str] | None   # (code, message)


@dataclass(eq=False)
class Body:
    """A block used as an attribute (a mixture of experts' `expert`): expanded once on its own into `ir`,
    whose single input is typed by the node that uses it. `analyse` (attached by the front end, which
    owns inference) infers the body at an input type; results are cached per type."""

    block: str
    ir: "IRGraph"
    analyse: Callable[["IRGraph", TensorType], BodyFacts] | None = None
    _facts: dict = field(default_factory=dict)
    _current: TensorType | None = None

    def at(self, x: TensorType) -> BodyFacts:
        """Facts at input type `x`; afterwards `ir`'s shapes are those at `x` (the torch lowering reads them)."""
        if x not in self._facts or self._current != x:
            self._facts[x] = self.analyse(self.ir, x)
            self._current = x
        return self._facts[x]


@dataclass(frozen=True)
class BlockInputCheck:
    """A block's declared input shapes at one call (`inputs: {x: [B, n, d_model]}`), checked against
    the values passed in once shapes are known. Bare symbols in a pattern bind per call."""

    block: str
    call_span: Span | None
    patterns: dict[str, tuple[Dim, ...]]    # block input -> declared dims
    sources: dict[str, str]                 # block input -> IR node passed in (unresolved ones left out)
    spans: dict[str, Span | None]           # block input -> where it is declared
    index: int | None = None                # the repetition, when the call repeats
    carried: tuple[str, ...] = ()           # inputs fed back from the previous repetition's outputs


@dataclass(frozen=True)
class WeightRule:
    """Reference key `src` (`{i}`: a layer index) → spec parameter(s); several targets split dim 0."""

    src: str | None                         # None: a `zero` rule (the reference lacks these parameters)
    targets: tuple[str, ...]
    transpose: bool = False
    unstack: bool = False                   # dim 0 indexes experts: slice `e` goes to targets with `{e}` = e
    reshape: bool = False                   # each part takes its spec parameter's shape (same element count)
    scale: float | None = None              # multiplies the tensor, last
    zero: bool = False                      # no tensor: the targets (`{i}` = any layer) are zeros
    split: str = "blocks"                   # several targets: `blocks`, `heads` or `alternate` (docs/weight-maps.md)
    heads: int | None = None                # `split: heads`: the number of head groups
    more: tuple[str, ...] = ()              # `from: [a, b]`: the sources after `src`, concatenated
    concat: int = 0                         # ... along this axis (the axis of `combine` below)
    combine: str = "concat"                 # how `from: [a, b]` makes one tensor: `concat`; `weight_norm`,
                                            # a · b / ‖b‖ (g, v); `multiply`, a times the vector b along the axis
    stored_shape: tuple[int, ...] | None = None   # the shape `from` is stored in, where the rule can't derive it
    span: Span | None = field(default=None, compare=False)   # where the rule is written (GF301 when writing)


@dataclass(frozen=True)
class WeightMap:
    """A reference implementation's state-dict names → this spec's parameters (docs/weight-maps.md)."""

    rules: tuple[WeightRule, ...]
    strip_prefix: tuple[str, ...] = ()     # a key starting with one of them reads without it (the longest)
    ignore: tuple[str, ...] = ()            # reference keys (`*` and `{i}` patterns) that are not used
    reference: str = ""
    # (stored, read): a checkpoint's name for a run of dotted segments → the name the rules read
    # (`language_model.model` → `language_model`), applied in order after `strip_prefix`; reversed on writing
    renames: tuple[tuple[str, str], ...] = ()


@dataclass(eq=False)
class Repeat:
    """A repeated block call held once per distinct instantiation (its params, `repeat_index`-driven
    ones included). Body `k` is the graph of repetition `firsts[k]`: its nodes carry that repetition's
    paths and frames; its inputs are placeholder nodes (`<x>`, op `input`) standing for what feeds each
    block input; `outputs` names the body nodes of the block's outputs. Repetition `i` is body `which[i]`
    with `path.<first>.` read as `path.<i>.` and the placeholders bound: a carried input to the previous
    repetition's output of the same name (after the first), any other input to `feeds`."""

    path: str                                 # the call node's path: repetition i's nodes live under `path.i.`
    count: int
    depth: int                                # where this call's Frame sits in its nodes' scopes
    bodies: list["IRGraph"]
    firsts: list[int]
    which: list[int]
    feeds: dict[str, str] = field(default_factory=dict)   # block input -> value (outside the call)
    carried: tuple[str, ...] = ()
    check: BlockInputCheck | None = None      # the call's declared input shapes, sources as placeholders
    owners: list[int] | None = None           # `share`: repetition i uses repetition owners[i]'s parameters

    def owner(self, i: int) -> int | None:
        """The repetition whose parameters repetition `i` uses, when not its own (`share`)."""
        return None if self.owners is None or self.owners[i] == i else self.owners[i]

    def owns(self, i: int) -> bool:
        return self.owner(i) is None

    @property
    def groups(self) -> int | None:
        return None if self.owners is None else len(set(self.owners))

    def prefix(self, i: int) -> str:
        return f"{self.path}.{i}."

    def output(self, name: str, i: int | None = None) -> str:
        """The path of block output `name` in repetition `i` (default the last)."""
        i = self.count - 1 if i is None else i
        k = self.which[i]
        first = self.prefix(self.firsts[k])
        return self.prefix(i) + self.bodies[k].outputs[name][len(first):]

    def bound(self, i: int) -> dict[str, str]:
        """Placeholder -> the value it stands for in repetition `i` (a path outside the call, or the
        previous repetition's output)."""
        body = self.bodies[self.which[i]]
        return {ph: (self.output(x, i - 1) if i and x in self.carried else self.feeds[x])
                for x, ph in body.inputs.items()}

    @property
    def size(self) -> int:
        """Nodes of all repetitions."""
        per = [b._size() for b in self.bodies]
        return sum(per[k] for k in self.which)


@dataclass
class IRGraph:
    name: str
    file: str
    doc: str = ""
    inputs: dict[str, str] = field(default_factory=dict)    # spec input name -> node
    outputs: dict[str, str] = field(default_factory=dict)   # spec output name -> node
    output_spans: dict[str, Span | None] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)    # resolved params (int, float, bool, str)
    param_origin: dict[str, str] = field(default_factory=dict)  # param -> "--set" / "preset `tiny`" if not default
    dims: dict[str, int] = field(default_factory=dict)      # symbolic dim -> example size
    weight_maps: dict[str, WeightMap] = field(default_factory=dict)
    bodies: list[Body] = field(default_factory=list)         # block-valued attributes, expanded
    block_checks: list[BlockInputCheck] = field(default_factory=list)
    switched_off: dict[str, str] = field(default_factory=dict)  # node path -> why (`when: pooler`, pooler false)
    _nodes: dict[str, IRNode] = field(default_factory=dict, repr=False)
    _succ: dict[str, dict[str, list[str]]] = field(default_factory=dict, repr=False)  # producer -> consumer -> ports
    _pred: dict[str, dict[str, None]] = field(default_factory=dict, repr=False)
    _order: list[str] | None = field(default=None, repr=False)
    _ties: dict[str, str] | None = field(default=None, repr=False)
    _shared: dict[str, str] | None = field(default=None, repr=False)
    _entries: list | None = field(default=None, repr=False)    # compact: IRNode | Repeat in spec order
    _connected: bool = field(default=False, repr=False)

    # ------------------------------------------------------------------ building
    def add(self, node: IRNode) -> None:
        self._nodes[node.name] = node
        self._succ[node.name], self._pred[node.name] = {}, {}
        self._order = self._ties = self._shared = None
        if self._entries is not None:
            self._entries.append(node)

    def add_repeat(self, rep: Repeat) -> None:
        """Hold a repeated call compactly (the graph stays compact until a query needs every node)."""
        if self._entries is None:
            self._entries = list(self._nodes.values())
        self._entries.append(rep)
        self._order = self._ties = self._shared = None

    def connect(self) -> None:
        """Derive the edges from every node's `inputs` (call once all references are resolved)."""
        self._connected = True
        if self._entries is not None:
            return   # derived when unrolled; compact analyses read `inputs`
        for name, node in self._nodes.items():
            for port, src in node.inputs.items():
                if src in self._nodes:
                    self._succ[src].setdefault(name, []).append(port)
                    self._pred[name][src] = None
        self._order = self._ties = None

    def cut_inputs(self, name: str) -> None:
        """Forget the edges into `name` (a node on a cycle: reported, so the rest can be ordered)."""
        self.unroll()
        for src in self._pred[name]:
            self._succ[src].pop(name, None)
        self._pred[name] = {}
        self._order = None

    # ------------------------------------------------------------------ compact storage
    @property
    def compact(self) -> bool:
        """Whether some repeated call is still held once per distinct instantiation."""
        return self._entries is not None

    def entries(self) -> list:
        """This graph's own nodes and its compact repeated calls (`Repeat`), in spec order."""
        return list(self._nodes.values()) if self._entries is None else list(self._entries)

    def value(self, name: str) -> IRNode:
        """The node that computes value `name`, without unrolling: for a compact repetition's output, the
        body node that computes it (its `name` is the path in the body's first repetition)."""
        node = self._nodes.get(name)
        if node is not None:
            return node
        rep, local = self._virtual()[name]
        return rep.bodies[rep.which[-1]].value(local)

    def _virtual(self) -> dict[str, tuple[Repeat, str]]:
        """The outputs of each compact call's last repetition: path -> (call, name in its last body)."""
        out = {}
        for rep in (self._entries or ()):
            if isinstance(rep, Repeat):
                body = rep.bodies[rep.which[-1]]
                for o, local in body.outputs.items():
                    out[rep.output(o)] = (rep, local)
        return out

    def entry_order(self) -> list:
        """`entries()` in dependency order: a compact call after the values that feed it and before the
        readers of its outputs, a weight's owner before the nodes tied to it. Raises graphs.CycleError."""
        entries = self.entries()
        owner = {}
        for i, e in enumerate(entries):
            if isinstance(e, Repeat):
                owner.update((e.output(o), i) for o in e.bodies[e.which[-1]].outputs)
            else:
                owner[e.name] = i
        succ: dict[int, list[int]] = {i: [] for i in range(len(entries))}
        ties = self.ties
        for i, e in enumerate(entries):
            reads = list(e.feeds.values()) if isinstance(e, Repeat) else [*e.inputs.values(), ties.get(e.name)]
            for r in reads:
                j = owner.get(r)
                if j is not None:
                    succ[j].append(i)
        return [entries[i] for i in graphs.topological_order(list(range(len(entries))), succ.__getitem__)]

    def _size(self) -> int:
        if self._entries is None:
            return sum(1 for n in self._nodes.values() if not _placeholder(n.name))
        return sum(e.size if isinstance(e, Repeat) else not _placeholder(e.name) for e in self._entries)

    def unroll(self) -> None:
        """Replace the compact storage by every repetition's nodes and block-input checks, exactly as a
        full expansion makes them (names, order, inputs, scopes, shapes)."""
        if self._entries is None:
            return
        entries, checks = self._entries, self.block_checks
        self._entries, self._nodes, self._succ, self._pred, self.block_checks = None, {}, {}, {}, []
        self._order = self._ties = self._shared = None
        _emit(self, entries, checks, _same, _same_scope)
        if self._connected:
            self.connect()

    # ------------------------------------------------------------------ queries
    def node(self, name: str) -> IRNode:
        if self._entries is not None and name not in self._nodes:
            self.unroll()
        return self._nodes[name]

    def __contains__(self, name: object) -> bool:
        self.unroll()
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes) if self._entries is None else self._size()

    def names(self) -> list[str]:
        """Node names in insertion (spec) order."""
        self.unroll()
        return list(self._nodes)

    def nodes(self) -> list[IRNode]:
        """Nodes in topological order (ties broken by insertion order, so output is stable)."""
        self.unroll()
        if self._order is None:
            self._order = graphs.topological_order(list(self._nodes), self._succ.__getitem__)
        return [self._nodes[n] for n in self._order]

    def input_types(self, node: IRNode) -> dict[str, TensorType | None]:
        """The inferred type of each of `node`'s inputs, by port."""
        self.unroll()
        return {p: self._nodes[s].shape for p, s in node.inputs.items()}

    def consumers(self, name: str) -> list[tuple[IRNode, str]]:
        """Every (node, port) that reads `name`'s value, in spec order."""
        self.unroll()
        return [(self._nodes[c], p) for c, ports in self._succ[name].items() for p in ports]

    def ancestors(self, names) -> set[str]:
        """`names` and every node they depend on."""
        self.unroll()
        return graphs.reachable(names, self._pred.__getitem__)

    def descendants(self, names) -> set[str]:
        """`names` and every node that depends on them."""
        self.unroll()
        return graphs.reachable(names, self._succ.__getitem__)

    def cycles(self) -> list[tuple[list[str], list[str]]]:
        """Each strongly connected part that holds a cycle, as (one cycle through it, all its nodes)."""
        self.unroll()
        out = []
        position = {n: i for i, n in enumerate(self._nodes)}
        for part in graphs.strongly_connected(list(self._nodes), self._succ.__getitem__):
            if len(part) > 1 or part[0] in self._succ[part[0]]:
                order = sorted(part, key=position.__getitem__)
                out.append((graphs.find_cycle(order, self._succ.__getitem__), part))
        return out

    @property
    def ties(self) -> dict[str, str]:
        """Node -> the node whose `weight` it reuses (`tied: tok` on a linear layer)."""
        if self._ties is None:   # a compact graph's own nodes: a body holds no resolved reference
            self._ties = {}
            for n in self._nodes.values():
                owner = n.attrs.tied_to() if n.attrs is not None else None
                if owner:
                    self._ties[n.name] = owner
        return self._ties

    @property
    def shared(self) -> dict[str, str]:
        """Node -> the node whose parameters it uses (`share` on a repeated call: `encoder.3.attn` ->
        `encoder.0.attn`). Unrolls the graph."""
        if self._shared is None:
            self.unroll()
            self._shared = {}
            for n in self._nodes.values():
                owner = shared_owner(n.name, n.scope)
                if owner is not None:
                    self._shared[n.name] = owner
        return self._shared

    def param_aliases(self) -> dict[str, str]:
        """State-dict name -> the parameter it is (a tied `lm_head.weight` -> `tok.weight`; a shared
        repetition's `encoder.3.attn.q.weight` -> `encoder.0.attn.q.weight`)."""
        out = {f"{n}.weight": f"{owner}.weight" for n, owner in self.ties.items()}
        for n, owner in self.shared.items():
            node = self._nodes[n]
            for k in REGISTRY[node.op].params(node.attrs, self.input_types(node)):
                out[f"{n}.{k}"] = f"{owner}.{k}"
        return out

    def live(self) -> set[str]:
        """The nodes some output depends on, and the owners of the weights that those nodes reuse."""
        used = self.ancestors(self.outputs.values())
        for n, owner in self.ties.items():
            if n in used and owner in self._nodes:  # an unresolved tie is reported already
                used |= self.ancestors([owner])
        return used

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter tensor by its state-dict name (`blocks.3.attn.q.weight`); tied and shared ones
        appear once (under their owner's name)."""
        out = {}
        shared = self.shared
        for n in self.nodes():
            if n.op == "input" or n.name in shared:
                continue
            for k, shape in REGISTRY[n.op].params(n.attrs, self.input_types(n)).items():
                out[f"{n.name}.{k}"] = tuple(shape)
        return out

    def resolve_dims(self, overrides: dict[str, int] | None = None) -> dict[str, int]:
        """The example sizes of the symbolic dims with `overrides` applied (unknown names, sizes < 1: UsageError)."""
        env = dict(self.dims)
        for k, v in (overrides or {}).items():
            if k not in env:
                raise UsageError(f"`{k}` is not a symbolic dim of {self.name} (dims: {', '.join(env) or 'none'})")
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"dim `{k}` must be an integer of at least 1, got {v!r}")
            env[k] = v
        return env

    def table(self) -> str:
        """One row per node: path, op, inferred shape (the `check --shapes` listing)."""
        rows = [(n.name, n.op, str(n.shape) if n.shape else "?") for n in self.nodes()]
        w0 = max((len(r[0]) for r in rows), default=4)
        w1 = max((len(r[1]) for r in rows), default=2)
        return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows) + "\n"


def shared_owner(name: str, scope: tuple) -> str | None:
    """The node whose parameters node `name` uses under `share` (its path with every sharing repetition's
    index read as its owner's, innermost first), or None when it owns its parameters."""
    out = name
    for f in reversed(scope):
        p = f.owner_prefix
        if p is not None:
            mine = f"{f.path}.{f.index}."
            if out.startswith(mine):
                out = p + out[len(mine):]
    return None if out == name else out


def _placeholder(name: str) -> bool:
    return name.startswith("<")


def _same(name: str) -> str:
    return name


def _same_scope(scope: tuple) -> tuple:
    return scope


def _emit(out: IRGraph, entries: list, checks: list, rename, reframe) -> None:
    """Add `entries` (nodes, compact calls) and `checks` to flat `out`, each name through `rename` and each
    scope through `reframe` (the enclosing repetitions' renaming)."""
    for e in entries:
        if isinstance(e, Repeat):
            for i in range(e.count):
                _emit_repetition(out, e, i, rename, reframe, nodes=True)
        elif not _placeholder(e.name):
            out.add(IRNode(rename(e.name), e.op, e.attrs, {p: rename(s) for p, s in e.inputs.items()}, e.span,
                           reframe(e.scope), e.shape, dict(e.meta)))
    for c in checks:
        if isinstance(c, Repeat):
            for i in range(c.count):
                _emit_repetition(out, c, i, rename, reframe, nodes=False)
        else:
            out.block_checks.append(replace(c, sources={k: rename(v) for k, v in c.sources.items()}))


def _emit_repetition(out: IRGraph, rep: Repeat, i: int, rename, reframe, nodes: bool) -> None:
    k = rep.which[i]
    body = rep.bodies[k]
    first, mine = rep.prefix(rep.firsts[k]), rep.prefix(i)
    cut = len(first)
    bound = {ph: rename(v) for ph, v in rep.bound(i).items()}

    def inner(name: str) -> str:
        if name.startswith(first):
            return rename(mine + name[cut:])
        return bound[name] if name in bound else rename(name)

    seen: dict[int, tuple] = {}

    def scope(frames: tuple) -> tuple:
        hit = seen.get(id(frames))
        if hit is None:
            local = tuple(replace(f, index=i, owner=rep.owner(i), groups=rep.groups) if d == rep.depth else
                          replace(f, path=mine + f.path[cut:]) if d > rep.depth and f.path.startswith(first) else f
                          for d, f in enumerate(frames))
            hit = seen[id(frames)] = reframe(local)
        return hit

    if nodes:
        _emit(out, body.entries(), [], inner, scope)
        return
    if rep.check is not None:
        out.block_checks.append(replace(rep.check, sources={x: inner(ph) for x, ph in rep.check.sources.items()},
                                        index=i))
    _emit(out, [], body.block_checks, inner, scope)
