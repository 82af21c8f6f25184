"""Planning figures for `summary`: parameters by kind, FLOPs per token and per training step, and the
bytes of weights, gradients, optimizer state, saved activations and KV cache, at concrete dims and a dtype.

Torch-free, from the IR and the op registry alone. What is exact and what is an estimate:

- parameters (total, embedding, active under MoE), weights, gradients and optimizer bytes: exact.
- forward FLOPs: exact under the registry's convention (a multiply-add = 2). Training FLOPs add each op's
  backward: twice its forward for ops with weights or matmuls (the op's `matmul` trait: the gradient with
  respect to the inputs and to the weights, two matmuls per forward matmul), once for element-wise ops.
- activations saved for backward: a model of what the torch build's autograd keeps, op by op (each op's
  `saves` trait; each saved tensor counted once, however many ops save it; parameters excluded), checked
  against the bytes a real training forward saves (`torch.autograd.graph.saved_tensors_hooks`) by
  tests/integration/test_budget.py.
- KV cache: per token and sequence, for every cache slot `decoding.cache_slots` finds (none without a
  `logits` output to generate from; kv_heads, not heads; a sliding window caps it at `window` tokens, see docs/summary.md).
- recurrent state: per sequence, whatever the length, for every recurrence whose `carry` trait declares a
  state (Mamba: each layer's scan state and convolution frames, as `generate` allocates them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .decoding import StateSlot, _is_cache, _slot, node_carry
from ..ir import IRGraph, IRNode, Repeat, shared_owner
from ..ops import REGISTRY
from ..ops.base import RECURRENT, Carry, Saved, dtype_bytes
from .summary import counted_rows

OPTIMIZERS = ("adamw", "sgd", "adafactor")


@dataclass
class Budget:
    dims: dict[str, int]
    dtype: str
    optimizer: str
    mixed_precision: bool
    params: int = 0
    trainable_params: int = 0               # less the frozen ones (Whisper's stored sinusoids)
    embedding_params: int = 0
    active_params: int = 0
    flops: int = 0
    train_flops: int = 0
    tokens: int = 1
    tokens_what: str = "tokens"
    memory: dict[str, int] = field(default_factory=dict)

    @property
    def flops_per_token(self) -> float:
        return self.flops / self.tokens

    def as_json(self) -> dict:
        return {"params": self.params, "trainable_params": self.trainable_params, "embedding_params": self.embedding_params,
                "non_embedding_params": self.params - self.embedding_params, "active_params": self.active_params,
                "flops": self.flops, "flops_per_token": self.flops_per_token, "train_flops": self.train_flops,
                "tokens": self.tokens, "dtype": self.dtype, "optimizer": self.optimizer,
                "mixed_precision": self.mixed_precision, "memory": dict(self.memory)}


def budget(ir: IRGraph, dims: dict[str, int], dtype: str = "float32", optimizer: str = "adamw",
           mixed_precision: bool = False) -> Budget:
    s = dtype_bytes(dtype)
    b = Budget(dims, dtype, optimizer, mixed_precision)
    table = counted_rows(ir)             # a compact IR: once per distinct instantiation, times its count
    b.params = sum(r.params * r.count for r in table)
    b.active_params = sum(r.active * r.count for r in table)
    b.embedding_params = sum(r.params * r.count for r in table if REGISTRY[r.op].embedding)
    flops = [r.flops.evaluate(dims) * r.count for r in table]
    b.flops = sum(flops)
    b.train_flops = sum(f * (3 if REGISTRY[r.op].matmul or r.params else 2) for f, r in zip(flops, table))
    b.tokens, b.tokens_what = _tokens(ir, dims)
    shapes = _param_shapes(ir)           # of the trained parameters: frozen ones have no gradient or state
    b.trainable_params = sum(math.prod(sh) * c for sh, c in shapes)
    master = 4 * b.trainable_params if mixed_precision or s != 4 else 0
    saved, per_rep, rep_inputs = activations(ir, dims, s)
    kv = kv_cache_per_token(ir, s)
    b.memory = {
        "weights": b.params * s,
        "grads": b.trainable_params * (4 if mixed_precision else s),
        "optimizer": optimizer_bytes(shapes, optimizer) + master,
        "activations": saved,
        "activations_checkpointed": _checkpointed(saved, per_rep, rep_inputs),
        "kv_cache_per_token": kv,
        "recurrent_state_per_sequence": recurrent_state_per_sequence(ir, s),
    }
    batch = dims.get("B", 1)
    seq = b.tokens // max(batch, 1) if b.tokens_what == "tokens" else 0
    b.memory["kv_cache"] = kv * batch * seq
    b.memory["recurrent_state"] = b.memory["recurrent_state_per_sequence"] * batch
    b.memory["inference_peak"] = b.memory["weights"] + b.memory["kv_cache"] + b.memory["recurrent_state"] + \
        2 * _largest_output(ir, dims, s)
    b.memory["training_peak"] = sum(b.memory[k] for k in ("weights", "grads", "optimizer", "activations"))
    return b


def _tokens(ir: IRGraph, dims: dict[str, int]) -> tuple[int, str]:
    """Tokens per step: the elements of the first integer input (token ids); else examples (`B`)."""
    for name in ir.inputs.values():
        t = ir.node(name).shape
        if t is not None and t.dtype == "int64":
            return math.prod(d.evaluate(dims) for d in t.shape), "tokens"
    return dims.get("B", 1), "examples"


def _frozen(n: IRNode) -> bool:
    """Parameters that are never trained (the op's `frozen` trait: sinusoids kept in the state dict)."""
    frozen = REGISTRY[n.op].frozen
    return frozen is not None and frozen(n.attrs)


def _counted_nodes(g: IRGraph, count: int = 1, owning: bool = False):
    """(node, its graph, how many nodes it stands for): a compact IR's distinct instantiations, or every node.
    `owning`: only the nodes that own their parameters (not those of a repetition under `share`)."""
    for e in g.entries():
        if isinstance(e, Repeat):
            for k, body in enumerate(e.bodies):
                c = sum(1 for j, w in enumerate(e.which) if w == k and (e.owns(j) or not owning))
                if c:
                    yield from _counted_nodes(body, count * c, owning)
        elif e.op != "input" and not (owning and shared_owner(e.name, e.scope) is not None):
            yield e, g, count


def _param_shapes(ir: IRGraph) -> list[tuple[tuple[int, ...], int]]:
    """Shapes of the trained parameters, each with the number of tensors of that node."""
    out = []
    for n, g, c in _counted_nodes(ir, owning=True):
        if n.shape is not None and not _frozen(n):
            ins = {p: g.value(s).shape for p, s in n.inputs.items()}
            out += [(tuple(v), c) for v in REGISTRY[n.op].trained(n.attrs, ins).values()]
    return out


def optimizer_bytes(shapes: list[tuple[tuple[int, ...], int]], optimizer: str) -> int:
    """fp32 optimizer state of (shape, how many tensors of it): AdamW two moments; SGD one momentum;
    Adafactor factored second moments (a row and a column vector per matrix, the full tensor for vectors)."""
    if optimizer == "adamw":
        return sum(8 * math.prod(sh) * c for sh, c in shapes)
    if optimizer == "sgd":
        return sum(4 * math.prod(sh) * c for sh, c in shapes)
    return sum(c * (4 * (sh[-2] * math.prod(sh[:-2]) + sh[-1]) if len(sh) >= 2 else 4 * math.prod(sh))
               for sh, c in shapes)


def kv_cache_per_token(ir: IRGraph, s: int) -> int:
    """Bytes one more token adds to the key/value cache of one sequence, as `graphformer generate` keeps it:
    every cache slot keeps its kv_heads × head_dim keys and values (the slots `decoding.cache_slots` finds,
    counted per instantiation). 0 for a graph without the `logits` output generation samples from (CLIP's
    causal text tower feeds a pooled embedding: nothing is ever cached)."""
    if "logits" not in ir.outputs:
        return 0
    total = 0
    for n, _, c in _counted_nodes(ir):
        if n.shape is not None and _is_cache(n):
            slot = _slot(n, 0)
            total += c * slot.kv_heads * sum(slot.widths.values()) * s
    return total


def recurrent_state_per_sequence(ir: IRGraph, s: int) -> int:
    """Bytes of the states `graphformer generate` carries for one sequence, whatever its length: every
    recurrence whose `carry` trait declares a state (decoding's state slots: a scan's state, in float32 where
    it says so; a causal convolution's last frames), counted per instantiation. 0 without a `logits` output."""
    if "logits" not in ir.outputs:
        return 0
    total = 0
    for n, g, c in _counted_nodes(ir):
        if n.shape is not None and REGISTRY[n.op].sequence == RECURRENT:
            carry = node_carry(n, {p: g.value(src).shape for p, src in n.inputs.items()})
            if isinstance(carry, Carry):
                total += c * StateSlot(n.name, 0, carry.states).nbytes(1, s)
    return total


def _numel(t, dims) -> int:
    return math.prod(d.evaluate(dims) for d in t.shape)


def _largest_output(ir: IRGraph, dims, s) -> int:
    shapes = {n.shape for n, _, _ in _counted_nodes(ir) if n.shape is not None}
    shapes |= {ir.node(v).shape for v in ir.inputs.values() if ir.node(v).shape is not None}
    return max((_numel(t, dims) * (dtype_bytes(t.dtype, s) if t.dtype != "float32" else s) for t in shapes),
               default=0)


# ---------------------------------------------------------------- per device under FSDP and tensor parallelism

def per_device(ir: IRGraph, dims: dict[str, int], dtype: str = "float32", optimizer: str = "adamw",
               mixed_precision: bool = False, dp: int = 1, tp: int = 1) -> dict:
    """Bytes on the most loaded device of a (dp × tp) mesh under graphformer.parallelize: each parameter
    split by the tensor-parallel plan (column-wise, vocab: rows; row-wise: columns, its bias whole), then its
    local part sharded on dim 0 over dp by FSDP2 (rank 0 holds ceil(rows / dp) rows). Activations are
    those of the per-device batch B / dp; tensor parallelism's savings on them are not modelled (an upper
    bound)."""
    from .tp_plan import derive
    s = dtype_bytes(dtype)
    style = {sh.module: sh.style for sh in derive(ir, tp)}
    local = 0
    for name, shape in ir.param_shapes().items():
        module, kind = name.rsplit(".", 1)
        shape = list(shape)
        how = style.get(module, "replicate")
        if how in ("colwise", "vocab"):
            shape[0] = -(-shape[0] // tp)
        elif how == "rowwise" and kind == "weight":
            shape[1] = -(-shape[1] // tp)
        if shape:
            shape[0] = -(-shape[0] // dp)
        local += math.prod(shape)
    batch = dict(dims)
    if "B" in batch:
        batch["B"] = -(-batch["B"] // dp)
    full = budget(ir, batch, dtype, optimizer, mixed_precision)
    per_param_opt = full.memory["optimizer"] / max(full.params, 1)
    return {"dp": dp, "tp": tp, "params": local, "weights": local * s,
            "grads": local * (4 if mixed_precision else s), "optimizer": int(per_param_opt * local),
            "activations": full.memory["activations"], "plan": [
                {"module": sh.module, "style": sh.style, "why": sh.why} for sh in derive(ir, tp)]}


# ---------------------------------------------------------------- activations saved for backward

def activations(ir: IRGraph, dims: dict[str, int], s: int) -> tuple[int, dict[str, int], dict[str, int]]:
    """Bytes autograd keeps for backward in a training forward: total, and per repetition of a repeated
    block the bytes saved inside it, and the bytes of what flows into it (what checkpointing keeps)."""
    if ir.compact:
        got = _CompactSaving(ir, dims, s).run()
        if got is not None:
            return got
    kept: set[str] = set()           # nodes whose output some consumer saves (counted once)
    internal: dict[str, int] = {}    # bytes an op saves of its own (attention's q, k, v; norm statistics)
    for n in ir.nodes():
        if n.op == "input" or n.shape is None:
            continue
        ports, own = _saves(n, ir, dims, s)
        kept |= {n.inputs[p] for p in ports if p in n.inputs and ir.node(n.inputs[p]).shape is not None}
        if "out" in ports:
            kept.add(n.name)
        internal[n.name] = own
    size = {n.name: _bytes(n, dims, s) for n in ir.nodes() if n.shape is not None}
    per_node = {k: size[k] for k in kept}
    for k, v in internal.items():
        per_node[k] = per_node.get(k, 0) + v
    per_rep: dict[str, int] = {}
    rep_inputs: dict[str, int] = {}
    for name, v in per_node.items():
        rep = _repetition(ir.node(name))
        if rep is not None:
            per_rep[rep] = per_rep.get(rep, 0) + v
    for n in ir.nodes():
        rep = _repetition(n)
        if rep is None:
            continue
        for src in n.inputs.values():
            if _repetition(ir.node(src)) != rep and ir.node(src).shape is not None:
                rep_inputs[rep] = rep_inputs.get(rep, 0) + size[src] * (src not in rep_inputs.get("_seen" + rep, ()))
                rep_inputs.setdefault("_seen" + rep, set()).add(src)
    rep_inputs = {k: v for k, v in rep_inputs.items() if not k.startswith("_seen")}
    return sum(per_node.values()), per_rep, rep_inputs


def _checkpointed(total: int, per_rep: dict[str, int], rep_inputs: dict[str, int]) -> int:
    """Checkpointing each repetition keeps only its inputs, and recomputes one repetition at a time."""
    if not per_rep:
        return total
    return total - sum(per_rep.values()) + sum(rep_inputs.values()) + max(per_rep.values())


def _repetition(n: IRNode) -> str | None:
    f = next((f for f in n.scope if f.index is not None), None)
    return None if f is None else f"{f.path}.{f.index}"


def _bytes(n: IRNode, dims, s) -> int:
    dt = n.shape.dtype
    return _numel(n.shape, dims) * (s if dt == "float32" else dtype_bytes(dt))


class _Saving:
    """The `SaveContext` a node's `saves` trait reads (ops/base.py)."""

    def __init__(self, n: IRNode, ir: IRGraph, dims, s):
        self.attrs, self.out, self.dims, self.itemsize = n.attrs, n.shape, dims, s
        self.ins = {p: ir.value(x).shape for p, x in n.inputs.items()}

    def numel(self, t) -> int:
        return _numel(t, self.dims)

    def bytes(self, t) -> int:
        return self.numel(t) * (self.itemsize if t.dtype == "float32" else dtype_bytes(t.dtype))

    def body_saved(self, x) -> int:
        body = self.attrs.body()
        facts = body.at(x) if body is not None else None
        return activations(body.ir, self.dims, self.itemsize)[0] if facts is not None and facts.error is None else 0


def _saves(n: IRNode, ir: IRGraph, dims, s) -> tuple[tuple[str, ...], int]:
    """(input ports whose values the op saves, or "out" for its output; bytes of tensors of its own)."""
    saved: Saved = REGISTRY[n.op].saves(_Saving(n, ir, dims, s))
    return saved.ports, saved.own


class _CompactSaving:
    """`activations` of a compact IR, once per distinct instantiation and set of its values that readers
    outside it save: a repetition's carried output is kept when the next repetition saves that input, the
    last one's outputs when a reader after the call does. None where a root-level compact call sits inside
    an unrolled repetition (the caller unrolls then)."""

    def __init__(self, ir: IRGraph, dims, s):
        self.ir, self.dims, self.s = ir, dims, s
        self.sizes: dict = {}
        self.memo: dict = {}
        self.reads: dict = {}

    def size(self, t) -> int:
        if t not in self.sizes:
            self.sizes[t] = _numel(t, self.dims) * (self.s if t.dtype == "float32" else dtype_bytes(t.dtype))
        return self.sizes[t]

    def scan(self, g: IRGraph, ext: frozenset):
        """(values of `g` kept, bytes each node saves of its own, `g`'s nodes, its compact calls' bytes per
        repetition), or None."""
        kept, own, real = set(ext), {}, {}
        entries = g.entries()
        for e in entries:
            if isinstance(e, Repeat):
                continue
            if e.shape is not None and not e.name.startswith("<"):
                real[e.name] = e
            if e.op == "input" or e.shape is None:
                continue
            ports, own[e.name] = _saves(e, g, self.dims, self.s)
            kept |= {e.inputs[p] for p in ports if p in e.inputs and g.value(e.inputs[p]).shape is not None}
            if "out" in ports:
                kept.add(e.name)
        reps = []
        for e in reversed(entries):   # a call's readers come after it
            if isinstance(e, Repeat):
                each, fed = self.repeat(e, kept)
                if each is None:
                    return None
                kept |= {e.feeds[x] for x in fed}
                reps.append((e, each))
        return kept, own, real, reps

    def graph(self, g: IRGraph, ext: frozenset):
        """(bytes saved in `g`, its placeholders that its readers save), `ext` being saved from outside."""
        key = (id(g), ext)
        if key not in self.memo:
            got = self.scan(g, ext)
            if got is None:
                self.memo[key] = None
            else:
                kept, own, real, reps = got
                total = sum(own.values()) + sum(self.size(real[k].shape) for k in kept if k in real)
                self.memo[key] = (total + sum(sum(each) for _, each in reps),
                                  frozenset(p for p in g.inputs.values() if p in kept))
        return self.memo[key]

    def repeat(self, rep: Repeat, outside: set):
        each, fed, saved = [0] * rep.count, set(), frozenset()
        for i in range(rep.count - 1, -1, -1):
            body = rep.bodies[rep.which[i]]
            if i == rep.count - 1:
                ext = frozenset(body.outputs[o] for o in body.outputs if rep.output(o) in outside)
            else:
                later = rep.bodies[rep.which[i + 1]]
                ext = frozenset(body.outputs[x] for x in rep.carried if later.inputs[x] in saved)
            got = self.graph(body, ext)
            if got is None:
                return None, None
            each[i], saved = got
            fed |= {x for x, ph in body.inputs.items() if ph in saved and (i == 0 or x not in rep.carried)}
        return each, fed

    def read(self, g: IRGraph) -> frozenset:
        """`g`'s placeholders that some node in it reads (its compact calls' repetitions included)."""
        if id(g) not in self.reads:
            names: set = set()
            for e in g.entries():
                if isinstance(e, Repeat):
                    for k, body in enumerate(e.bodies):
                        got, ks = self.read(body), [i for i, w in enumerate(e.which) if w == k]
                        names |= {e.feeds[x] for x, ph in body.inputs.items() if ph in got
                                  and (x not in e.carried or ks[0] == 0)}
                else:
                    names |= set(e.inputs.values())
            self.reads[id(g)] = frozenset(p for p in g.inputs.values() if p in names)
        return self.reads[id(g)]

    def run(self):
        ir = self.ir
        calls = [e for e in ir.entries() if isinstance(e, Repeat)]
        if any(_enclosed(rep) for rep in calls):
            return None
        got = self.scan(ir, frozenset())
        if got is None:
            return None
        kept, own, real, reps = got
        last = {rep.output(o): rep.prefix(rep.count - 1)[:-1] for rep in calls for o in rep.bodies[rep.which[-1]].outputs}
        per_rep: dict[str, int] = {}
        rep_inputs: dict[str, int] = {}
        total = sum(own.values()) + sum(self.size(real[k].shape) for k in kept if k in real)
        for name, n in real.items():
            rep = _repetition(n)
            if rep is None:
                continue
            per_rep[rep] = per_rep.get(rep, 0) + own.get(name, 0) + (self.size(n.shape) if name in kept else 0)
            outside = {src for src in n.inputs.values() if ir.value(src).shape is not None and
                       (last.get(src) if src not in real else _repetition(real[src])) != rep}
            rep_inputs.setdefault("_seen" + rep, set())
            for src in outside - rep_inputs["_seen" + rep]:
                rep_inputs[rep] = rep_inputs.get(rep, 0) + self.size(ir.value(src).shape)
            rep_inputs["_seen" + rep] |= outside
        rep_inputs = {k: v for k, v in rep_inputs.items() if not k.startswith("_seen")}
        for rep, each in reps:
            total += sum(each)
            for i, v in enumerate(each):
                key = rep.prefix(i)[:-1]
                per_rep[key] = v
                body = rep.bodies[rep.which[i]]
                prev = rep.bodies[rep.which[i - 1]] if i else None
                sources = {}
                for x, ph in body.inputs.items():
                    if ph in self.read(body):
                        if i and x in rep.carried:
                            sources[("prev", prev.outputs[x])] = prev.value(prev.outputs[x]).shape
                        else:
                            sources[("feed", rep.feeds[x])] = ir.value(rep.feeds[x]).shape
                if sources:
                    rep_inputs[key] = sum(self.size(t) for t in sources.values() if t is not None)
        return total, per_rep, rep_inputs


def _enclosed(rep: Repeat) -> bool:
    """Whether a root-level compact call's nodes sit inside a repetition of an enclosing (unrolled) call."""
    node = _a_node(rep)
    return node is None or any(f.index is not None for f in node.scope[:rep.depth])


def _a_node(rep: Repeat) -> IRNode | None:
    for body in rep.bodies:
        for e in body.entries():
            found = _a_node(e) if isinstance(e, Repeat) else None if e.name.startswith("<") else e
            if found is not None:
                return found
    return None
