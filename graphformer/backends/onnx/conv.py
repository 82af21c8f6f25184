"""ONNX lowerings of the convolution-network ops (ops/conv.py): `conv2d` is one Conv; `batch_norm` is one
BatchNormalization in inference mode (the running statistics as its mean and variance), or, without
running statistics, the batch's own statistics computed in the graph (ReduceMean over every axis but the
channels), as torch does in both modes then."""
from __future__ import annotations

import numpy as np

from .lower import NodeEmitter, lowers


@lowers("conv2d")
def _conv2d(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if a.bias else [])
    ctx.op("Conv", ins, final=True, kernel_shape=[a.kernel, a.kernel], strides=[a.stride, a.stride],
           pads=[a.padding] * 4, dilations=[a.dilation, a.dilation], group=a.groups)       # (B, out, H', W')


@lowers("batch_norm")
def _batch_norm(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    channels = ctx.types["x"].shape[1].value
    f32 = np.float32
    scale = ctx.param("weight") if a.affine else ctx.const(np.ones(channels), "ones", f32)
    shift = ctx.param("bias") if a.affine else ctx.const(np.zeros(channels), "zeros", f32)
    if a.track_running_stats:
        ctx.op("BatchNormalization", [x, scale, shift, ctx.param("running_mean"), ctx.param("running_var")],
               final=True, epsilon=a.eps)
        return
    rank = ctx.types["x"].rank
    axes = [0] + list(range(2, rank))
    mean = ctx.reduce("ReduceMean", x, axes, "mean", keepdims=1)
    centred = ctx.op("Sub", [x, mean], "centred")
    var = ctx.reduce("ReduceMean", ctx.op("Mul", [centred, centred], "square"), axes, "var", keepdims=1)
    std = ctx.op("Sqrt", [ctx.op("Add", [var, ctx.const(a.eps, "eps", f32)], "var_eps")], "std")
    normed = ctx.op("Div", [centred, std], "normed")
    per_channel = ctx.const([-1] + [1] * (rank - 2), "channel_shape", np.int64)   # [C, 1, ...]
    scaled = ctx.op("Mul", [normed, ctx.op("Reshape", [scale, per_channel], "scale")], "scaled")
    ctx.op("Add", [scaled, ctx.op("Reshape", [shift, per_channel], "shift")], final=True)
