"""ONNX lowerings of the core ops (graphformer/ops/core.py), with the semantics of the torch backend.

Everything is standard ONNX (default domain) at opset ≥ 17. Dynamic dims never get baked in: Reshape
targets use 0 ("copy this dim") or a runtime `Shape` slice, and the causal mask is built from the
runtime shape of the scores, so one exported model serves every `B` and `n`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from onnx import TensorProto, helper

from ..rotary import rotary_inv_freq
from ..tables import alibi_slopes, sinusoids
from .lower import NodeEmitter, lowers
from .past import causal_offset, extend


def _width(ctx: NodeEmitter, port: str = "x") -> int:
    return ctx.types[port].shape[-1].value


# ---------------------------------------------------------------- embedding, positions

@lowers("embedding")
def _embedding(ctx: NodeEmitter, node) -> None:
    (ids,) = ctx.inputs
    a = node.attrs
    table = ctx.param("weight", owner=a.tied) if a.tied else ctx.param("weight")
    if not a.scale:
        ctx.op("Gather", [table, ids], final=True, axis=0)
        return
    rows = ctx.op("Gather", [table, ids], axis=0)
    # Vaswani et al. 3.4: embeddings are multiplied by sqrt(d_model)
    ctx.op("Mul", [rows, ctx.const(math.sqrt(a.dim), "scale", np.float32)], "scale", final=True)


@lowers("positional")
def _positional(ctx: NodeEmitter, node) -> None:
    ins = dict(zip(node.inputs, ctx.inputs))
    x, a = ins["x"], node.attrs
    table = (ctx.param("weight") if a.has_table_param
             else ctx.const(sinusoids(a.max_len, _width(ctx), a.sinusoid), "table"))
    if ctx.state.past is not None:  # a decoder step: the rows at the new tokens' positions
        rows = ctx.op("Gather", [table, ctx.state.past.position_ids], "rows", axis=0)          # (B, n, d)
        ctx.op("Add", [x, rows], final=True)
        return
    if "positions" in ins:                                                                   # given rows
        ctx.op("Add", [x, ctx.op("Gather", [table, ins["positions"]], "rows", axis=0)], final=True)
        return
    n = ctx.shape(x, 1, 2, "n")                                                              # [n]
    rows = ctx.op("Slice", [table, ctx.const([0], "start", np.int64), n, ctx.const([0], "axis", np.int64)], "rows")
    # ONNX shape inference cannot see through Slice with a runtime end; reshaping to x's own runtime
    # [n, d] (free at run time) lets data propagation name the dim `n` again.
    rows = ctx.op("Reshape", [rows, ctx.shape(x, 1, 3, "n_d")], "rows")
    ctx.op("Add", [x, rows], final=True)


# ---------------------------------------------------------------- linear

def normed_weight(ctx: NodeEmitter, axis: int | None, rank: int) -> str:
    """The node's weight, or with `weight_norm: AXIS` g · v / ‖v‖ (the norm over the axes but AXIS) computed in
    the graph as torch's weight_norm does: v · (g / ‖v‖). Shared by `linear` and `conv1d`."""
    if axis is None:
        return ctx.param("weight")
    v = ctx.param("weight_v")
    norm = ctx.reduce("ReduceL2", v, [k for k in range(rank) if k != axis], "v_norm", keepdims=1)
    return ctx.op("Mul", [v, ctx.op("Div", [ctx.param("weight_g"), norm], "g_over_norm")], "weight")


