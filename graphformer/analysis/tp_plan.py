"""A tensor-parallel plan derived from the graph (torch-free): which projections are split column-wise,
which row-wise, and what stays replicated — for any spec, not one hand-written plan per model family.

- attention: q, k, v column-wise (each rank holds heads / tp query heads and kv_heads / tp key/value
  heads), o row-wise (partial sums all-reduced). heads and kv_heads must divide by tp.
- latent attention (DeepSeek-V2): the query projection (`q`, or `q_b` after the replicated query latent)
  and the latent's expansion `kv_b` column-wise, so each rank holds heads / tp heads; `o` row-wise. The
  latent projections `q_a`, `kv_a` and their norms stay replicated: every head reads the whole latent
  and the shared rotary key (transformers' `mla_kv_a_proj`).
- feed-forward pairs: a linear A whose output reaches, through element-wise ops only (activations, `mul`,
  dropout), linears B that map back to A's input width: A column-wise, B row-wise (Megatron's MLP split;
  SwiGLU's gate and up are both A's). Every input of a `mul` on the way must itself be column-split.
- vocab-parallel: an untied token table and LM head split along the vocabulary (rows; uneven splits are
  fine). A table tied to the head stays replicated with it.
- mixture of experts: each expert's feed-forward pairs split as above (every rank holds 1/tp of every
  expert), the router replicated.
- everything else with weight matrices is replicated and listed: tied tables and heads, routers,
  cross-attention, convolutions, self-attention with a per-head logit bias (T5, Swin: the bias's heads are
  not split yet) or with attention sinks (GPT-OSS: the sink logits are not split yet), and any linear outside such a pair. Norms and position tables are kept whole unlisted.

Which op is which comes from its `tp` trait (ops/base.py), never its name.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import UsageError
from ..ir import IRGraph, IRNode
from ..ops import REGISTRY
from ..base.diagnostics import Diagnostic, SpecError
from ..ops.base import UNKNOWN, EXPERTS, HEADS, MATMUL, REPLICATE, THROUGH, UNPLANNED, VOCAB


def _tp(n: IRNode) -> str:
    kind = UNPLANNED if n.op == "input" else REGISTRY[n.op].tp
    if kind == UNKNOWN:   # a plugin op that doesn't say: refuse rather than guess
        raise SpecError([Diagnostic(
            "GF256", f"`{n.name}` ({n.op}) does not declare how tensor parallelism splits it", n.span, node=n.name,
            help=f"the plugin that installs `{n.op}` must declare its `tp` trait (docs/plugins.md)")])
    return kind


@dataclass(frozen=True)
class Shard:
    module: str        # module path in the built model (= IR path), e.g. `blocks.3.attn.q`
    style: str         # colwise | rowwise | vocab | replicate
    why: str


def derive(spec, tp: int) -> list[Shard]:
    """The plan for `tp`-way tensor parallelism; raises UsageError when a head count doesn't divide."""
    ir: IRGraph = getattr(spec, "ir", spec)
    if tp < 1:
        raise UsageError(f"tp must be at least 1, got {tp}")
    out: list[Shard] = []
    done: set[str] = set()
    for n in ir.nodes():
        if _tp(n) == HEADS and n.shape is not None and hasattr(n.attrs, "latent_shards"):
            if n.attrs.heads % tp:   # latent attention: its attrs say which projections split
                raise UsageError(f"`{n.name}`: heads = {n.attrs.heads} does not divide by tp = {tp}")
            out += [Shard(f"{n.name}.{p}", style, why) for p, style, why in n.attrs.latent_shards()]
            done.add(n.name)
        elif _tp(n) == HEADS and n.shape is not None:
            bias = ir.input_types(n).get("bias")
            if bias is not None and bias.shape[1].value != 1:
                continue   # a per-head logit bias would need its heads split too: replicated (below)
            if getattr(n.attrs, "qk_norm", None) in ("rms_full", "layer_heads"):
                continue   # a norm over the whole projection, or a scale per head: replicated (below)
            if getattr(n.attrs, "sinks", False):
                continue   # one sink logit per head, a parameter of the node itself: replicated (below)
            h, kv, hd = n.attrs.geometry(n.shape.shape[-1].value)
            for what, count in (("heads", h), ("kv_heads", kv)):
                if count % tp:
                    raise UsageError(f"`{n.name}`: {what} = {count} does not divide by tp = {tp}")
            out += [Shard(f"{n.name}.{p}", "colwise", f"{h // tp} of {h} heads per rank") for p in "qkv"]
            out.append(Shard(f"{n.name}.o", "rowwise", "partial sums all-reduced"))
            done.add(n.name)
    pairs = _mlp_pairs(ir, tp)
    for a, bs in pairs.items():
        out.append(Shard(a, "colwise", f"feed-forward: its output stays split until {', '.join(sorted(bs))}"))
    for b in sorted({b for bs in pairs.values() for b in bs}):
        out.append(Shard(b, "rowwise", "feed-forward: partial sums all-reduced"))
    done |= set(pairs) | {b for bs in pairs.values() for b in bs}
    for n in ir.nodes():
        if _tp(n) == EXPERTS and (split := _experts(ir, n, tp)):
            out += split
            done.add(n.name)
    for name, why in _vocab_parallel(ir, tp).items():
        out.append(Shard(name, "vocab", why))
        done.add(name)
    for n in ir.nodes():
        if _tp(n) in (MATMUL, VOCAB, EXPERTS, HEADS, REPLICATE) and n.name not in done:
            out.append(Shard(n.name, "replicate", _why_replicated(n)))
    return out


