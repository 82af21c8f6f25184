"""ONNX lowerings of the non-text ops: vision (ops/vision.py), sequence layout (ops/sequence.py) and
multimodal (ops/multimodal.py). The audio front end lives in audio.py.

Semantics follow the torch backend (backends/torch/vision.py). Learned tokens and latent arrays are
broadcast over the runtime batch with Expand, so nothing here fixes `B` or the token count.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .core import activation
from .lower import NodeEmitter, lowers

INT64_MAX = np.iinfo(np.int64).max


def _broadcast_batch(ctx: NodeEmitter, table: str, like: str, rows: int, width: int, tag: str,
                     final: bool = False) -> str:
    """A learned `[rows, width]` table repeated over the batch of `like`: `[B, rows, width]`."""
    batch = ctx.shape(like, 0, 1, f"{tag}_batch")                                            # [B]
    shape = ctx.op("Concat", [batch, ctx.const([rows, width], f"{tag}_rows", np.int64)], f"{tag}_shape", axis=0)
    one = ctx.op("Unsqueeze", [table, ctx.const([0], f"{tag}_axis", np.int64)], tag)         # (1, rows, width)
    return ctx.op("Expand", [one, shape], tag, final=final)                                  # (B, rows, width)


# ---------------------------------------------------------------- vision

@lowers("patch_embed")
def _patch_embed(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    sh = a.stride if a.stride is not None else a.patch
    sw = a.stride_w if a.stride_w is not None else sh
    ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if a.bias else [])
    # a strided convolution, like torch.nn.Conv2d: trailing rows/columns that fit no patch are dropped
    y = ctx.op("Conv", ins, kernel_shape=[a.patch, a.patch], strides=[sh, sw])               # (B, D, nh, nw)
    y = ctx.op("Reshape", [y, ctx.const([0, 0, -1], "flatten", np.int64)], "flatten")       # (B, D, nh·nw)
    ctx.op("Transpose", [y], perm=[0, 2, 1], final=True)                                     # (B, N, D), row-major


@lowers("prepend_tokens")
def _prepend_tokens(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    d = ctx.types["x"].shape[2].value
    tokens = _broadcast_batch(ctx, ctx.param("tokens"), x, node.attrs.count, d, "tokens")
    ctx.op("Concat", [tokens, x], axis=1, final=True)


@lowers("latents")
def _latents(ctx: NodeEmitter, node) -> None:
    (like,) = ctx.inputs
    a = node.attrs
    _broadcast_batch(ctx, ctx.param("latents"), like, a.count, a.dim, "latents", final=True)


# ---------------------------------------------------------------- sequence layout

@lowers("slice")
def _slice(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    stop = a.stop if a.stop is not None else INT64_MAX
    ins = [x, ctx.const([a.start], "start", np.int64), ctx.const([stop], "stop", np.int64),
           ctx.const([a.axis], "axis", np.int64)]
    ctx.op("Slice", ins, final=True)


@lowers("transpose")
def _transpose(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    rank = ctx.types["x"].rank
    i, j = (ax % rank for ax in node.attrs.axes)
    perm = list(range(rank))
    perm[i], perm[j] = perm[j], perm[i]
    ctx.op("Transpose", [x], perm=perm, final=True)


@lowers("unsqueeze")
def _unsqueeze(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    ctx.op("Unsqueeze", [x, ctx.const([node.attrs.axis], "axis", np.int64)], final=True)


@lowers("interleave")
def _interleave(ctx: NodeEmitter, node) -> None:
    d = ctx.types["xs0"].shape[2].value
    axis = ctx.const([2], "axis", np.int64)
    steps = [ctx.op("Unsqueeze", [x, axis], str(i)) for i, x in enumerate(ctx.inputs)]       # (B, T, 1, d) each
    y = ctx.op("Concat", steps, "steps", axis=2)                                             # (B, T, k, d)
    ctx.op("Reshape", [y, ctx.const([0, -1, d], "merge", np.int64)], final=True)            # (B, k·T, d)


@lowers("deinterleave")
def _deinterleave(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    d = ctx.types["x"].shape[2].value
    y = ctx.op("Reshape", [x, ctx.const([0, -1, a.streams, d], "steps", np.int64)], "steps")  # (B, T, k, d)
    ctx.op("Gather", [y, ctx.const(a.index, "index", np.int64)], axis=2, final=True)        # (B, T, d)


@lowers("table_row")
def _table_row(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    row = ctx.op("Gather", [ctx.param("weight"), ctx.const(node.attrs.index, "index", np.int64)], "row", axis=0)
    ctx.op("Add", [x, row], final=True)


@lowers("vestigial")
def _vestigial(ctx: NodeEmitter, node) -> None:
    # its parameter is never read, so it is not exported either (a runtime would drop it anyway)
    ctx.op("Identity", ctx.inputs, final=True)


# ---------------------------------------------------------------- multimodal

@lowers("token_at")
def _token_at(ctx: NodeEmitter, node) -> None:
    x, ids = ctx.inputs
    a = node.attrs
    if a.select == "first":
        hit = ctx.op("Equal", [ids, ctx.const(a.token, "token", np.int64)], "token")
        ids = ctx.op("Cast", [hit], "token", to=TensorProto.INT64)                           # 1 where found
    # ArgMax returns the first of equal maxima, like torch.argmax
    pos = ctx.op("ArgMax", [ids], "position", axis=1, keepdims=1)                           # (B, 1)
    ctx.op("GatherND", [x, pos], batch_dims=1, final=True)                                  # (B, d)


def _l2_normalize(ctx: NodeEmitter, x: str, eps: float, tag: str, final: bool = False) -> str:
    """x / max(‖x‖₂, eps) along the last axis, as torch.nn.functional.normalize."""
    norm = ctx.reduce("ReduceL2", x, [-1], f"{tag}_norm", keepdims=1)
    norm = ctx.op("Max", [norm, ctx.const(eps, f"{tag}_eps", np.float32)], f"{tag}_norm")
    return ctx.op("Div", [x, norm], tag, final=final)


@lowers("l2_normalize")
def _l2(ctx: NodeEmitter, node) -> None:
    _l2_normalize(ctx, ctx.inputs[0], node.attrs.eps, "l2", final=True)


@lowers("cosine_logits")
def _cosine_logits(ctx: NodeEmitter, node) -> None:
    a_in, b_in = ctx.inputs
    a = node.attrs
    if a.normalize:
        a_in, b_in = _l2_normalize(ctx, a_in, 1e-12, "a"), _l2_normalize(ctx, b_in, 1e-12, "b")
    bt = ctx.op("Transpose", [b_in], "b", perm=[1, 0])
    if a.scale == "none":
        ctx.op("MatMul", [a_in, bt], final=True)
        return
    sims = ctx.op("MatMul", [a_in, bt], "cosine")                                            # (N_a, N_b)
    scale = ctx.op("Exp", [ctx.param("logit_scale")], "scale")                              # CLIP: exp(logit_scale)
    ctx.op("Mul", [sims, scale], "scale", final=True)


@lowers("quick_gelu")
def _quick_gelu(ctx: NodeEmitter, node) -> None:
    activation(ctx, "quick_gelu", ctx.inputs[0])


@lowers("scale")
def _scale(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    ctx.op("Mul", [x, ctx.const(node.attrs.by, "by", np.float32)], final=True)
