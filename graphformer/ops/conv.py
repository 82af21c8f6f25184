"""Convolution-network ops on image grids, channels first (`[B, C, H, W]`, torch.nn.Conv2d's and ONNX
Conv's layout): a general 2-D convolution (`conv2d`: kernel, stride, padding, dilation, groups, bias or
not), batch normalisation with running statistics (`batch_norm`), and resampling: `interpolate` resizes a
grid (nearest, bilinear, bicubic: F.interpolate) to a size, by an integer factor or to another grid's size,
and `pool2d` takes the max or the average over k × k windows (F.max_pool2d, F.avg_pool2d).

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

from typing import Literal, Union

from pydantic import Field, StrictInt, StrictStr

from ..base.dims import Dim, DimError, parse
from .audio import groups_divide
from .base import (MIXES, REPLICATE, UNPLANNED, Attrs, DimAttr, OpDef, ShapeError, TensorType, expect_float,
                   expect_rank, keeps, keeps_float_inputs, numel, positive, register)
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


# ---------------------------------------------------------------- interpolate

class InterpolateAttrs(Attrs):
    shape_fields = ("size",)       # params bound by the expander; the rule wants constants
    dim_fields = ("scale",)
    size: tuple[Union[StrictInt, StrictStr], ...] | None = Field(
        None, description="the target `[height, width]` (numbers or params); or `scale`, or the input `like`")
    scale: DimAttr | None = Field(None, description="an integer factor: H' = scale · H, W' = scale · W "
                                                    "(symbolic where H, W are)")
    mode: Literal["nearest", "bilinear", "bicubic"] = Field(
        "nearest", description="torch's F.interpolate modes: nearest (the pixel at floor(i · H / H')), "
                               "bilinear or bicubic (Keys' a = −0.75)")
    align_corners: bool = Field(False, description="bilinear and bicubic: map the corner pixels' centres onto "
                                                   "each other (torch's align_corners=True) instead of the "
                                                   "grids' edges")

    @property
    def taps(self) -> int:
        """Input pixels one output pixel reads: 1, 4 or 16."""
        return {"nearest": 1, "bilinear": 4, "bicubic": 16}[self.mode]


def _bad_target(message: str, attr: str | None = None) -> ShapeError:
    return ShapeError("GF278", message, attr=attr,
                      help="give exactly one of `size: [height, width]` (numbers or params), `scale: k` (an "
                           "integer factor) or the input `like` (`in: {x: ..., like: grid}`: its height and width)")


def target_size(a: InterpolateAttrs, x: TensorType, like: TensorType | None) -> tuple[Dim, Dim]:
    """The output's (H', W'): from `size`, `scale` or the last two axes of `like` (exactly one of them)."""
    given = [n for n, v in (("size", a.size), ("scale", a.scale), ("like", like)) if v is not None]
    if len(given) != 1:
        raise _bad_target("`interpolate` needs one target size, got " + (" and ".join(f"`{g}`" for g in given)
                                                                          or "none"))
    if like is not None:
        expect_rank(like, "like", 4, what=" ([B, C, H, W]: only its height and width are read)")
        return like.shape[2], like.shape[3]
    if a.scale is not None:
        positive(a.scale, "scale")
        return x.shape[2] * a.scale, x.shape[3] * a.scale
    try:
        dims = [Dim.const(v) if isinstance(v, int) else parse(v) for v in a.size]
    except DimError as e:   # only when built by hand, not from a checked spec
        raise _bad_target(f"bad `size`: {e}", "size") from None
    if len(dims) != 2:
        raise _bad_target(f"`size` has {len(dims)} entries; it is [height, width]", "size")
    for d in dims:
        if not d.is_const:
            raise _bad_target(f"`size` must be concrete, got `{d}` (a symbol's value is only known at run time)",
                              "size")
        positive(d.value, "size")
    return dims[0], dims[1]


def _interpolate_shape(a: InterpolateAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 4, what=" ([B, channels, height, width])")
    expect_float(x, "x")
    if a.align_corners and a.mode == "nearest":
        raise ShapeError("GF278", "`align_corners` applies to bilinear and bicubic interpolation, not nearest",
                         attr="align_corners",
                         help="drop `align_corners` (torch refuses it with mode nearest) or choose `mode: bilinear`")
    h, w = target_size(a, x, ins.get("like"))
    return TensorType((x.shape[0], x.shape[1], h, w), x.dtype)


