"""The view model shared by the diagram renderers (Graphviz, Mermaid): what to draw, not how.

`build(ir)` turns the IR into boxes, arrows and nested clusters:

- one box per IR node, labelled with its op and the attributes a reader needs (`12 heads · causal`);
- one arrow per data edge, labelled with the tensor's shape (symbolic, or concrete with `dims`);
- inputs and outputs as their own kinds of node (the outputs have no IR node: `output:NAME`);
- one cluster per block call, nested as the calls are;
- a repeated block collapsed to its first repetition, its cluster labelled `× N`: every node of
  repetition k stands for itself in repetition 0, arrows between repetitions (the carried streams)
  disappear, arrows into any repetition from outside land on repetition 0's node, and arrows out of
  the last repetition leave from repetition 0's node. `expand=True` draws every repetition instead.

Node ids are IR paths (`blocks.0.attn`), the same names as in diagnostics and state-dict keys.

Every string here may come from a spec or the command line (a doc, a `--set` value in the subtitle);
each writer quotes it for its own format after `printable` has made it one line of visible text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..base.diagnostics import escape_controls
from ..ir import IRGraph, IRNode
from ..ops import REGISTRY
from ..ops.base import TensorType


def printable(text: str) -> str:
    """`text` as one line of visible characters: line breaks, other control characters and direction
    overrides become escapes (`\\x0a`), tabs spaces. A writer then only has its format's quoting to do."""
    return escape_controls(text).replace("\t", " ")


# An op is coloured by its registry family, so a new op draws without an edit here; OP_STYLES overrides
# the ops that read differently from their family (`core` is broad: embeddings, attention, norms, ...).
# tests/unit/test_draw.py checks that every family has a style.
FAMILY_STYLE = {"core": "other", "activation": "activation", "structural": "structural", "sequence": "structural",
                "vision": "embed", "audio": "structural", "multimodal": "structural", "moe": "linear",
                "grid": "structural", "mla": "attention", "shape": "structural",
                "conv": "structural", "scan": "attention", "relative": "attention"}   # a scan mixes the tokens, as attention does
OP_STYLES = {
    **dict.fromkeys(["embedding", "positional", "table_row", "window_position_bias"], "embed"),
    **dict.fromkeys(["attention", "cross_attend", "cosine_logits"], "attention"),
    **dict.fromkeys(["linear", "conv1d", "conv2d"], "linear"),
    **dict.fromkeys(["norm", "l2_normalize", "group_norm", "batch_norm"], "norm"),
    "quick_gelu": "activation",
    "dropout": "dropout",
    **dict.fromkeys(["residual", "mul", "concat", "interleave"], "merge"),
}
# style key -> (fill, border, text): muted fills so that labels stay readable; inputs and outputs dark
PALETTE = {
    "input": ("#34568b", "#34568b", "#ffffff"),
    "output": ("#2e6b4f", "#2e6b4f", "#ffffff"),
    "embed": ("#fdf1d0", "#c9a646", "#222222"),
    "attention": ("#f9dcd2", "#c0705a", "#222222"),
    "linear": ("#dbe7f6", "#6a8fc0", "#222222"),
    "norm": ("#dcecd8", "#7fa874", "#222222"),
    "activation": ("#e7ddef", "#9579ab", "#222222"),
    "dropout": ("#f4f4f4", "#b0b0b0", "#555555"),
    "merge": ("#ececec", "#8a8a8a", "#222222"),
    "structural": ("#ececec", "#8a8a8a", "#222222"),
    "other": ("#e4eef0", "#7a9ca3", "#222222"),
}
SYMBOLS = {"residual": "+", "mul": "×"}