@lowers("linear")
def _linear(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    weight = ctx.param("weight", owner=a.tied) if a.tied else normed_weight(ctx, a.weight_norm, 2)
    ctx.linear(x, "", "", a.bias, final=True, weight=weight)


# ---------------------------------------------------------------- attention

class Geometry(NamedTuple):
    """The head layout of one attention: query heads, key/value heads, width of a query/key head, width of
    a value head (None: head_dim)."""
    heads: int
    kv_heads: int
    head_dim: int
    v_dim: int | None = None

    @property
    def value_dim(self) -> int:
        return self.v_dim or self.head_dim


def _split_heads(ctx: NodeEmitter, x: str, heads: int, head_dim: int, tag: str) -> str:
    shape = ctx.const([0, 0, heads, head_dim], f"{tag}_heads", np.int64)
    return ctx.op("Reshape", [x, shape], f"{tag}_heads")                                     # (B, n, h, hd)


def _repeat_heads(ctx: NodeEmitter, x: str, g: Geometry, width: int, tag: str) -> str:
    """(B, m, kv, width) → (B, m, heads, width), each key/value head repeated for its group of query heads
    (head j reads kv head j // group, as torch's `enable_gqa`)."""
    group = g.heads // g.kv_heads
    y = ctx.op("Unsqueeze", [x, ctx.const([3], f"{tag}_group_axis", np.int64)], f"{tag}_group")  # (B, m, kv, 1, hd)
    y = ctx.op("Expand", [y, ctx.const([1, 1, 1, group, 1], f"{tag}_group", np.int64)], f"{tag}_group")
    return ctx.op("Reshape", [y, ctx.const([0, 0, g.heads, width], f"{tag}_groups", np.int64)],
                  f"{tag}_groups")                                                            # (B, m, h, width)


def rms_norm(ctx: NodeEmitter, x: str, weight: str, eps: float, tag: str = "", final: bool = False,
             groups: int = 1) -> str:
    """torch.nn.functional.rms_norm over the last axis: x · 1/sqrt(mean(x²) + eps) · weight; with `groups`,
    each of that many equal slices of the last axis normalised on its own (x: the node's input)."""
    t = f"{tag}_" if tag else ""
    shape = x
    if groups != 1:
        keep = [0] * (len(ctx.types["x"].shape) - 1)
        x = ctx.op("Reshape", [x, ctx.const(keep + [groups, -1], f"{t}groups", np.int64)], f"{t}groups")
    sq = ctx.op("Mul", [x, x], f"{t}square")
    ms = ctx.reduce("ReduceMean", sq, [-1], f"{t}mean_square", keepdims=1)
    rms = ctx.op("Sqrt", [ctx.op("Add", [ms, ctx.const(eps, f"{t}eps", np.float32)], f"{t}eps")], f"{t}rms")
    y = ctx.op("Mul", [x, ctx.op("Reciprocal", [rms], f"{t}rms")], f"{t}normed")
    if groups != 1:
        y = ctx.op("Reshape", [y, ctx.op("Shape", [shape], f"{t}shape")], f"{t}ungrouped")
    return ctx.op("Mul", [y, weight], f"{t}scale", final=final)


def _rotary_cos_sin(ctx: NodeEmitter, x: str, positions: str | None, inv_freq: np.ndarray,
                    scale: float = 1.0, pairs: bool = False) -> tuple[str, str]:
    """cos, sin (B|1, n, 1, r) of the rotary angles (`pairs`: one per pair, r/2): `positions` (B, n), or
    0..n-1 from x's runtime shape; both times `scale` (YaRN's attention factor) where it is not 1."""
    if positions is None:
        n = ctx.shape(x, 1, 2, "rope_n")                                                     # [n]
        positions = ctx.op("Range", [ctx.const(0, "rope_start", np.int64), ctx.op("Squeeze", [n], "rope_n"),
                                     ctx.const(1, "rope_step", np.int64)], "rope_positions")  # (n,)
        # ONNX shape inference cannot size a Range; reshaping to [n] (free at run time) names the dim again
        positions = ctx.op("Reshape", [positions, n], "rope_positions")
        positions = ctx.op("Unsqueeze", [positions, ctx.const([0], "rope_batch", np.int64)], "rope_positions")
    pos = ctx.op("Cast", [positions], "rope_positions", to=TensorProto.FLOAT)               # (B|1, n)
    pos = ctx.op("Unsqueeze", [pos, ctx.const([2, 3], "rope_axes", np.int64)], "rope_positions")  # (B|1, n, 1, 1)
    freqs = ctx.op("Mul", [pos, ctx.const(inv_freq, "rope_inv_freq")], "rope_freqs")        # (B|1, n, 1, r/2)
    angles = freqs if pairs else ctx.op("Concat", [freqs, freqs], "rope_angles", axis=-1)    # (B|1, n, 1, r)
    cos, sin = ctx.op("Cos", [angles], "rope"), ctx.op("Sin", [angles], "rope")
    if scale == 1.0:
        return cos, sin
    factor = ctx.const(scale, "rope_scale", np.float32)
    return ctx.op("Mul", [cos, factor], "rope_cos"), ctx.op("Mul", [sin, factor], "rope_sin")


def _with_sinks(ctx: NodeEmitter, scores: str, heads: int) -> str:
    """Softmax over the scores (B, h, n, m) and one more column, the head's sink logit, dropped after it
    (GPT-OSS): the sink joins each row's denominator and takes no value."""
    sink = ctx.op("Reshape", [ctx.param("sinks"), ctx.const([1, heads, 1, 1], "sink_heads", np.int64)], "sinks")
    rows = ctx.op("Concat", [ctx.shape(scores, 0, 3, "sink_rows"), ctx.const([1], "sink_col", np.int64)],
                  "sink_shape", axis=0)
    scores = ctx.op("Concat", [scores, ctx.op("Expand", [sink, rows], "sinks")], "with_sinks", axis=-1)
    probs = ctx.op("Softmax", [scores], "probs", axis=-1)                                   # (B, h, n, m + 1)
    return ctx.op("Slice", [probs, ctx.const([0], "sink_start", np.int64), ctx.const([-1], "sink_stop", np.int64),
                            ctx.const([-1], "sink_axis", np.int64)], "probs")


def rotate_pairs(ctx: NodeEmitter, x: str, cos: str, sin: str, r: int, tag: str) -> str:
    """x (B, n, h, r) rotated in interleaved pairs (x₂ᵢ, x₂ᵢ₊₁) by cos, sin (…, r/2): torch's `rotate_pairs`."""
    pairs = ctx.op("Reshape", [x, ctx.const([0, 0, 0, r // 2, 2], f"{tag}_pairs", np.int64)], f"{tag}_pairs")
    a = ctx.op("Gather", [pairs, ctx.const(0, f"{tag}_even", np.int64)], f"{tag}_even", axis=-1)
    b = ctx.op("Gather", [pairs, ctx.const(1, f"{tag}_odd", np.int64)], f"{tag}_odd", axis=-1)
    re = ctx.op("Sub", [ctx.op("Mul", [a, cos], f"{tag}_ac"), ctx.op("Mul", [b, sin], f"{tag}_bs")], f"{tag}_re")
    im = ctx.op("Add", [ctx.op("Mul", [a, sin], f"{tag}_as"), ctx.op("Mul", [b, cos], f"{tag}_bc")], f"{tag}_im")
    axis = ctx.const([-1], f"{tag}_pair_axis", np.int64)
    y = ctx.op("Concat", [ctx.op("Unsqueeze", [re, axis], f"{tag}_re"), ctx.op("Unsqueeze", [im, axis], f"{tag}_im")],
               f"{tag}_rotated", axis=-1)
    return ctx.op("Reshape", [y, ctx.const([0, 0, 0, r], f"{tag}_rotated", np.int64)], f"{tag}_rotated")


def _rotate(ctx: NodeEmitter, x: str, cos: str, sin: str, r: int, head_dim: int, tag: str,
            pairs: bool = False) -> str:
    """Rotary embedding of x (B, n, h, hd): the first r dims of each head are rotated, the rest pass through
    (partial rotary). Rotate-half layout: x·cos + (-x₂, x₁)·sin with x₁, x₂ their halves; `pairs`: in
    interleaved pairs (GPT-J), cos and sin one per pair."""
    def part(start: int, stop: int, name: str) -> str:
        return ctx.op("Slice", [x, ctx.const([start], f"{tag}_{name}_start", np.int64),
                                ctx.const([stop], f"{tag}_{name}_stop", np.int64),
                                ctx.const([-1], f"{tag}_{name}_axis", np.int64)], f"{tag}_{name}")
    rot = x if r == head_dim else part(0, r, "rot")
    if pairs:
        y = rotate_pairs(ctx, rot, cos, sin, r, tag)
    else:
        half = [part(0, r // 2, "x1"), part(r // 2, r, "x2")]
        turned = ctx.op("Concat", [ctx.op("Neg", [half[1]], f"{tag}_x2"), half[0]], f"{tag}_turned", axis=-1)
        y = ctx.op("Add", [ctx.op("Mul", [rot, cos], f"{tag}_cos"), ctx.op("Mul", [turned, sin], f"{tag}_sin")],
                   f"{tag}_rotated")
    if r == head_dim:
        return y
    return ctx.op("Concat", [y, part(r, head_dim, "pass")], f"{tag}_rotated", axis=-1)


def _key_mask(ctx: NodeEmitter, mask: str | None, causal: bool, window: int | None, scores: str,
              past: bool = False, prefix: str | None = None, blocks: str | None = None) -> str | None:
    """The boolean `keep` mask broadcastable to the scores (B, h, n, m), or None when nothing is masked.
    With `past`, the n queries are the last n of the m keys (the others are cached). `prefix` [B, n] (causal,
    no past: the export with past leaves it out): a query and a key both in it see each other. `blocks` [B, n]
    (causal): a query and a key in one run of equal non-zero values see each other, within the window; the
    past keys are in no block."""
    keep = None
    if mask is not None:
        if ctx.types["mask"].dtype != "bool":
            mask = ctx.op("Cast", [mask], "mask", to=TensorProto.BOOL)                       # 1 = attend
        keep = ctx.op("Unsqueeze", [mask, ctx.const([1, 2], "mask_axes", np.int64)], "mask")  # (B, 1, 1, m)
    if causal:
        n_m = ctx.shape(scores, 2, 4, "causal")                                              # runtime [n, m]
        ones = ctx.op("ConstantOfShape", [n_m], "causal", value=helper.make_tensor("", TensorProto.BOOL, [1], [1]))
        shift = causal_offset(ctx, scores) if past else None                                # query i is key past + i
        band = ctx.op("Trilu", [ones] + ([shift] if shift else []), "causal", upper=0)      # (n, m): j ≤ i
        if blocks is not None:  # (causal or one block) and window, as transformers' Gemma-3 masks
            band = ctx.op("Or", [band, _block_pairs(ctx, blocks, shift)], "blocks")             # (B, 1, n, m)
        if window is not None:  # and j > i - window: keep the diagonals k ≥ 1 - window
            low = ctx.const(1 - window, "window", np.int64)
            low = ctx.op("Add", [low, shift], "window") if shift else low
            band = ctx.op("Trilu", [band, low], "window", upper=1)
        if prefix is not None:  # (causal and window) or both in the prefix, as transformers' blockwise_overlay
            band = ctx.op("Or", [band, _prefix_pairs(ctx, prefix)], "prefix")                 # (B, 1, n, n)
        keep = band if keep is None else ctx.op("And", [keep, band], "mask")                 # (B|1, 1, n, m)
    elif window is not None:  # bidirectional window (ModernBERT): |i - j| < window, two diagonals
        n_m = ctx.shape(scores, 2, 4, "window")
        ones = ctx.op("ConstantOfShape", [n_m], "window", value=helper.make_tensor("", TensorProto.BOOL, [1], [1]))
        band = ctx.op("Trilu", [ones, ctx.const(window - 1, "window_above", np.int64)], "window", upper=0)
        band = ctx.op("Trilu", [band, ctx.const(1 - window, "window_below", np.int64)], "window", upper=1)
        keep = band if keep is None else ctx.op("And", [keep, band], "mask")                 # (B|1, 1, n, m)
    return keep


def _block_pairs(ctx: NodeEmitter, blocks: str, past: str | None) -> str:
    """(B, 1, n, m) bool: query i and key j in one block of `blocks` [B, n]: runs of equal non-zero values
    numbered by a cumulative sum of their starts (the torch lowering's `block_ids`); `past` (a scalar) keys
    before the queries, in no block."""
    v = blocks if ctx.types["blocks"].dtype == "int64" else ctx.op("Cast", [blocks], "blocks", to=TensorProto.INT64)
    zero = ctx.const(0, "blocks_zero", np.int64)
    before = ctx.op("Pad", [v, ctx.const([0, 1, 0, 0], "blocks_shift", np.int64)], "blocks")    # (B, n + 1)
    before = ctx.op("Slice", [before, ctx.const([0], "blocks_from", np.int64), ctx.const([-1], "blocks_to", np.int64),
                              ctx.const([1], "blocks_axis", np.int64)], "blocks")              # v shifted right
    # back to v's shape: ONNX's inference can't take n + 1 - 1 back to n, and would leave the mask's, and so
    # the attention's, length unknown
    before = ctx.op("Reshape", [before, ctx.shape(v, 0, 2, "blocks_shape")], "blocks")
    inside = ctx.op("Not", [ctx.op("Equal", [v, zero], "blocks")], "blocks")
    starts = ctx.op("And", [inside, ctx.op("Not", [ctx.op("Equal", [v, before], "blocks")], "blocks")], "blocks")
    runs = ctx.op("CumSum", [ctx.op("Cast", [starts], "blocks", to=TensorProto.INT64),
                             ctx.const(1, "blocks_axis1", np.int64)], "blocks")
    ids = ctx.op("Where", [inside, runs, zero], "block_ids")                                     # (B, n)
    keys = ids
    if past is not None:  # the cached keys first, id 0
        pads = ctx.op("Concat", [ctx.const([0], "blocks_pad0", np.int64),
                                 ctx.op("Unsqueeze", [past, ctx.const([0], "blocks_pad_axis", np.int64)], "blocks"),
                                 ctx.const([0, 0], "blocks_pad1", np.int64)], "blocks", axis=0)
        keys = ctx.op("Pad", [ids, pads], "blocks")                                              # (B, m)
    rows = ctx.op("Unsqueeze", [ids, ctx.const([1, 3], "blocks_rows", np.int64)], "blocks")      # (B, 1, n, 1)
    cols = ctx.op("Unsqueeze", [keys, ctx.const([1, 2], "blocks_cols", np.int64)], "blocks")     # (B, 1, 1, m)
    same = ctx.op("Equal", [rows, cols], "blocks")
    return ctx.op("And", [same, ctx.op("Not", [ctx.op("Equal", [rows, zero], "blocks")], "blocks")], "blocks")


def _prefix_pairs(ctx: NodeEmitter, prefix: str) -> str:
    """(B, 1, n, n) bool: query i and key j both in the prefix [B, n]."""
    if ctx.types["prefix"].dtype != "bool":
        prefix = ctx.op("Cast", [prefix], "prefix", to=TensorProto.BOOL)
    rows = ctx.op("Unsqueeze", [prefix, ctx.const([1, 3], "prefix_rows", np.int64)], "prefix")     # (B, 1, n, 1)
    cols = ctx.op("Unsqueeze", [prefix, ctx.const([1, 2], "prefix_cols", np.int64)], "prefix")     # (B, 1, 1, n)
    return ctx.op("And", [rows, cols], "prefix")


def _alibi_bias(ctx: NodeEmitter, mask: str | None, scores: str, heads: int) -> str:
    """ALiBi's logit bias (B|1, h, 1, m): slope_h · p_j, p_j the number of real keys before key j in the
    [B, m] mask (0..m-1 without one), as transformers' build_alibi_tensor and the torch lowering."""
    if mask is not None:
        keep = ctx.op("Cast", [mask], "alibi_keep", to=TensorProto.FLOAT)                      # (B, m)
        count = ctx.op("CumSum", [keep, ctx.const(1, "alibi_axis", np.int64)], "alibi_count")
        pos = ctx.op("Mul", [ctx.op("Sub", [count, ctx.const(1.0, "one", np.float32)], "alibi_count"), keep],
                     "alibi_positions")
        pos = ctx.op("Unsqueeze", [pos, ctx.const([1, 2], "alibi_axes", np.int64)], "alibi_positions")
    else:
        m = ctx.shape(scores, 3, 4, "alibi_m")                                               # [m]
        pos = ctx.op("Range", [ctx.const(0, "alibi_start", np.int64), ctx.op("Squeeze", [m], "alibi_m"),
                               ctx.const(1, "alibi_step", np.int64)], "alibi_positions")
        pos = ctx.op("Reshape", [pos, ctx.const([1, 1, 1, -1], "alibi_row", np.int64)], "alibi_positions")
        pos = ctx.op("Cast", [pos], "alibi_positions", to=TensorProto.FLOAT)                # (1, 1, 1, m)
    slopes = ctx.const(alibi_slopes(heads).reshape(heads, 1, 1), "alibi_slopes", np.float32)
    return ctx.op("Mul", [pos, slopes], "alibi")                                           # (B|1, h, 1, m)


def _any_key(ctx: NodeEmitter, keep: str) -> str:
    """1.0 where a query row of `keep` may attend to at least one key, else 0.0: (B, 1, 1|n, 1)."""
    return ctx.reduce("ReduceMax", ctx.op("Cast", [keep], "live", to=TensorProto.FLOAT), [-1], "live", keepdims=1)


def _qk_scale(ctx: NodeEmitter, which: str, unit_offset: bool) -> str:
    """The q or k norm's scale: its weight, or 1 + weight (`qk_unit_offset`, Gemma-3)."""
    w = ctx.param(f"{which}_norm.weight")
    return ctx.op("Add", [w, ctx.const(1.0, "one", np.float32)], f"{which}_norm_offset") if unit_offset else w


def _head_norm(ctx: NodeEmitter, x: str, which: str, eps: float, unit_offset: bool, per_head: bool,
               head_dim: int) -> str:
    """The per-head q or k norm of x (B, n, heads, hd): RMS with one scale of [hd], or (`per_head`, Cohere's
    `qk_norm: layer_heads`) a LayerNorm without bias whose scale [heads, hd] holds a row per head."""
    if not per_head:
        return rms_norm(ctx, x, _qk_scale(ctx, which, unit_offset), eps, f"{which}_norm")
    ones = ctx.const(np.ones(head_dim, np.float32), f"{which}_norm_unit")
    y = ctx.op("LayerNormalization", [x, ones], f"{which}_norm", axis=-1, epsilon=eps)
    return ctx.op("Mul", [y, ctx.param(f"{which}_norm.weight")], f"{which}_norm_scale")


def keys_values(ctx: NodeEmitter, context: str, g: Geometry, biases: dict[str, bool], qk_norm_eps: float | None = None,
                qk_norm_full: bool = False, qk_unit_offset: bool = False,
                qk_norm_heads: bool = False) -> tuple[str, str]:
    """The keys and values of `context`, projected and split into heads: (B, m, kv, hd) and (B, m, kv, vd)."""
    k = ctx.linear(context, "k.", "k", biases["k"])
    if qk_norm_full:
        k = rms_norm(ctx, k, _qk_scale(ctx, "k", qk_unit_offset), qk_norm_eps, "k_norm")
    k = _split_heads(ctx, k, g.kv_heads, g.head_dim, "k")                                     # (B, m, kv, hd)
    v = _split_heads(ctx, ctx.linear(context, "v.", "v", biases["v"]), g.kv_heads, g.value_dim, "v")
    if qk_norm_eps is not None and not qk_norm_full:
        k = _head_norm(ctx, k, "k", qk_norm_eps, qk_unit_offset, qk_norm_heads, g.head_dim)
    return k, v


def attend(ctx: NodeEmitter, query: str, context: str, mask: str | None, g: Geometry, biases: dict[str, bool],
           causal: bool, *, window: int | None = None, scale: float | None = None, qk_norm_eps: float | None = None,
           inv_freq: np.ndarray | None = None, positions: str | None = None, bias: str | None = None,
           past: int | None = None, alibi: bool = False, qk_norm_full: bool = False,
           softcap: float | None = None, sinks: bool = False, rope_scale: float = 1.0,
           rope_pairs: bool = False, kv: tuple[str, str] | None = None, prefix: str | None = None,
           qk_unit_offset: bool = False, qk_norm_heads: bool = False, blocks: str | None = None) -> None:
    """Multi-head scaled dot-product attention with q, k, v, o projections; writes `ctx.out`.

    Per-head steps (q/k RMS norm, rotary, repeating the key/value heads of grouped-query attention) run
    in the (B, n, heads, hd) layout, before the heads are transposed out. Masked scores get the lowest
    float added rather than set to -inf. A query row with no key left gets what torch gives it: with
    `causal`, every key (as transformers does for left padding: garbage that nothing reads, but finite);
    without, zeros (torch's scaled_dot_product_attention). The penalty and the row test are built at the
    mask's size; on the (B, h, n, m) scores the mask costs one Add. A logit `bias` is one more Add, and
    the mask then replaces masked scores (Where) so that bias + penalty cannot overflow to -inf. `past`:
    the cache slot of an export with past keys and values (past.py), whose cached keys and values this
    step's join. `qk_norm_full`: the q/k norm runs over the whole projection, before the heads are split
    (OLMo-2); `qk_unit_offset`: the q/k norms scale by 1 + weight (Gemma-3); `qk_norm_heads`: per-head LayerNorms
    (Cohere). `softcap`: tanh(s / softcap) · softcap on the scaled, biased scores, before the mask.
    `sinks`: the node's `sinks [h]` logits join the softmax (`_with_sinks`). `rope_scale`: YaRN's factor
    on cos and sin; `rope_pairs`: rotary in interleaved pairs (GPT-J); `prefix`: a prefix LM's [B, n]
    (`_key_mask`); `blocks`: bidirectional blocks [B, n] (`_key_mask`). Values are `g.value_dim` wide per head.
    `kv`: keys and values already projected and split (B, m, kv, hd|vd), `context` unread (a
    cross-attention's, projected once per sequence: seq2seq.py).
    """
    q = ctx.linear(query, "q.", "q", biases["q"])
    if qk_norm_full:
        q = rms_norm(ctx, q, _qk_scale(ctx, "q", qk_unit_offset), qk_norm_eps, "q_norm")
    q = _split_heads(ctx, q, g.heads, g.head_dim, "q")                                        # (B, n, h, hd)
    if qk_norm_eps is not None and not qk_norm_full:
        q = _head_norm(ctx, q, "q", qk_norm_eps, qk_unit_offset, qk_norm_heads, g.head_dim)
    k, v = kv if kv is not None else keys_values(ctx, context, g, biases, qk_norm_eps, qk_norm_full,
                                                 qk_unit_offset, qk_norm_heads)
    if inv_freq is not None:
        cos, sin = _rotary_cos_sin(ctx, query, positions, inv_freq, rope_scale, rope_pairs)
        r = 2 * inv_freq.size
        q, k = (_rotate(ctx, q, cos, sin, r, g.head_dim, "q", rope_pairs),
                _rotate(ctx, k, cos, sin, r, g.head_dim, "k", rope_pairs))
    if past is not None:
        k, v = extend(ctx, past, k, v)                                                       # (B, past + m, kv, hd)
    if g.kv_heads != g.heads:
        k, v = _repeat_heads(ctx, k, g, g.head_dim, "k"), _repeat_heads(ctx, v, g, g.value_dim, "v")
    q = ctx.op("Transpose", [q], "q_heads", perm=[0, 2, 1, 3])                               # (B, h, n, hd)
    k = ctx.op("Transpose", [k], "k_heads", perm=[0, 2, 3, 1])                               # (B, h, hd, m)
    v = ctx.op("Transpose", [v], "v_heads", perm=[0, 2, 1, 3])                               # (B, h, m, vd)
    scale = scale if scale is not None else 1.0 / math.sqrt(g.head_dim)
    q = ctx.op("Mul", [q, ctx.const(scale, "scale", np.float32)], "scale")
    scores = ctx.op("MatMul", [q, k], "scores")                                              # (B, h, n, m)
    if alibi:  # over every key, the cached ones too (the mask of a step with past covers them)
        pos_bias = _alibi_bias(ctx, mask, scores, g.heads)
        bias = pos_bias if bias is None else ctx.op("Add", [bias, pos_bias], "alibi")
    if bias is not None:
        scores = ctx.op("Add", [scores, bias], "biased")
    if softcap is not None:
        cap = ctx.const(softcap, "softcap", np.float32)
        scores = ctx.op("Mul", [ctx.op("Tanh", [ctx.op("Div", [scores, cap], "softcap")], "softcap"), cap], "capped")
    keep = _key_mask(ctx, mask, causal, window, scores, past is not None, prefix if causal else None,
                     blocks if causal else None)
    if keep is not None and mask is not None and causal:  # a row with no key left gets every key
        dead = ctx.op("Not", [ctx.op("Cast", [_any_key(ctx, keep)], "live", to=TensorProto.BOOL)], "dead")
        keep = ctx.op("Or", [keep, dead], "unmask")
    lowest = ctx.const(np.finfo(np.float32).min, "lowest", np.float32) if keep is not None else None
    if keep is not None and bias is not None:
        scores = ctx.op("Where", [keep, scores, lowest], "masked")
    elif keep is not None:  # a penalty built at the mask's own size (B, 1, 1|n, m): one Add on the scores
        penalty = ctx.op("Where", [keep, ctx.const(0.0, "zero", np.float32), lowest], "penalty")
        scores = ctx.op("Add", [scores, penalty], "masked")
    probs = _with_sinks(ctx, scores, g.heads) if sinks else ctx.op("Softmax", [scores], "probs", axis=-1)
    y = ctx.op("MatMul", [probs, v], "context")                                              # (B, h, n, vd)
    if mask is not None and not causal and bias is None:  # rows with no key are zeroed (a float mask: uniform)
        y = ctx.op("Mul", [y, _any_key(ctx, keep)], "live")
    y = ctx.op("Transpose", [y], "context", perm=[0, 2, 1, 3])                              # (B, n, h, vd)
    y = ctx.op("Reshape", [y, ctx.const([0, 0, g.heads * g.value_dim], "merge", np.int64)], "context")
    ctx.linear(y, "o.", "o", biases["o"], final=True)                                        # (B, n, d_out)


@lowers("attention")
def _attention(ctx: NodeEmitter, node) -> None:
    a = node.attrs
    ins = dict(zip(node.inputs, ctx.inputs))
    g = Geometry(*a.geometry(_width(ctx)), a.value_dim(_width(ctx)))
    past = ctx.state.past   # exporting a decoder step: positions come from `position_ids`
    positions = ins.get("positions") or (past.position_ids if past else None)
    attend(ctx, ins["x"], ins["x"], ins.get("mask"), g, a.biases(), a.causal, window=a.window, scale=a.scale,
           qk_norm_eps=a.eps if a.qk_norm != "none" else None,
           inv_freq=rotary_inv_freq(a, g.head_dim) if a.rope else None, positions=positions,
           bias=ins.get("bias"), past=past.slot(node.name) if past else None, alibi=a.alibi,
           qk_norm_full=a.qk_norm == "rms_full", softcap=a.softcap, sinks=bool(a.sinks),
           rope_scale=a.rope_cos_scale, rope_pairs=a.rope_interleaved, prefix=ins.get("prefix"),
           qk_unit_offset=a.qk_unit_offset, qk_norm_heads=a.qk_norm == "layer_heads", blocks=ins.get("blocks"))


@lowers("cross_attend")
def _cross_attend(ctx: NodeEmitter, node) -> None:
    a = node.attrs
    ins = dict(zip(node.inputs, ctx.inputs))
    inner = a.dim or _width(ctx, "query")
    g = Geometry(a.heads, a.heads, inner // a.heads)
    past = ctx.state.past
    layer = past.cross_slot(node.name) if past is not None else None
    kv = None if layer is None else \
        past.cross_cache(ctx, layer, lambda: keys_values(ctx, ins["context"], g, a.biases()))   # seq2seq.py
    attend(ctx, ins["query"], ins.get("context"), ins.get("mask"), g, a.biases(), False, scale=a.scale,
           bias=ins.get("bias"), kv=kv)


# ---------------------------------------------------------------- norms

@lowers("norm")
def _norm(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    if a.unit_offset:  # scale by 1 + weight (Gemma): the normalised x times (weight + 1), then the shift
        scale = ctx.op("Add", [ctx.param("weight"), ctx.const(1.0, "one", np.float32)], "unit_offset")
        if a.kind == "layer":
            ins = [x, scale] + ([ctx.param("bias")] if a.bias else [])
            ctx.op("LayerNormalization", ins, axis=-1, epsilon=a.eps, final=True)
        else:
            rms_norm(ctx, x, scale, a.eps, final=True)
        return
    if a.kind == "layer":
        ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if a.bias else [])
        ctx.op("LayerNormalization", ins, axis=-1, epsilon=a.eps, final=True)
        return
    rms_norm(ctx, x, ctx.param("weight"), a.eps, final=True, groups=a.groups)


# ---------------------------------------------------------------- element-wise

@lowers("residual")
def _residual(ctx: NodeEmitter, node) -> None:
    xs = ctx.inputs
    y = xs[0]
    for i, x in enumerate(xs[1:], start=1):
        y = ctx.op("Add", [y, x], str(i), final=i == len(xs) - 1)


@lowers("mul")
def _mul(ctx: NodeEmitter, node) -> None:
    xs = ctx.inputs
    y = xs[0]
    for i, x in enumerate(xs[1:], start=1):
        y = ctx.op("Mul", [y, x], str(i), final=i == len(xs) - 1)


def _gelu_formula(ctx: NodeEmitter, x: str, tanh: bool) -> str:
    f32 = np.float32
    if tanh:
        # 0.5 · x · (1 + tanh(sqrt(2/π) · (x + 0.044715 · x³)))  (GPT-2's gelu_new)
        cube = ctx.op("Mul", [ctx.op("Mul", [x, x], "square"), x], "cube")
        inner = ctx.op("Add", [x, ctx.op("Mul", [cube, ctx.const(0.044715, "kappa", f32)], "kappa")], "inner")
        t = ctx.op("Tanh", [ctx.op("Mul", [inner, ctx.const(math.sqrt(2 / math.pi), "beta", f32)], "beta")])
    else:
        # 0.5 · x · (1 + erf(x / sqrt(2))), written in the form ONNX Runtime fuses into one Gelu kernel
        t = ctx.op("Erf", [ctx.op("Div", [x, ctx.const(math.sqrt(2), "sqrt2", f32)], "sqrt2")])
    one_plus = ctx.op("Add", [t, ctx.const(1.0, "one", f32)], "one")
    return ctx.op("Mul", [x, one_plus], "x")


def activation(ctx: NodeEmitter, kind: str, x: str) -> str:
    """The one ONNX form of each activation (ActivationAttrs.kind); writes `ctx.out`. Shared by the
    `activation` op and the per-name ops (`relu`, `gelu`, `quick_gelu`, ...)."""
    if kind in ("relu", "tanh", "sigmoid", "softplus"):
        return ctx.op({"softplus": "Softplus"}.get(kind, kind.capitalize()), [x], final=True)
    if kind in ("silu", "quick_gelu"):  # x · σ(x); CLIP's x · σ(1.702 x)
        gate_in = x if kind == "silu" else ctx.op("Mul", [x, ctx.const(1.702, "alpha", np.float32)], "alpha")
        return ctx.op("Mul", [x, ctx.op("Sigmoid", [gate_in])], final=True)
    approx = {"gelu": "none", "gelu_tanh": "tanh"}[kind]
    if ctx.opset >= 20:  # Gelu became a standard op in opset 20
        return ctx.op("Gelu", [x], approximate=approx, final=True)
    return ctx.op("Mul", [_gelu_formula(ctx, x, approx == "tanh"), ctx.const(0.5, "half", np.float32)], final=True)


@lowers("activation")
def _activation(ctx: NodeEmitter, node) -> None:
    activation(ctx, node.attrs.kind, ctx.inputs[0])


@lowers("relu", "tanh", "sigmoid", "silu")
def _pointwise(ctx: NodeEmitter, node) -> None:
    activation(ctx, node.op, ctx.inputs[0])


@lowers("gelu")
def _gelu(ctx: NodeEmitter, node) -> None:
    activation(ctx, "gelu_tanh" if node.attrs.approximate == "tanh" else "gelu", ctx.inputs[0])


@lowers("softcap")
def _softcap(ctx: NodeEmitter, node) -> None:
    cap = ctx.const(node.attrs.cap, "cap", np.float32)
    ctx.op("Mul", [ctx.op("Tanh", [ctx.op("Div", [ctx.inputs[0], cap], "cap")], "tanh"), cap], final=True)


@lowers("dropout")
def _dropout(ctx: NodeEmitter, node) -> None:
    # exported models are for inference: dropout is the identity in eval mode
    ctx.op("Identity", ctx.inputs, final=True)


@lowers("softmax")
def _softmax(ctx: NodeEmitter, node) -> None:
    ctx.op("Softmax", ctx.inputs, axis=node.attrs.axis, final=True)


# ---------------------------------------------------------------- structural

@lowers("concat")
def _concat(ctx: NodeEmitter, node) -> None:
    ctx.op("Concat", ctx.inputs, axis=node.attrs.axis, final=True)


@lowers("pool")
def _pool(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    if a.kind == "mean":
        ctx.reduce("ReduceMean", x, [1], "tokens", keepdims=0, final=True)
    else:  # a scalar index drops the token axis: (B, n, d) → (B, d); negative indices count from the end
        ctx.op("Gather", [x, ctx.const(a.index, "index", np.int64)], axis=1, final=True)


# ---------------------------------------------------------------- learned scales, element-wise constants

@lowers("learned_scale")
def _learned_scale(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    scale = ctx.param("scale")
    if node.attrs.act == "tanh":
        scale = ctx.op("Tanh", [scale], "gate")
    ctx.op("Mul", [x, scale], final=True)


@lowers("offset")
def _offset(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    ctx.op("Add", [x, ctx.const(node.attrs.by, "by", np.float32)], final=True)


@lowers("clamp")
def _clamp(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    bounds = [ctx.const(v, tag, np.float32) if v is not None else "" for v, tag in ((a.min, "min"), (a.max, "max"))]
    ctx.op("Clip", [x, *bounds], final=True)   # an empty name: that bound is absent
