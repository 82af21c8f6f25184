"""ONNX lowerings of the convolution-network ops (ops/conv.py): `conv2d` is one Conv (`padding: same` as
explicit pads, the odd one at the end, as torch; a size-keeping one on a symbolic grid ends in a Reshape to
the input's sides, for shape inference, as conv1d's), `conv_transpose2d` one ConvTranspose; `batch_norm` is one
BatchNormalization in inference mode (the running statistics as its mean and variance), or, without
running statistics, the batch's own statistics computed in the graph (ReduceMean over every axis but the
channels), as torch does in both modes then. `interpolate` is a Resize whose attributes reproduce F.interpolate
(bilinear, bicubic), or, for nearest, two Gathers at torch's own source indices; `pool2d` is MaxPool or
AveragePool, whose ceil mode and padding count as torch's (checked against ONNX Runtime in
tests/integration/test_conv2d.py).

Adaptive pooling has no ONNX operator. `output: 1` is GlobalAveragePool / GlobalMaxPool (any input size);
otherwise it is exported only where it is a plain pool, an input size known at export and divisible by the
output (windows of H / h rows, disjoint, stride the same), and refused (GF298) elsewhere: ONNX pools take their
kernel as an attribute, fixed at export, while adaptive windows follow the input's size and, where h does not
divide H, differ in width from one window to the next."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...base.diagnostics import Diagnostic, SpecError
from ...ops.conv import pair, target_size, written
from .audio import padded
from .lower import NodeEmitter, lowers
from .vision import _resize_attrs


@lowers("conv2d")
def _conv2d(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    (top, bottom), (left, right) = a.pads
    if a.padding_mode != "zeros":   # padded first, as torch.nn.Conv2d does, and none in the Conv
        x, (top, bottom), (left, right) = padded(ctx, x, a.padding_mode, a.pads), (0, 0), (0, 0)
    ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if a.bias else [])
    sides = ctx.types["x"].shape[2:]
    keeps_size = node.shape.shape[2:] == sides and not all(n.is_const for n in sides)
    y = ctx.op("Conv", ins, final=not keeps_size, kernel_shape=list(pair(a.kernel)), strides=list(pair(a.stride)),
               pads=[top, left, bottom, right], dilations=list(pair(a.dilation)), group=a.groups)  # (B, out, H', W')
    if keeps_size:   # ONNX's Conv rule leaves a symbolic side unknown; a Reshape hands inference the input's
        hw = ctx.shape(ctx.inputs[0], 2, 4, "hw")     # the input's sides, before any padding
        size = ctx.op("Concat", [ctx.const([0, a.out], "batch_channels", np.int64), hw], "same_size", axis=0)
        ctx.op("Reshape", [y, size], final=True)


@lowers("conv_transpose2d")
def _conv_transpose2d(ctx: NodeEmitter, node) -> None:
    """One ConvTranspose (weight [C, out / groups, kh, kw], torch's layout). torch crops `padding` rows at the
    top and padding − output_padding at the bottom of the full result; those are ONNX's begin and end pads, so
    `output_padding` (which ONNX Runtime limits to less than the stride, torch to less than the stride or the
    dilation) is never needed. Where output_padding exceeds padding, the rows beyond the full result hold the
    bias only: zeros padded after the convolution, the bias added last."""
    (x,) = ctx.inputs
    a = node.attrs
    begin = list(pair(a.padding))
    end = [p - o for p, o in zip(begin, pair(a.output_padding))]
    extra = [max(-e, 0) for e in end]
    biased = a.bias and not any(extra)
    ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if biased else [])
    y = ctx.op("ConvTranspose", ins, final=biased or not (a.bias or any(extra)), kernel_shape=list(pair(a.kernel)),
               strides=list(pair(a.stride)), pads=begin + [max(e, 0) for e in end],
               dilations=list(pair(a.dilation)), group=a.groups)                         # (B, out, H', W')
    if any(extra):
        y = ctx.op("Pad", [y, ctx.const([0, 0, 0, 0, 0, 0, *extra], "extra_rows", np.int64)], "padded",
                   final=not a.bias)
    if a.bias and not biased:
        bias = ctx.op("Reshape", [ctx.param("bias"), ctx.const([-1, 1, 1], "per_channel", np.int64)], "bias")
        ctx.op("Add", [y, bias], final=True)


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


def _target_hw(ctx: NodeEmitter, node) -> str:
    """The output's [H', W'] (1-D int64): constants, or read at run time off `x` (× scale) or `like`."""
    a = node.attrs
    h, w = target_size(a, ctx.types["x"], ctx.types.get("like"))
    if h.is_const and w.is_const:
        return ctx.const([h.value, w.value], "hw", np.int64)
    if a.scale is not None:
        return ctx.op("Mul", [ctx.shape(ctx.inputs[0], 2, 4, "in_hw"), ctx.const([a.scale], "scale", np.int64)], "hw")
    return ctx.shape(ctx.inputs[1], 2, 4, "hw")


def _nearest(ctx: NodeEmitter, x: str, hw: str) -> str:
    """torch's nearest source index along H then W, min(floor(i · (n / n')), n − 1) in float32 as torch computes
    it, then a Gather: Resize's nearest modes divide by n' / n instead, which rounds otherwise at some sizes."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    for axis, tag in ((2, "h"), (3, "w")):
        n = ctx.shape(x, axis, axis + 1, f"{tag}_in")                                            # [n]
        out = ctx.op("Slice", [hw, *(ctx.const([v], f"{tag}_{k}", np.int64)
                                     for k, v in (("start", axis - 2), ("end", axis - 1)))], f"{tag}_out")
        ratio = ctx.op("Div", [ctx.op("Cast", [n], f"{tag}_in_f", to=f32),
                               ctx.op("Cast", [out], f"{tag}_out_f", to=f32)], f"{tag}_ratio")   # n / n'
        scalar = ctx.op("Squeeze", [out], f"{tag}_count")
        steps = ctx.op("Range", [ctx.const(0, f"{tag}_zero", np.int64), scalar, ctx.const(1, f"{tag}_one", np.int64)],
                       f"{tag}_steps")
        src = ctx.op("Floor", [ctx.op("Mul", [ctx.op("Cast", [steps], f"{tag}_steps_f", to=f32), ratio],
                                      f"{tag}_at")], f"{tag}_floor")
        last = ctx.op("Sub", [n, ctx.const([1], f"{tag}_1", np.int64)], f"{tag}_last")
        index = ctx.op("Min", [ctx.op("Cast", [src], f"{tag}_index", to=i64), last], f"{tag}_src")
        x = ctx.op("Gather", [x, index], f"{tag}", axis=axis, final=axis == 3)
    return x


@lowers("interpolate")
def _interpolate(ctx: NodeEmitter, node) -> None:
    x = ctx.inputs[0]
    a = node.attrs
    hw = _target_hw(ctx, node)
    if a.mode == "nearest":
        _nearest(ctx, x, hw)
        return
    attrs = _resize_attrs(a.mode, antialias=False)
    if a.align_corners:
        attrs["coordinate_transformation_mode"] = "align_corners"
    if a.scale is not None:   # torch scales the coordinates by 1 / k, as Resize does with `scales`
        scales = ctx.const([1.0, 1.0, float(a.scale), float(a.scale)], "scales", np.float32)
        ctx.op("Resize", [x, "", scales], final=True, **attrs)
        return
    sizes = ctx.op("Concat", [ctx.shape(x, 0, 2, "batch_channels"), hw], "sizes", axis=0)
    ctx.op("Resize", [x, "", "", sizes], final=True, **attrs)


@lowers("pool2d")
def _pool2d(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    if a.output is not None:
        _adaptive_pool2d(ctx, node)
        return
    ph, pw = pair(a.padding)
    attrs = dict(kernel_shape=list(pair(a.kernel)), strides=list(a.step), pads=[ph, pw, ph, pw],
                 ceil_mode=int(a.ceil_mode))
    if a.kind == "max":
        ctx.op("MaxPool", [x], final=True, dilations=list(pair(a.dilation)), **attrs)
    else:
        ctx.op("AveragePool", [x], final=True, count_include_pad=int(a.count_include_pad is not False), **attrs)


def _adaptive_pool2d(ctx: NodeEmitter, node) -> None:
    """A global pool for a 1 × 1 output; a fixed one where the input's sides are known and divisible by the
    output's (the module docstring says why nothing else)."""
    (x,) = ctx.inputs
    a = node.attrs
    out = pair(a.output)
    if out == (1, 1):
        ctx.op("GlobalMaxPool" if a.kind == "max" else "GlobalAveragePool", [x], final=True)
        return
    sides = ctx.types["x"].shape[2:]
    if not all(n.is_const and n.value % o == 0 for n, o in zip(sides, out)):
        raise SpecError([Diagnostic(
            "GF298", f"`{node.name}` pools a [{sides[0]}, {sides[1]}] grid adaptively to {written(a.output)}, which "
                     "ONNX cannot say: its pools have a fixed window, and adaptive windows follow the input's size "
                     "(unequal where the output's side does not divide the input's)", node.span, node=node.name,
            help="export at sizes that the output divides (`--set`/`dims` making the grid's sides multiples of "
                 f"{written(a.output)}), or pool to `output: 1` (a global pool, any size)")])
    kernel = [n.value // o for n, o in zip(sides, out)]
    ctx.op("MaxPool" if a.kind == "max" else "AveragePool", [x], final=True, kernel_shape=kernel, strides=kernel)