def _experts(ir: IRGraph, n, tp: int) -> list[Shard]:
    """Each expert's feed-forward pairs split like a dense one (the router stays replicated): every rank
    holds 1/tp of every expert and runs the experts its tokens pick (the same on every rank of a tensor-
    parallel group, whose inputs are equal). [] when the expert block has no such pair."""
    body = n.attrs.body()
    if body is None or n.shape is None:
        return []
    body.at(ir.node(n.inputs["x"]).shape)
    pairs = _mlp_pairs(body.ir, tp)
    rows = sorted({b for bs in pairs.values() for b in bs})
    if not pairs:
        return []
    out = []
    for e in range(n.attrs.experts):
        at = f"{n.name}.experts.{e}"
        out += [Shard(f"{at}.{a}", "colwise", "expert feed-forward, split like a dense one") for a in pairs]
        out += [Shard(f"{at}.{b}", "rowwise", "expert feed-forward: partial sums all-reduced") for b in rows]
    return out + [Shard(f"{n.name}.router", "replicate", "router: every rank routes all its tokens alike")]


def _vocab_parallel(ir: IRGraph, tp: int) -> dict[str, str]:
    """Token tables and LM heads split along the vocabulary: an embedding no linear is tied to, and an
    untied linear that is an output of the graph as wide as such a table. Both need every rank to hold
    at least one row."""
    owners = set(ir.ties.values())
    tables = {n.name: n.attrs.vocab for n in ir.nodes()
              if _tp(n) == VOCAB and n.name not in owners and not n.attrs.tied_to() and n.attrs.vocab >= tp}
    heads = {n.name for n in ir.nodes()
             if _splittable(n) and n.name in ir.outputs.values() and n.attrs.out in tables.values()}
    rows = "ceil(vocab / tp) rows per rank"
    return {**{t: f"vocab-parallel: {rows}; each rank looks up its rows, partial sums all-reduced" for t in tables},
            **{h: f"vocab-parallel: {rows}; each rank computes its slice of the logits, all-gathered" for h in heads}}


def _splittable(n) -> bool:
    """A weight matrix torch's tensor-parallel styles can split: an untied nn.Linear (a weight-normalised one
    holds weight_g and weight_v instead)."""
    return _tp(n) == MATMUL and not n.attrs.tied_to() and getattr(n.attrs, "weight_norm", None) is None


def _why_replicated(n) -> str:
    if n.attrs.tied_to():
        return f"tied to {n.attrs.tied}"
    if getattr(n.attrs, "weight_norm", None) is not None:
        return "weight-normalised: its weight is computed from weight_g and weight_v (not split yet)"
    if _tp(n) == VOCAB:
        return "embedding table tied to the LM head, or smaller than tp (vocab-parallel not done for these)"
    if _tp(n) == EXPERTS:
        return "experts without a feed-forward pair to split (expert parallelism not done)"
    if _tp(n) == HEADS and getattr(n.attrs, "qk_norm", None) == "rms_full":
        return "q/k norm over the whole projection: it reads every head"
    if _tp(n) == HEADS and getattr(n.attrs, "qk_norm", None) == "layer_heads":
        return "q/k norms with a scale per head: their heads are not split yet"
    if _tp(n) == HEADS and getattr(n.attrs, "sinks", False):
        return "attention sinks: the per-head sink logits are not split yet"
    if _tp(n) == HEADS:
        return "a per-head logit bias: its heads are not split"
    return "not part of an attention or feed-forward pair"


def _mlp_pairs(ir: IRGraph, tp: int) -> dict[str, set[str]]:
    """Column-split candidates and the row-split linears their outputs reach through element-wise ops."""
    cand: dict[str, set[str]] = {}
    for n in ir.nodes():
        if not _splittable(n) or n.shape is None or n.attrs.out % tp:
            continue
        width = ir.node(n.inputs["x"]).shape.shape[-1].value
        ends, ok, stack, seen = set(), True, [n.name], set()
        while stack and ok:
            cur = stack.pop()
            for c in _consumers(ir, cur):
                node = ir.node(c)
                if c in seen:
                    continue
                seen.add(c)
                if _tp(node) == THROUGH:
                    stack.append(c)
                elif _splittable(node) and node.attrs.out == width:
                    ends.add(c)
                else:
                    ok = False
        if ok and ends and n.name not in ir.outputs.values():
            cand[n.name] = ends
    # an element-wise op of several inputs (`mul`) may only combine column-split values: drop candidates
    # feeding one that mixes in anything else
    changed = True
    while changed:
        changed = False
        for a in list(cand):
            if not _muls_ok(ir, a, cand):
                del cand[a]
                changed = True
    return cand


def _consumers(ir: IRGraph, name: str) -> list[str]:
    return list(dict.fromkeys(n.name for n, _ in ir.consumers(name)))


def _muls_ok(ir: IRGraph, a: str, cand: dict[str, set[str]]) -> bool:
    stack, seen = [a], set()
    while stack:
        cur = stack.pop()
        for c in _consumers(ir, cur):
            node = ir.node(c)
            if c in seen or _tp(node) != THROUGH:
                continue
            seen.add(c)
            if len(node.inputs) > 1 and not all(_origin_split(ir, src, cand) for src in node.inputs.values()):
                return False
            stack.append(c)
    return True


def _origin_split(ir: IRGraph, name: str, cand: dict[str, set[str]]) -> bool:
    """True when `name` is a column-split linear or an element-wise function of such values only."""
    node = ir.node(name)
    if name in cand:
        return True
    if _tp(node) == THROUGH:
        return all(_origin_split(ir, s, cand) for s in node.inputs.values())
    return False