@dataclass
class Node:
    id: str                 # IR path, or `output:NAME` for a graph output
    kind: str               # "input" | "op" | "output"
    title: str              # the op (or the input/output name)
    detail: str             # key attributes, e.g. "12 heads · causal" ("" when none)
    name: str               # the node's own short name (`attn`), shown small beside the title
    style: str              # palette key: input, output, embed, attention, linear, norm, ...
    tooltip: str            # full path and shape, for SVG hover
    cluster: str | None     # id of the innermost cluster holding it
    symbol: str = ""        # drawn as a small circle with this glyph instead of a box (residual: +)


@dataclass
class Edge:
    src: str
    dst: str
    label: str              # shape of the tensor, optionally prefixed by the consumer's port
    tailport: str = ""      # where on a composed block's box the arrow leaves or lands (render/compose.py)
    headport: str = ""
    arrow: bool = True      # False where the arrow goes on inside a composed block


@dataclass
class Cluster:
    id: str                 # `blocks` (collapsed repeat), `blocks.3` (expanded), `enc` (plain call)
    label: str              # `layer × 12`
    name: str               # the call's own name (`blocks`), shown small beside the label; "" if the same
    parent: str | None
    repeat: int | None      # N when drawn once for N repetitions
    call: str | None = None  # the repeated call it draws, by its id when collapsed (`blocks`); None if not repeated
    parallel: bool = False  # its repetitions run side by side (a mixture's experts), not one after another


@dataclass
class Diagram:
    name: str
    subtitle: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    drawn_as: dict[str, str] = field(default_factory=dict)  # IR path -> id of the node that stands for it

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "input"]

    @property
    def outputs(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "output"]

    def chain(self, cluster: str | None) -> list[str]:
        """Cluster ids from the outermost down to `cluster`."""
        out = []
        while cluster is not None:
            out.append(cluster)
            cluster = self.clusters[cluster].parent
        return out[::-1]

    def members(self, cluster: str) -> set[str]:
        """Ids of the nodes inside a cluster, its sub-clusters included."""
        return {n.id for n in self.nodes if cluster in self.chain(n.cluster)}

    def entries(self, cluster: str) -> list[str]:
        """The nodes of a cluster that nothing inside it feeds (where the block's data comes in), the
        ones nearest the inputs first: the head of the list is drawn on the block's first row."""
        inside = self.members(cluster)
        fed = {e.dst for e in self.edges if e.src in inside and e.dst in inside}
        depth = self.depths()
        heads = [n for n in self.nodes if n.id in inside and n.id not in fed]
        real = [n for n in heads if n.kind != "slot"] or heads   # a composed block fed through a marked port only
        return sorted((n.id for n in real), key=lambda i: depth[i])

    def depths(self) -> dict[str, int]:
        """Longest path from any input to each node (nodes are kept in topological order)."""
        order = {n.id: i for i, n in enumerate(self.nodes)}
        depth = dict.fromkeys(order, 0)
        for e in sorted(self.edges, key=lambda e: order[e.src]):   # a source's depth is final before use
            depth[e.dst] = max(depth[e.dst], depth[e.src] + 1)
        return depth

    def children(self, cluster: str | None) -> list[Cluster | Node]:
        """Direct sub-clusters and nodes of a cluster (None: the top level), in order of first appearance,
        so that the text follows the flow of the model."""
        items: list[Cluster | Node] = []
        seen: set[str] = set()
        for n in self.nodes:
            path = [None] + self.chain(n.cluster)
            if cluster not in path:
                continue
            i = path.index(cluster)
            if i + 1 == len(path):
                items.append(n)
            elif path[i + 1] not in seen:
                seen.add(path[i + 1])
                items.append(self.clusters[path[i + 1]])
        return items


# ---------------------------------------------------------------- collapsing repetitions

@dataclass(frozen=True)
class _Placement:
    rep: str                      # the node that stands for this one in the diagram
    clusters: tuple[Cluster, ...]  # outermost first
    reps: tuple[tuple[str, int, bool], ...]  # (repeated call path, repetition, collapsed?) for every repeat around it


