"""Convolution-network ops on image grids, channels first (`[B, C, H, W]`, torch.nn.Conv2d's and ONNX
Conv's layout): a general 2-D convolution (`conv2d`: kernel, stride, padding, dilation, groups, bias or
not) and batch normalisation with running statistics (`batch_norm`).

Together they say what CNN-flavoured transformers need beyond `patch_embed`: SegFormer's overlapping
patch embeddings, spatial-reduction attention and depthwise Mix-FFN, CvT's convolutional projections,
ConvNeXt's depthwise stages, a ResNet backbone. Parameters are named and shaped as torch's (`weight [O,
C / groups, k, k]`, `bias [O]`; BatchNorm2d's `weight`, `bias`, `running_mean`, `running_var`), so a
reference's weights load by plain renames.

`batch_norm`'s running statistics are *state*, not parameters (`OpDef.state`): they are loaded, saved and
exported like weights, but not counted (torch keeps them as buffers) nor trained. Its step counter
(torch's `num_batches_tracked`, an integer) stays inside the torch module: weight maps and ONNX carry
floating-point tensors only, so a map `ignore`s the reference's counter.
"""
from __future__ import annotations

from pydantic import Field

from ..base.dims import Dim
from .audio import groups_divide
from .base import (MIXES, REPLICATE, UNPLANNED, Attrs, DimAttr, OpDef, ShapeError, TensorType, expect_float,
                   expect_rank, keeps_float_inputs, numel, positive, register)
from .core import concrete


# ---------------------------------------------------------------- conv2d

class Conv2dAttrs(Attrs):
    dim_fields = ("out", "kernel", "stride", "padding", "dilation", "groups")
    out: DimAttr = Field(description="output channels")
    kernel: DimAttr = Field(description="kernel size k (a k × k window)")
    stride: DimAttr = Field(1, description="step between output pixels, along both axes")
    padding: DimAttr = Field(0, description="zeros added on every side (k // 2 keeps the size at stride 1, odd k)")
    dilation: DimAttr = Field(1, description="spacing between the kernel's taps")
    groups: DimAttr = Field(1, description="channel groups: output group g reads input group g only (weight "
                                           "`[out, C / groups, k, k]`); groups = C = out is a depthwise conv")
    bias: bool = True

    @property
    def extent(self) -> int:
        """Input pixels one output pixel spans along an axis: d·(k − 1) + 1."""
        return self.dilation * (self.kernel - 1) + 1


def conv_size(a: Conv2dAttrs, n: Dim) -> Dim:
    """Output size along an axis of size `n`: floor((n + 2p − d·(k − 1) − 1) / s) + 1, torch.nn.Conv2d's."""
    return (n + 2 * a.padding - a.extent) // a.stride + 1