register(OpDef(
    "interpolate", "conv",
    "Resize a grid, channels first: `[B, C, H, W] → [B, C, H', W']`, as torch.nn.functional.interpolate. "
    "The target is one of `size: [H', W']` (numbers or params), `scale: k` (an integer factor, symbolic: "
    "k·H) or the input `like` (another grid whose H, W it takes: SegFormer's decode head upsamples every "
    "stage to the first's size). `mode` nearest (torch's: the pixel at floor(i · H / H')), bilinear or "
    "bicubic, `align_corners` as torch's. No parameters.",
    InterpolateAttrs, ("x", "like?"), _interpolate_shape,
    # bilinear and bicubic: a multiply and an add per tap per output value; nearest only moves values
    flops=lambda a, ins, out: 0 if a.mode == "nearest" else 2 * a.taps * numel(out.shape),
    sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="up: {op: interpolate, in: {x: proj, like: stage1}, mode: bilinear}",
))


# ---------------------------------------------------------------- pool2d

class Pool2dAttrs(Attrs):
    dim_fields = ("kernel", "stride", "padding")
    kind: Literal["max", "avg"] = Field(description="the window's maximum or its mean")
    kernel: DimAttr = Field(description="window size k (k × k)")
    stride: DimAttr | None = Field(None, description="step between windows, along both axes (default: the kernel, "
                                                     "as torch's)")
    padding: DimAttr = Field(0, description="added on every side, at most kernel // 2: max pooling never picks "
                                            "it (−∞), avg pooling counts it as zeros unless count_include_pad "
                                            "is false")
    ceil_mode: bool = Field(False, description="round the number of windows up, keeping a last partial window "
                                               "that starts inside the input or its left/top padding")
    count_include_pad: bool | None = Field(None, description="avg only: divide by the whole window, padding "
                                                              "included (torch's default, true), or by the "
                                                              "input pixels it covers")

    @property
    def step(self) -> int:
        return self.kernel if self.stride is None else self.stride


def pool_size(a: Pool2dAttrs, n: Dim) -> Dim:
    """Windows along an axis of size `n`, torch's pooling_output_shape: floor((n + 2p − k) / s) + 1; in
    ceil mode ceil(...) + 1, less a last window starting beyond n + p, which is min((n + 2p − k + s − 1)
    // s, (n + p − 1) // s) + 1: the second is the smaller exactly when p + s > k, so it stays symbolic."""
    k, s, p = a.kernel, a.step, a.padding   # the + 1 folded into the division: `H // 2` for k = s = 2
    if not a.ceil_mode:
        return (n + 2 * p - k + s) // s
    return (n + p - 1 + s) // s if p + s > k else (n + 2 * p - k + 2 * s - 1) // s


def _pool2d_shape(a: Pool2dAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 4, what=" ([B, channels, height, width])")
    expect_float(x, "x")
    positive(a.kernel, "kernel"), positive(a.step, "stride")
    if a.padding < 0:
        raise ShapeError("GF102", f"`padding` must be ≥ 0, got {a.padding}", attr="padding")
    if a.padding > a.kernel // 2:
        raise ShapeError("GF290", f"`padding` {a.padding} is more than half the kernel ({a.kernel}): a window "
                                  "could hold padding only", attr="padding",
                         help=f"pad at most {a.kernel // 2} (torch refuses more), or widen the kernel")
    if a.kind == "max" and a.count_include_pad is not None:
        raise ShapeError("GF290", "`count_include_pad` applies to avg pooling only: max pooling never picks "
                                  "padding", attr="count_include_pad", help="drop `count_include_pad`")
    sizes = []
    for axis, name in ((2, "height"), (3, "width")):
        n = x.shape[axis]
        if n.is_const and n.value + 2 * a.padding < a.kernel:
            raise ShapeError(
                "GF290", f"the input {name} {n.value} + 2·{a.padding} padding is less than the {a.kernel}-pixel "
                         "window: there is no output", "x",
                help=f"feed at least {a.kernel - 2 * a.padding} pixels, pad more or use a smaller kernel")
        sizes.append(pool_size(a, n))
    return TensorType((x.shape[0], x.shape[1], *sizes), x.dtype)


register(OpDef(
    "pool2d", "conv",
    "Max or average pooling over k × k windows, channels first, as torch.nn.MaxPool2d / AvgPool2d: `[B, C, "
    "H, W] → [B, C, H', W']` with H' = floor((H + 2·padding − kernel) / stride) + 1 (ceil in `ceil_mode`, "
    "less a last window that would start in the right padding; symbolic where H, W are). `stride` "
    "defaults to the kernel; padding is never picked by max, and counted as zeros by avg unless "
    "`count_include_pad: false`. A ResNet stem's max pool. No parameters.",
    Pool2dAttrs, ("x",), _pool2d_shape,
    flops=lambda a, ins, out: a.kernel * a.kernel * numel(out.shape),   # a compare or add per tap
    sequence=MIXES, tp=UNPLANNED, saves=lambda c: keeps("x")(c) if c.attrs.kind == "max" else keeps()(c),
    example="pool: {op: pool2d, in: stem, kind: max, kernel: 3, stride: 2, padding: 1}",
))
