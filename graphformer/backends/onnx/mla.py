"""ONNX lowering of multi-head latent attention (graphformer/ops/mla.py), with the torch lowering's semantics
(backends/torch/mla.py). Layout (B, n, heads, width) until the scores, as `attend` in core.py.

With past keys and values (`export --with-past`), the slot's `key` is the normalised latent
[B, 1, past, kv_rank] and its `value` the rotated shared key [B, 1, past, rope_dim]: what the torch cache
and the reference cache hold.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..rotary import mla_inv_freq
from .core import _any_key, _key_mask, _rotary_cos_sin, _split_heads, rms_norm, rotate_pairs
from .lower import NodeEmitter, lowers
from .past import extend


def _last(ctx: NodeEmitter, x: str, start: int, stop: int, tag: str) -> str:
    """x[..., start:stop]."""
    return ctx.op("Slice", [x, ctx.const([start], f"{tag}_start", np.int64), ctx.const([stop], f"{tag}_stop", np.int64),
                            ctx.const([-1], f"{tag}_axis", np.int64)], tag)


@lowers("latent_attention")
def _latent_attention(ctx: NodeEmitter, node) -> None:
    a = node.attrs
    ins = dict(zip(node.inputs, ctx.inputs))
    x, mask = ins["x"], ins.get("mask")
    h, dn, dr, dv, r = a.heads, a.nope_dim, a.rope_dim, a.v_dim, a.kv_rank
    past = ctx.state.past   # exporting a decoder step: positions come from `position_ids`
    positions = ins.get("positions") or (past.position_ids if past else None)
    if a.q_rank:
        q = ctx.linear(x, "q_a.", "q_a", a.bias)
        q = ctx.linear(rms_norm(ctx, q, ctx.param("q_norm.weight"), a.eps, "q_norm"), "q_b.", "q_b", False)
    else:
        q = ctx.linear(x, "q.", "q", False)
    q = _split_heads(ctx, q, h, a.qk_dim, "q")                                                 # (B, n, h, qk)
    kv = ctx.linear(x, "kv_a.", "kv_a", a.bias)                                                # (B, n, r + dr)
    latent = rms_norm(ctx, _last(ctx, kv, 0, r, "latent"), ctx.param("kv_norm.weight"), a.eps, "kv_norm")
    one_head = ctx.const([2], "one_head", np.int64)
    latent = ctx.op("Unsqueeze", [latent, one_head], "latent")                                 # (B, n, 1, r)
    k_rope = ctx.op("Unsqueeze", [_last(ctx, kv, r, r + dr, "k_rope"), one_head], "k_rope")   # (B, n, 1, dr)
    cos, sin = _rotary_cos_sin(ctx, x, positions, mla_inv_freq(a), a.rope_attention_factor, pairs=True)
    q = ctx.op("Concat", [_last(ctx, q, 0, dn, "q_nope"),
                          rotate_pairs(ctx, _last(ctx, q, dn, dn + dr, "q_rope"), cos, sin, dr, "q")], "q", axis=-1)
    k_rope = rotate_pairs(ctx, k_rope, cos, sin, dr, "k")
    slot = past.slot(node.name) if past else None
    if slot is not None:
        latent, k_rope = extend(ctx, slot, latent, k_rope)                                   # (B, past + n, 1, ·)
    kv = ctx.linear(ctx.op("Reshape", [latent, ctx.const([0, 0, r], "latent_rows", np.int64)], "latent"),
                    "kv_b.", "kv_b", False)
    kv = _split_heads(ctx, kv, h, dn + dv, "kv")                                               # (B, m, h, dn + dv)
    k_rope = ctx.op("Expand", [k_rope, ctx.const([1, 1, h, 1], "k_rope_heads", np.int64)], "k_rope")
    k = ctx.op("Concat", [_last(ctx, kv, 0, dn, "k_nope"), k_rope], "k", axis=-1)              # (B, m, h, qk)
    v = _last(ctx, kv, dn, dn + dv, "v")                                                       # (B, m, h, dv)
    q = ctx.op("Transpose", [q], "q_heads", perm=[0, 2, 1, 3])                                 # (B, h, n, qk)
    k = ctx.op("Transpose", [k], "k_heads", perm=[0, 2, 3, 1])                                 # (B, h, qk, m)
    v = ctx.op("Transpose", [v], "v_heads", perm=[0, 2, 1, 3])                                 # (B, h, m, dv)
    q = ctx.op("Mul", [q, ctx.const(a.softmax_scale, "scale", np.float32)], "scale")
    scores = ctx.op("MatMul", [q, k], "scores")                                                # (B, h, n, m)
    keep = _key_mask(ctx, mask, a.causal, None, scores, slot is not None)
    if keep is not None and mask is not None and a.causal:  # a row with no key left gets every key (as torch)
        dead = ctx.op("Not", [ctx.op("Cast", [_any_key(ctx, keep)], "live", to=TensorProto.BOOL)], "dead")
        keep = ctx.op("Or", [keep, dead], "unmask")
    if keep is not None:
        lowest = ctx.const(np.finfo(np.float32).min, "lowest", np.float32)
        penalty = ctx.op("Where", [keep, ctx.const(0.0, "zero", np.float32), lowest], "penalty")
        scores = ctx.op("Add", [scores, penalty], "masked")
    probs = ctx.op("Softmax", [scores], "probs", axis=-1)
    y = ctx.op("MatMul", [probs, v], "context")                                               # (B, h, n, dv)
    if mask is not None and not a.causal:  # rows with no key are zeroed, as torch's SDPA
        y = ctx.op("Mul", [y, _any_key(ctx, keep)], "live")
    y = ctx.op("Transpose", [y], "context", perm=[0, 2, 1, 3])
    y = ctx.op("Reshape", [y, ctx.const([0, 0, h * dv], "merge", np.int64)], "context")
    ctx.linear(y, "o.", "o", a.bias, final=True)                                               # (B, n, d)