def conv2d_weight(a: Conv2dAttrs, channels: int) -> tuple[int, int, int, int]:
    return (a.out, channels // a.groups, a.kernel, a.kernel)


def _conv2d_channels(a: Conv2dAttrs, x: TensorType) -> int:
    expect_rank(x, "x", 4, what=" ([B, channels, height, width])")
    c = concrete(x.shape[1], "x", "the channel dimension")
    for name in ("out", "kernel", "stride", "dilation", "groups"):
        positive(getattr(a, name), name)
    if a.padding < 0:
        raise ShapeError("GF102", f"`padding` must be ≥ 0, got {a.padding}", attr="padding")
    groups_divide(a.groups, c, "x", out=a.out)
    return c


def _conv2d_shape(a: Conv2dAttrs, ins):
    x = ins["x"]
    _conv2d_channels(a, x)
    expect_float(x, "x")
    sizes = []
    for axis, name in ((2, "height"), (3, "width")):
        n, size = x.shape[axis], conv_size(a, x.shape[axis])
        if size.is_const and size.value <= 0:
            raise ShapeError(
                "GF276", f"output {name} {size.value} ≤ 0: an input {name} of {n} + 2·{a.padding} padding is less "
                         f"than the {a.extent} pixels one output pixel reads (kernel {a.kernel}, dilation "
                         f"{a.dilation})", "x",
                help=f"floor(({n} + 2·{a.padding} − {a.extent}) / {a.stride}) + 1 = {size.value}: feed at least "
                     f"{max(a.extent - 2 * a.padding, 1)} pixels, pad more, or use a smaller kernel or dilation")
        sizes.append(size)
    return TensorType((x.shape[0], Dim.const(a.out), *sizes))


def _conv2d_params(a: Conv2dAttrs, ins):
    w = conv2d_weight(a, _conv2d_channels(a, ins["x"]))
    return {"weight": w, **({"bias": (a.out,)} if a.bias else {})}


def _conv2d_flops(a: Conv2dAttrs, ins, out):
    # a multiply and an add per weight tap per output pixel (the bias is not counted, as for conv1d and linear)
    return 2 * numel(out.shape) * (ins["x"].shape[1] // a.groups) * a.kernel * a.kernel


register(OpDef(
    "conv2d", "conv",
    "2-D convolution, channels first: `[B, C, H, W] → [B, out, H', W']` with H' = floor((H + 2·padding − "
    "dilation·(kernel − 1) − 1) / stride) + 1 (W' alike; symbolic where H, W are). A square `kernel`; "
    "`groups` splits the channels (groups = C = out: depthwise). Weight `[out, C / groups, kernel, kernel]`, "
    "bias `[out]` (torch.nn.Conv2d's layout). SegFormer's overlapping patch embeddings, spatial reduction and "
    "Mix-FFN; CvT's and ConvNeXt's convolutions.",
    Conv2dAttrs, ("x",), _conv2d_shape, params=_conv2d_params, flops=_conv2d_flops,
    sequence=MIXES, tp=REPLICATE, saves=keeps_float_inputs, matmul=True,
    example="dwconv: {op: conv2d, in: grid, out: d_ff, kernel: 3, padding: 1, groups: d_ff}",
))


# ---------------------------------------------------------------- batch_norm

class BatchNormAttrs(Attrs):
    eps: float = Field(1e-5, gt=0)
    momentum: float | None = Field(0.1, ge=0, le=1, description="weight of a training batch's statistics in the "
                                   "running ones (torch's convention: new = (1 − m)·running + m·batch); null: "
                                   "a cumulative average over the batches seen")
    affine: bool = Field(True, description="learn a per-channel scale `weight [C]` and shift `bias [C]`")
    track_running_stats: bool = Field(True, description="keep `running_mean` and `running_var` [C], used in eval "
                                                        "mode; false: batch statistics in both modes")


def _bn_channels(x: TensorType) -> int:
    expect_rank(x, "x", min_rank=2, what=" ([B, channels, ...])")
    return concrete(x.shape[1], "x", "the channel dimension")


def _bn_shape(a: BatchNormAttrs, ins):
    x = ins["x"]
    _bn_channels(x)
    expect_float(x, "x")
    per_channel = numel((x.shape[0], *x.shape[2:]))
    if per_channel.is_const and per_channel.value == 1:
        raise ShapeError("GF277", f"`x` {x} has one value per channel: batch statistics need more (the variance of "
                                  "one value is 0)", "x",
                         help="normalise over a batch of more than one value per channel (a larger batch or a "
                              "grid), or use `group_norm` / `norm`, whose statistics are per example")
    return x


def _bn_params(a: BatchNormAttrs, ins):
    c = _bn_channels(ins["x"])
    return {**({"weight": (c,), "bias": (c,)} if a.affine else {}),
            **({"running_mean": (c,), "running_var": (c,)} if a.track_running_stats else {})}


register(OpDef(
    "batch_norm", "conv",
    "Batch normalisation, channels first as torch.nn.BatchNorm1d/2d/3d: `[B, C, ...] → [B, C, ...]`. Training: "
    "each channel normalised by the mean and biased variance over the batch and every position, and the "
    "running statistics updated with `momentum` (unbiased variance, as torch). Eval: the running statistics "
    "(`running_mean`, `running_var`: state loaded and saved like weights, not counted as parameters). Then "
    "a per-channel scale and shift (`affine`). CvT's convolutional projections, ResNet backbones.",
    BatchNormAttrs, ("x",), _bn_shape, params=_bn_params,
    flops=lambda a, ins, out: 5 * numel(out.shape),   # statistics, normalisation, scale and shift
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs,
    state=lambda a: ("running_mean", "running_var"),
    example="bn: {op: batch_norm, in: conv, eps: 1e-5, momentum: 0.1}",
))