def _place(node: IRNode, expand: bool | frozenset[str]) -> _Placement:
    """Where a node is drawn: its representative path and its cluster chain.

    Frame paths contain the outer repetition indices (`enc.3.sub`), so the representative is built
    frame by frame: replace the original prefix by the canonical one, then append this frame's index
    (or 0 when collapsing). `expand` is True, False, or the set of repeated calls to expand, each named
    by its id in the fully collapsed diagram (`enc`, `enc.0.sub`).
    """
    orig, canon = "", ""
    call_orig, call_canon = "", ""   # the same walk with every repetition collapsed: the calls' ids
    clusters, reps = [], []
    parent = None
    for f in node.scope:
        path = canon + f.path[len(orig):]
        call = call_canon + f.path[len(call_orig):]
        short = path.rsplit(".", 1)[-1]
        name = "" if short == f.block else short
        if f.index is None:
            cluster = Cluster(path, f.block, name, parent, None)
            orig, canon = f.path, path
            call_orig, call_canon = f.path, call
        else:
            collapsed = not (expand is True or (expand and call in expand))
            reps.append((f.path, f.index, collapsed))
            call_orig, call_canon = f"{f.path}.{f.index}", f"{call}.0"
            if collapsed:
                cluster = Cluster(path, f"{f.block} × {f.count}" + _shared_label(f), name, parent, f.count, call)
                orig, canon = f"{f.path}.{f.index}", f"{path}.0"
            else:
                cid = f"{path}.{f.index}"
                uses = f", weights of {f.owner + 1}" if f.owner is not None else ""
                cluster = Cluster(cid, f"{f.block} {f.index + 1}/{f.count}{uses}", f"{name or short}.{f.index}", parent,
                                  None, call)
                orig, canon = f"{f.path}.{f.index}", cid
        clusters.append(cluster)
        parent = cluster.id
    return _Placement(canon + node.name[len(orig):], tuple(clusters), tuple(reps))


def _shared_label(f) -> str:
    """`share`: one set of weights for every repetition, or one per group."""
    if f.groups is None:
        return ""
    return ", shared weights" if f.groups == 1 else f", {f.groups} shared weight groups"


def _across_collapsed(a: _Placement, b: _Placement) -> bool:
    """True when two nodes sit in different repetitions of the same collapsed call (a carried edge)."""
    ra = {path: idx for path, idx, _ in a.reps}
    return any(collapsed and path in ra and ra[path] != idx for path, idx, collapsed in b.reps)


# ---------------------------------------------------------------- labels

def _num(v: Any) -> str:
    if isinstance(v, float):
        return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{v:g}")   # 1e-06 -> 1e-6, 1e+06 -> 1e6
    return str(v)


def _size(name: str) -> Callable[[Any], str]:
    """conv2d's and conv_transpose2d's sizes (only they read these fields generically): `kernel 3`, or a
    pair [h, w] as `kernel 4×3`."""
    return lambda v: f"{name} {'×'.join(map(str, v)) if isinstance(v, tuple) else v}"


# How one attribute reads in a label; anything not listed reads `name value`. A value equal to the
# field's default is left out (the label says what is special about this node), except required fields.
_ATTR_TEXT: dict[str, Callable[[Any], str | None]] = {
    "heads": lambda v: f"{v} head{'s' * (v != 1)}",
    "out": lambda v: f"→ {v}",
    "dim": lambda v: f"width {v}",
    "causal": lambda v: "causal" if v else None,
    "bias": lambda v: None if v else "no bias",
    # embedding's `scale: true` multiplies by √d; attention's `scale: 1.0` replaces the logits' 1/√d
    "scale": lambda v: ("scaled by √d" if v else None) if isinstance(v, bool) else f"scale {_num(v)}",
    "kind": lambda v: str(v),
    "unit_offset": lambda v: "scale 1 + w" if v else None,
    "approximate": lambda v: None if v == "none" else str(v),
    "max_len": lambda v: f"≤ {v} positions",
    "sinusoid": lambda v: "sin | cos halves" if v == "halves" else None,
    "stored": lambda v: "stored" if v else None,
    "tied": lambda v: f"tied to {str(v).rsplit('.', 1)[-1]}",
    "tie": lambda v: None,
    "eps": lambda v: f"eps {_num(v)}",
    "p": lambda v: f"p {_num(v)}",
    "by": lambda v: f"× {_num(v)}",
    "dropout": lambda v: f"dropout {_num(v)}" if v else None,
    "shape": lambda v: "→ [" + ", ".join(map(str, v)) + "]",     # reshape's target
    **{k: _size(k) for k in ("kernel", "stride", "padding", "dilation", "output_padding")},
    "order": lambda v: "order " + " ".join(map(str, v)),        # permute's
}


