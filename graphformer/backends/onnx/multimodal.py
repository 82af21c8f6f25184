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
    steps = [("Exp", "logit_scale", "Mul", "scale")] if a.scale == "learned" else []     # CLIP: exp(logit_scale)
    steps += [(None, "logit_bias", "Add", "bias")] if a.bias else []                     # SigLIP: + logit_bias
    out = ctx.op("MatMul", [a_in, bt], "cosine", final=not steps)                          # (N_a, N_b)
    for i, (pre, param, op, tag) in enumerate(steps):
        value = ctx.param(param)
        value = ctx.op(pre, [value], tag) if pre else value
        out = ctx.op(op, [out, value], tag, final=i == len(steps) - 1)


@lowers("quick_gelu")
def _quick_gelu(ctx: NodeEmitter, node) -> None:
    activation(ctx, "quick_gelu", ctx.inputs[0])


@lowers("scale")
def _scale(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    ctx.op("Mul", [x, ctx.const(node.attrs.by, "by", np.float32)], final=True)


@lowers("equal")
def _equal(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    ctx.op("Equal", [x, ctx.const(node.attrs.to, "to", np.int64)], final=True)


@lowers("scatter_tokens")
def _scatter_tokens(ctx: NodeEmitter, node) -> None:
    """masked_scatter as a gather: the k-th marked position (row-major) takes feature row k, found by a
    running count of the marks; unmarked positions keep x. The count of marks is not checked here."""
    x, mask, features = ctx.inputs
    if ctx.types["mask"].dtype != "bool":
        mask = ctx.op("Cast", [mask], "marked", to=TensorProto.BOOL)
    flat = ctx.const([-1], "flat", np.int64)
    marks = ctx.op("Reshape", [ctx.op("Cast", [mask], "count", to=TensorProto.INT64), flat], "marks")
    rank = ctx.op("Sub", [ctx.op("CumSum", [marks, ctx.const(0, "axis", np.int64)], "running"),
                          ctx.const(1, "one", np.int64)], "rank")                  # [B·n]: k at the k-th mark
    rank = ctx.op("Max", [rank, ctx.const(0, "zero", np.int64)], "index")          # unmarked before the first
    rows = ctx.op("Reshape", [features, ctx.op("Concat", [flat, ctx.shape(x, 2, 3, "width")], "rows_shape",
                                               axis=0)], "rows")                         # [N, d]
    picked = ctx.op("Gather", [rows, rank], "picked", axis=0)                     # [B·n, d]
    picked = ctx.op("Reshape", [picked, ctx.shape(x, 0, 3, "x_shape")], "placed")  # [B, n, d]
    keep = ctx.op("Unsqueeze", [mask, ctx.const([-1], "last", np.int64)], "where")
    ctx.op("Where", [keep, picked, x], final=True)
