"""ONNX lowerings of the multimodal ops (ops/multimodal.py), with the semantics of backends/torch/multimodal.py."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .core import activation
from .lower import NodeEmitter, lowers


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