def _embedding_detail(a: Any) -> str:
    return " · ".join([f"{a.vocab} × {a.dim}"] + (["scaled by √d"] if getattr(a, "scale", False) else [])
                      + ([_ATTR_TEXT["tied"](a.tied)] if getattr(a, "tied", None) else []))


def _patch_detail(a: Any) -> str:
    stride = f" · stride {a.stride}" if a.stride and a.stride != a.patch else ""
    tube = f"{a.tubelet}×" if getattr(a, "tubelet", None) else ""
    return f"{tube}{a.patch}×{a.patch} → {a.dim}{stride}" + (" · grid" if getattr(a, "grid", False) else "")


def _conv1d_detail(a: Any) -> str:
    """`kernel 3 → 512 · stride 2 · pad 1 · groups 16`: the taps, the channels, and what differs from the
    default."""
    extra = [f"{name} {v}" for name, v, default in (("stride", a.stride, 1), ("pad", a.padding, 0),
                                                    ("dilation", a.dilation, 1), ("groups", a.groups, 1),
                                                    ("drop last", a.drop_last, 0)) if v != default]
    extra += ["weight norm"] * (a.weight_norm is not None)
    return " · ".join([f"kernel {a.kernel} → {a.out}"] + extra + ([] if a.bias else ["no bias"]))


def _interpolate_detail(a: Any) -> str:
    """`bilinear → 64×64`, `nearest × 2`, `bilinear → like` (to the size of the `like` input)."""
    to = (f"→ {'×'.join(map(str, a.size))}" if a.size is not None else f"× {a.scale}" if a.scale is not None
          else "→ like")
    return f"{a.mode} {to}" + (" · align corners" if a.align_corners else "")


def _pool2d_detail(a: Any) -> str:
    """`max 3×3 · stride 2 · pad 1`: the window, then what differs from the default; `avg → 7×7` adaptive."""
    if getattr(a, "output", None) is not None:
        h, w = a.output if isinstance(a.output, tuple) else (a.output, a.output)
        return f"{a.kind} → {h}×{w}"
    def hw(v):   # a size along both axes, one number or a pair [h, w]
        return v if isinstance(v, tuple) else (v, v)

    kernel = hw(a.kernel)
    extra = [f"{name} {v[0] if v[0] == v[1] else '×'.join(map(str, v))}" for name, v, default in (
        ("stride", a.step, kernel), ("pad", hw(a.padding), (0, 0)), ("dilation", hw(a.dilation), (1, 1)))
        if v != default]
    extra += ["ceil"] * a.ceil_mode + ["pad not counted"] * (a.count_include_pad is False)
    return " · ".join([f"{a.kind} {kernel[0]}×{kernel[1]}"] + extra)


