"""ONNX lowerings of the core ops (graphformer/ops/core.py), with the semantics of the torch backend.

Everything is standard ONNX (default domain) at opset ≥ 17. Dynamic dims never get baked in: Reshape
targets use 0 ("copy this dim") or a runtime `Shape` slice, and the causal mask is built from the
runtime shape of the scores, so one exported model serves every `B` and `n`.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper

from ..tables import sinusoids
from .lower import NodeEmitter, lowers


def _width(ctx: NodeEmitter, port: str = "x") -> int:
    return ctx.types[port].shape[-1].value


# ---------------------------------------------------------------- embedding, positions

@lowers("embedding")
def _embedding(ctx: NodeEmitter, node) -> None:
    (ids,) = ctx.inputs
    a = node.attrs
    if not a.scale:
        ctx.op("Gather", [ctx.param("weight"), ids], final=True, axis=0)
        return
    rows = ctx.op("Gather", [ctx.param("weight"), ids], axis=0)
    # Vaswani et al. 3.4: embeddings are multiplied by sqrt(d_model)
    ctx.op("Mul", [rows, ctx.const(math.sqrt(a.dim), "scale", np.float32)], "scale", final=True)


@lowers("positional")
def _positional(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    table = ctx.param("weight") if a.kind == "learned" else ctx.const(sinusoids(a.max_len, _width(ctx)), "table")
    n = ctx.shape(x, 1, 2, "n")                                                              # [n]
    rows = ctx.op("Slice", [table, ctx.const([0], "start", np.int64), n, ctx.const([0], "axis", np.int64)], "rows")
    # ONNX shape inference cannot see through Slice with a runtime end; reshaping to x's own runtime
    # [n, d] (free at run time) lets data propagation name the dim `n` again.
    rows = ctx.op("Reshape", [rows, ctx.shape(x, 1, 3, "n_d")], "rows")
    ctx.op("Add", [x, rows], final=True)


# ---------------------------------------------------------------- linear

@lowers("linear")
def _linear(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    tied = ctx.param("weight", owner=a.tied) if a.tied else None
    ctx.linear(x, "", "", a.bias, final=True, weight=tied)


# ---------------------------------------------------------------- attention

def _split_heads(ctx: NodeEmitter, x: str, heads: int, inner: int, tag: str, perm: list[int]) -> str:
    shape = ctx.const([0, 0, heads, inner // heads], f"{tag}_heads", np.int64)
    y = ctx.op("Reshape", [x, shape], f"{tag}_heads")                                        # (B, n, h, hd)
    return ctx.op("Transpose", [y], f"{tag}_heads", perm=perm)


def _key_mask(ctx: NodeEmitter, mask: str | None, causal: bool, scores: str) -> str | None:
    """The boolean `keep` mask broadcastable to the scores (B, h, n, m), or None when nothing is masked."""
    keep = None
    if mask is not None:
        if ctx.types["mask"].dtype != "bool":
            mask = ctx.op("Cast", [mask], "mask", to=TensorProto.BOOL)                       # 1 = attend
        keep = ctx.op("Unsqueeze", [mask, ctx.const([1, 2], "mask_axes", np.int64)], "mask")  # (B, 1, 1, m)
    if causal:
        n_m = ctx.shape(scores, 2, 4, "causal")                                              # runtime [n, m]
        ones = ctx.op("ConstantOfShape", [n_m], "causal", value=helper.make_tensor("", TensorProto.BOOL, [1], [1]))
        tril = ctx.op("Trilu", [ones], "causal", upper=0)                                    # (n, m): j ≤ i
        keep = tril if keep is None else ctx.op("And", [keep, tril], "mask")
    return keep


def attend(ctx: NodeEmitter, query: str, context: str, mask: str | None, heads: int, inner: int,
           bias: bool, causal: bool) -> None:
    """Multi-head scaled dot-product attention with q, k, v, o projections; writes `ctx.out`.

    Masked scores get the lowest float added rather than set to -inf, so a row with every key masked
    gets a finite uniform softmax instead of NaNs; with a padding mask such rows are then zeroed, which
    is what torch's scaled_dot_product_attention returns for them. The penalty and the row test are built
    at the mask's size; on the (B, h, n, m) scores the mask costs one Add.
    """
    q = _split_heads(ctx, ctx.linear(query, "q.", "q", bias), heads, inner, "q", [0, 2, 1, 3])    # (B, h, n, hd)
    k = _split_heads(ctx, ctx.linear(context, "k.", "k", bias), heads, inner, "k", [0, 2, 3, 1])  # (B, h, hd, m)
    v = _split_heads(ctx, ctx.linear(context, "v.", "v", bias), heads, inner, "v", [0, 2, 1, 3])  # (B, h, m, hd)
    q = ctx.op("Mul", [q, ctx.const(1.0 / math.sqrt(inner // heads), "scale", np.float32)], "scale")
    scores = ctx.op("MatMul", [q, k], "scores")                                              # (B, h, n, m)
    keep = _key_mask(ctx, mask, causal, scores)
    if keep is not None:  # a penalty built at the mask's own size (B, 1, 1|n, m): one Add on the scores
        lowest = ctx.const(np.finfo(np.float32).min, "lowest", np.float32)
        penalty = ctx.op("Where", [keep, ctx.const(0.0, "zero", np.float32), lowest], "penalty")
        scores = ctx.op("Add", [scores, penalty], "masked")
    probs = ctx.op("Softmax", [scores], "probs", axis=-1)
    y = ctx.op("MatMul", [probs, v], "context")                                              # (B, h, n, hd)
    if mask is not None:  # 1 where the query row may attend to at least one key, else 0
        live = ctx.reduce("ReduceMax", ctx.op("Cast", [keep], "live", to=TensorProto.FLOAT), [-1], "live",
                          keepdims=1)                                                        # (B, 1, 1|n, 1)
        y = ctx.op("Mul", [y, live], "live")
    y = ctx.op("Transpose", [y], "context", perm=[0, 2, 1, 3])                              # (B, n, h, hd)
    y = ctx.op("Reshape", [y, ctx.const([0, 0, inner], "merge", np.int64)], "context")      # (B, n, inner)
    ctx.linear(y, "o.", "o", bias, final=True)


@lowers("attention")
def _attention(ctx: NodeEmitter, node) -> None:
    a = node.attrs
    x, mask = ctx.inputs[0], (ctx.inputs[1] if "mask" in node.inputs else None)
    attend(ctx, x, x, mask, a.heads, _width(ctx), a.bias, a.causal)


@lowers("cross_attend")
def _cross_attend(ctx: NodeEmitter, node) -> None:
    a = node.attrs
    query, context = ctx.inputs[0], ctx.inputs[1]
    mask = ctx.inputs[2] if "mask" in node.inputs else None
    attend(ctx, query, context, mask, a.heads, a.dim or _width(ctx, "query"), a.bias, False)


# ---------------------------------------------------------------- norms

@lowers("norm")
def _norm(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    if a.kind == "layer":
        ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if a.bias else [])
        ctx.op("LayerNormalization", ins, axis=-1, epsilon=a.eps, final=True)
        return
    # RMS norm as torch.nn.functional.rms_norm: x · rsqrt(mean(x²) + eps) · weight
    sq = ctx.op("Mul", [x, x], "square")
    ms = ctx.reduce("ReduceMean", sq, [-1], "mean_square", keepdims=1)
    rms = ctx.op("Sqrt", [ctx.op("Add", [ms, ctx.const(a.eps, "eps", np.float32)], "eps")], "rms")
    y = ctx.op("Mul", [x, ctx.op("Reciprocal", [rms], "rms")], "normed")
    ctx.op("Mul", [y, ctx.param("weight")], "scale", final=True)


# ---------------------------------------------------------------- element-wise

@lowers("residual")
def _residual(ctx: NodeEmitter, node) -> None:
    xs = ctx.inputs
    y = xs[0]
    for i, x in enumerate(xs[1:], start=1):
        y = ctx.op("Add", [y, x], str(i), final=i == len(xs) - 1)


@lowers("relu", "tanh", "sigmoid")
def _pointwise(ctx: NodeEmitter, node) -> None:
    ctx.op(node.op.capitalize(), ctx.inputs, final=True)


@lowers("silu")
def _silu(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    ctx.op("Mul", [x, ctx.op("Sigmoid", [x])], final=True)


@lowers("gelu")
def _gelu(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    approx = node.attrs.approximate
    if ctx.opset >= 20:  # Gelu became a standard op in opset 20
        ctx.op("Gelu", [x], approximate=approx, final=True)
        return
    f32 = np.float32
    if approx == "tanh":
        # 0.5 · x · (1 + tanh(sqrt(2/π) · (x + 0.044715 · x³)))  (GPT-2's gelu_new)
        cube = ctx.op("Mul", [ctx.op("Mul", [x, x], "square"), x], "cube")
        inner = ctx.op("Add", [x, ctx.op("Mul", [cube, ctx.const(0.044715, "kappa", f32)], "kappa")], "inner")
        t = ctx.op("Tanh", [ctx.op("Mul", [inner, ctx.const(math.sqrt(2 / math.pi), "beta", f32)], "beta")])
    else:
        # 0.5 · x · (1 + erf(x / sqrt(2))), written in the form ONNX Runtime fuses into one Gelu kernel
        t = ctx.op("Erf", [ctx.op("Div", [x, ctx.const(math.sqrt(2), "sqrt2", f32)], "sqrt2")])
    one_plus = ctx.op("Add", [t, ctx.const(1.0, "one", f32)], "one")
    x_one_plus = ctx.op("Mul", [x, one_plus], "x")
    ctx.op("Mul", [x_one_plus, ctx.const(0.5, "half", f32)], final=True)


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