def _attention_detail(a: Any) -> str:
    """`32 heads · 8 kv · causal · window 4096 · rope θ 10000`: what sets a modern attention apart."""
    parts = [f"{a.heads} head{'s' * (a.heads != 1)}"]
    kv = getattr(a, "kv_heads", None)
    if kv and kv != a.heads:
        parts.append("1 kv (MQA)" if kv == 1 else f"{kv} kv (GQA)")
    if getattr(a, "v_head_dim", None):
        parts.append(f"v heads {a.v_head_dim} wide")
    if getattr(a, "causal", False):
        parts.append("causal")
    if getattr(a, "window", None):
        parts.append(f"window {a.window}")
    if getattr(a, "rope", False):
        rope = (f"rope θ {_num(a.rope_theta)}" + (f" on {a.rope_dims} dims" if a.rope_dims else "")
                + (" in pairs" if getattr(a, "rope_interleaved", False) else ""))
        scaling = "" if a.rope_scaling == "none" else f" · {a.rope_scaling}" + (
            f" ×{_num(a.rope_factor)}" if a.rope_scaling in ("yarn", "linear") else "") + " scaling"
        parts.append(rope + scaling)
    if getattr(a, "alibi", False):
        parts.append("alibi")
    if getattr(a, "qk_norm", "none") != "none":
        parts.append("qk norm" + (" (whole projection)" if a.qk_norm == "rms_full" else "")
                     + (" · 1 + w" if a.qk_unit_offset else ""))
    if getattr(a, "softcap", None) is not None:
        parts.append(f"softcap {_num(a.softcap)}")
    if getattr(a, "sinks", False):
        parts.append("sinks")
    if getattr(a, "scale", None) is not None:
        parts.append(f"scale {_num(a.scale)}")
    biases = a.biases() if hasattr(a, "biases") else {}
    if biases and not any(biases.values()):
        parts.append("no bias")
    elif biases and not all(biases.values()):
        parts.append("bias " + "".join(p for p, b in biases.items() if b))
    return " · ".join(parts)


def _cross_detail(a: Any) -> str:
    """Heads first, as for self-attention, then the widths of its own."""
    return " · ".join([_attention_detail(a)] + ([f"width {a.dim}"] if a.dim else []) + ([f"→ {a.out}"] if a.out else [])
                      + ([f"dropout {_num(a.dropout)}"] if a.dropout else []))


# Ops whose attributes read better as one phrase than as `name value` pairs.
_OP_DETAIL: dict[str, Callable[[Any], str]] = {
    "embedding": _embedding_detail,
    "patch_embed": _patch_detail,
    "conv1d": _conv1d_detail,
    "interpolate": _interpolate_detail,
    "pool2d": _pool2d_detail,
    "latents": lambda a: f"{a.count} × {a.dim}",
    "vestigial": lambda a: f"unused {a.rows} × {a.cols}",
    "attention": _attention_detail,
    "cross_attend": _cross_detail,
    "moe": lambda a: f"top {a.top_k} of {a.experts} × {a.expert}"
                     + (" · sigmoid" if a.router == "sigmoid_topk" else "") + (" · biased choice" if a.selection_bias
                                                                                 else "")
                     + (f" · {a.top_groups} of {a.groups} groups" if a.groups and a.top_groups < a.groups else ""),
    "latent_attention": lambda a: f"{a.heads} heads · latent {a.kv_rank}" + (f" · q latent {a.q_rank}" if a.q_rank
                                                                             else "") + (" · causal" if a.causal else ""),
}
MAX_DETAILS = 4  # keep labels legible: an op with many non-default attributes shows the first few


def attr_detail(op: str, attrs: Any) -> str:
    """The short attribute text of a node label, e.g. `12 heads · causal` or `→ 3072`."""
    if attrs is None:
        return ""
    if op in _OP_DETAIL:
        return _OP_DETAIL[op](attrs)
    parts = []
    for name, fld in type(attrs).model_fields.items():
        value = getattr(attrs, name)
        if not fld.is_required() and value == fld.default:
            continue
        fmt = _ATTR_TEXT.get(name)
        if fmt:
            text = fmt(value)
        elif isinstance(value, bool):
            text = name if value else f"no {name}"
        else:
            text = f"{name} {_num(value)}"
        if text:
            parts.append(text)
    return " · ".join(parts[:MAX_DETAILS]) + (" …" if len(parts) > MAX_DETAILS else "")


def repeated_detail(op: str, attrs: list[Any]) -> str:
    """The label of a node drawn once for several repetitions: an attribute whose value differs between
    them lists its values (Swin's `window 7 · shift 0 / 3`); the others read as usual."""
    first = attrs[0]
    if first is None:
        return ""
    varying = {}
    for name in type(first).model_fields:
        values = list(dict.fromkeys(repr(getattr(a, name)) for a in attrs))
        if len(values) > 1:
            varying[name] = [getattr(a, name) for a in attrs]
    if not varying:
        return attr_detail(op, first)
    fields = type(first).model_fields
    # shown once with all its values: hidden from the usual text by reading as its default there
    steady = first.model_copy(update={k: fields[k].default for k in varying if not fields[k].is_required()})
    parts = [attr_detail(op, steady)] if attr_detail(op, steady) else []
    for name, values in varying.items():
        parts.append(f"{name} " + " / ".join(_num(v) for v in dict.fromkeys(values)))
    return " · ".join(parts)


def node_style(op: str) -> str:
    if op in OP_STYLES:
        return OP_STYLES[op]
    opdef = REGISTRY.get(op)
    return FAMILY_STYLE.get(opdef.family, "other") if opdef else "other"


def shape_text(t: TensorType | None, dims: dict[str, int]) -> str:
    if t is None:
        return "?"
    if dims:
        t = TensorType(tuple(d.subs(dims) for d in t.shape), t.dtype)
    return str(t)


def _port_label(op: str, port: str) -> str:
    """The consumer's port, shown on an edge only where it tells the reader something (query/context)."""
    opdef = REGISTRY.get(op)
    if opdef is None or opdef.variadic or len(opdef.ports) < 2 or port == opdef.port_names[0]:
        return ""
    return port


# ---------------------------------------------------------------- building

def build(ir: IRGraph, expand: bool | frozenset[str] = False, dims: dict[str, int] | None = None,
          subtitle: str = "", experts: bool = False) -> Diagram:
    """The diagram of `ir`; `expand` draws every repetition of the repeated blocks (True) or those of the
    named calls (a set, which may name a mixture's experts); `experts` draws every expert of every mixture."""
    dims = dims or {}
    diagram = Diagram(ir.name, subtitle)
    placed: dict[str, _Placement] = {}
    stands_for: dict[str, list[Any]] = {}   # a drawn node -> the attrs of every IR node it stands for
    for node in ir.nodes():
        p = placed[node.name] = _place(node, expand)
        diagram.drawn_as[node.name] = p.rep
        for c in p.clusters:
            diagram.clusters.setdefault(c.id, c)
        if p.rep in stands_for:
            stands_for[p.rep].append(node.attrs)
            continue
        stands_for[p.rep] = [node.attrs]
        diagram.nodes.append(_node(node, p, dims))
    for n in diagram.nodes:
        if len(stands_for.get(n.id, ())) > 1:
            n.detail = repeated_detail(n.title, stands_for[n.id])

    # A collapsed repetition draws one edge per (source, target, port); repetitions whose shapes differ list
    # them as a node lists its varying attributes (`a / b`), or the first and last of a longer run (a
    # convolution stack that halves the length), rather than drawing an edge each.
    shapes: dict[tuple[str, str, str], tuple[int, list[str]]] = {}   # -> (its index in edges, its shapes)
    bodies: dict[str, Any] = {}             # representative node -> its body's entry node ids
    for node in ir.nodes():
        body = node.attrs.body() if node.attrs is not None else None
        if body is not None and placed[node.name].rep not in bodies:
            bodies[placed[node.name].rep] = _draw_body(diagram, node, placed[node.name], body, dims, expand, experts)
        for port, src in node.inputs.items():
            a, b = placed[src], placed[node.name]
            if _across_collapsed(a, b):
                continue
            label = shape_text(ir.node(src).shape, dims)
            port_text = _port_label(node.op, port)
            for dst in bodies.get(b.rep, [b.rep]):   # a body's input feeds its router and expert instead
                at, seen = shapes.setdefault((a.rep, dst, port_text), (len(diagram.edges), []))
                if label in seen:
                    continue
                seen.append(label)
                text = " / ".join(seen) if len(seen) <= 3 else f"{seen[0]} / … / {seen[-1]}"
                edge = Edge(a.rep, dst, f"{port_text}: {text}" if port_text else text)
                if at == len(diagram.edges):
                    diagram.edges.append(edge)
                else:
                    diagram.edges[at] = edge

    for out_name, src in ir.outputs.items():
        oid = f"output:{out_name}"
        t = shape_text(ir.node(src).shape, dims)
        diagram.nodes.append(Node(oid, "output", out_name, "", "", "output", f"output {out_name}: {t}", None))
        diagram.edges.append(Edge(placed[src].rep, oid, t))
    return diagram


def _draw_body(diagram: Diagram, node: IRNode, p: _Placement, body: Any, dims: dict[str, int],
               expand: bool | frozenset[str], experts: bool) -> list[str]:
    """A mixture of experts as its router and its expert block, drawn once `× E` or, when its call is
    expanded, once per expert (`mlp 3/8`); the node's own box is where the weighted outputs combine.
    The experts are a repeated call like any other, named by the collapsed drawing's id
    (`blocks.0.moe.experts`). Returns the ids that the node's input feeds."""
    outer = p.clusters[-1].id if p.clusters else None
    a = node.attrs
    router = f"{p.rep}.router"
    diagram.nodes.append(Node(router, "op", "linear", f"→ {a.experts} · router", "router", "linear",
                              f"{router} ({a.router})", outer))
    cid, call = f"{p.rep}.experts", f"{_place(node, False).rep}.experts"
    if experts or (not isinstance(expand, bool) and call in expand):
        clusters = [Cluster(f"{cid}.{e}", f"{a.expert} {e + 1}/{a.experts}", f"experts.{e}", outer, None, call, True)
                    for e in range(a.experts)]
    else:
        clusters = [Cluster(cid, f"{a.expert} × {a.experts}", "experts", outer, a.experts, call, True)]
    sub = body.ir
    (x,) = sub.inputs
    (out,) = sub.outputs.values()
    entries = [router]
    for c in clusters:
        diagram.clusters[c.id] = c
        at = c.id if c.repeat is None else f"{cid}.0"     # the ids of this expert's nodes
        for n in sub.nodes():
            if n.op == "input":
                continue
            nid = f"{at}.{n.name}"
            diagram.nodes.append(Node(nid, "op", n.op, attr_detail(n.op, n.attrs), n.short, node_style(n.op),
                                      f"{nid}: {shape_text(n.shape, dims)} ({n.op})", c.id, SYMBOLS.get(n.op, "")))
            for src in n.inputs.values():
                if src == x:
                    entries.append(nid)
                else:
                    diagram.edges.append(Edge(f"{at}.{src}", nid, shape_text(sub.node(src).shape, dims)))
        diagram.edges.append(Edge(f"{at}.{out}", p.rep, shape_text(sub.node(out).shape, dims)))
    diagram.edges.append(Edge(router, p.rep, f"top {a.top_k} weights"))
    return list(dict.fromkeys(entries))


def _node(node: IRNode, p: _Placement, dims: dict[str, int]) -> Node:
    cluster = p.clusters[-1].id if p.clusters else None
    tip = f"{p.rep}: {shape_text(node.shape, dims)}"
    if node.op == "input":
        return Node(p.rep, "input", node.name, "", "", "input", f"input {tip}", None)
    return Node(p.rep, "op", node.op, attr_detail(node.op, node.attrs), node.short, node_style(node.op),
                f"{tip} ({node.op})", cluster, SYMBOLS.get(node.op, ""))
