"""Convolution-network ops on image grids, channels first (`[B, C, H, W]`, torch.nn.Conv2d's and ONNX
Conv's layout): a general 2-D convolution (`conv2d`: kernel, stride, padding, dilation, each one value or a
pair [h, w], `padding: same`, groups, bias or not) and its transpose (`conv_transpose2d`), batch
normalisation with running statistics (`batch_norm`), and resampling: `interpolate` resizes a grid
(nearest, bilinear, bicubic: F.interpolate) to a size, by an integer factor or to another grid's size, and
`pool2d` takes the max or the average over k × k windows (F.max_pool2d, F.avg_pool2d) or, adaptively, over
the windows that pool any grid to a fixed size (F.adaptive_max_pool2d, F.adaptive_avg_pool2d).

Together they say what CNN-flavoured transformers need beyond `patch_embed`: SegFormer's overlapping
patch embeddings, spatial-reduction attention and depthwise Mix-FFN, CvT's convolutional projections,
ConvNeXt's depthwise stages, a ResNet backbone, a U-Net decoder. Parameters are named and shaped as torch's
(`weight [O, C / groups, kh, kw]`, transposed `[C, O / groups, kh, kw]`, `bias [O]`; BatchNorm2d's `weight`, `bias`, `running_mean`, `running_var`), so a
reference's weights load by plain renames.

`batch_norm`'s running statistics are *state*, not parameters (`OpDef.state`): they are loaded, saved and
exported like weights, but not counted (torch keeps them as buffers) nor trained. Its step counter
(torch's `num_batches_tracked`, an integer) stays inside the torch module: weight maps and ONNX carry
floating-point tensors only, so a map `ignore`s the reference's counter.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, StrictInt, StrictStr

from ..base.dims import Dim, DimError, parse
from .audio import PADDING_MODE, PaddingMode, groups_divide, padding_fits
from .base import (MIXES, REPLICATE, UNPLANNED, Attrs, DimAttr, OpDef, ShapeError, TensorType, expect_float,
                   expect_rank, keeps, keeps_float_inputs, numel, positive, register)
from .core import concrete


# ---------------------------------------------------------------- conv2d

def _one_or_pair(v):
    if isinstance(v, (list, tuple)) and len(v) != 2:
        raise ValueError(f"expected one number or a pair [height, width], got {len(v)} entries")
    return v


# A size along both axes: one number (k × k) or a pair `[h, w]`, each a dimension expression over params.
DimPair = Annotated[Union[DimAttr, tuple[DimAttr, DimAttr]], BeforeValidator(_one_or_pair)]


def pair(v: int | tuple[int, int]) -> tuple[int, int]:
    """`3` → (3, 3); `(3, 5)` stays: the (height, width) of a square-or-not attribute."""
    return v if isinstance(v, tuple) else (v, v)


def pair_text(v: int | tuple[int, int]) -> str:
    """`3` or `3×5`: how module reprs and diagram labels write a size."""
    h, w = pair(v)
    return str(h) if h == w else f"{h}×{w}"


def written(v: int | tuple[int, int]) -> str:
    """`3` or `[3, 5]`: a size as a spec writes it, for messages."""
    return f"[{v[0]}, {v[1]}]" if isinstance(v, tuple) else str(v)


class Conv2dAttrs(Attrs):
    dim_fields = ("out", "kernel", "stride", "padding", "dilation", "groups")
    out: DimAttr = Field(description="output channels")
    kernel: DimPair = Field(description="kernel size: k (a k × k window) or [kh, kw]")
    stride: DimPair = Field(1, description="step between output pixels: one for both axes or [sh, sw]")
    padding: Union[DimPair, Literal["same"]] = Field(
        0, description="zeros added on both ends of an axis: one for both axes or [ph, pw] (k // 2 keeps the size "
                       "at stride 1, odd k); `same`: the output as large as the input (stride 1 only, as torch; "
                       "an even extent pads one more at the bottom and right)")
    padding_mode: PaddingMode = Field("zeros", description=PADDING_MODE)
    dilation: DimPair = Field(1, description="spacing between the kernel's taps: one for both axes or [dh, dw]")
    groups: DimAttr = Field(1, description="channel groups: output group g reads input group g only (weight "
                                           "`[out, C / groups, kh, kw]`); groups = C = out is a depthwise conv")
    bias: bool = True

    @property
    def extents(self) -> tuple[int, int]:
        """Input pixels one output pixel spans along each axis: d·(k − 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(pair(self.kernel), pair(self.dilation)))

    @property
    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Zeros added (before, after) along height and width; `same` pads d·(k − 1) in all, the odd one after
        (torch's F.conv2d with padding='same')."""
        if self.padding == "same":
            return tuple(((e - 1) // 2, e - 1 - (e - 1) // 2) for e in self.extents)
        return tuple((p, p) for p in pair(self.padding))


def conv_size(n: Dim, pads: tuple[int, int], extent: int, stride: int) -> Dim:
    """Output size along an axis of size `n`: floor((n + pads − d·(k − 1) − 1) / s) + 1, torch.nn.Conv2d's."""
    return (n + sum(pads) - extent) // stride + 1


def conv2d_weight(a: Conv2dAttrs, channels: int) -> tuple[int, int, int, int]:
    return (a.out, channels // a.groups, *pair(a.kernel))


def _positive_pairs(a, names: tuple[str, ...]) -> None:
    for name in names:
        for v in pair(getattr(a, name)):
            positive(v, name)


def _not_negative(a, name: str) -> None:
    v = getattr(a, name)
    if v != "same" and min(pair(v)) < 0:
        raise ShapeError("GF102", f"`{name}` must be ≥ 0, got {written(v)}", attr=name)


def _conv2d_channels(a: Conv2dAttrs, x: TensorType) -> int:
    expect_rank(x, "x", 4, what=" ([B, channels, height, width])")
    c = concrete(x.shape[1], "x", "the channel dimension")
    positive(a.out, "out"), positive(a.groups, "groups")
    _positive_pairs(a, ("kernel", "stride", "dilation"))
    _not_negative(a, "padding")
    if a.padding == "same" and pair(a.stride) != (1, 1):
        raise ShapeError("GF295", f"`padding: same` with `stride: {written(a.stride)}`: the output of a strided "
                                  "convolution cannot be as large as its input", attr="padding",
                         help="use stride 1 with `padding: same` (torch refuses it on strided convolutions), or give "
                              "the padding as numbers (k // 2 for an odd kernel)")
    groups_divide(a.groups, c, "x", out=a.out)
    padding_fits(a.padding_mode, a.pads, x.shape[2:], ("height", "width"))
    return c


def _conv2d_shape(a: Conv2dAttrs, ins):
    x = ins["x"]
    _conv2d_channels(a, x)
    expect_float(x, "x")
    sizes = []
    for axis, name, pads, e, s, k, d in zip((2, 3), ("height", "width"), a.pads, a.extents, pair(a.stride),
                                            pair(a.kernel), pair(a.dilation)):
        n, size = x.shape[axis], conv_size(x.shape[axis], pads, e, s)
        if size.is_const and size.value <= 0:
            raise ShapeError(
                "GF276", f"output {name} {size.value} ≤ 0: an input {name} of {n} + {sum(pads)} padding is less "
                         f"than the {e} pixels one output pixel reads (kernel {k}, dilation {d})", "x",
                help=f"floor(({n} + {sum(pads)} − {e}) / {s}) + 1 = {size.value}: feed at least "
                     f"{max(e - sum(pads), 1)} pixels, pad more, or use a smaller kernel or dilation")
        sizes.append(size)
    return TensorType((x.shape[0], Dim.const(a.out), *sizes))


def _conv2d_params(a: Conv2dAttrs, ins):
    w = conv2d_weight(a, _conv2d_channels(a, ins["x"]))
    return {"weight": w, **({"bias": (a.out,)} if a.bias else {})}


def _conv2d_flops(a: Conv2dAttrs, ins, out):
    # a multiply and an add per weight tap per output pixel (the bias is not counted, as for conv1d and linear)
    kh, kw = pair(a.kernel)
    return 2 * numel(out.shape) * (ins["x"].shape[1] // a.groups) * kh * kw


register(OpDef(
    "conv2d", "conv",
    "2-D convolution, channels first: `[B, C, H, W] → [B, out, H', W']` with H' = floor((H + 2·padding − "
    "dilation·(kernel − 1) − 1) / stride) + 1 (W' alike; symbolic where H, W are). `kernel`, `stride`, "
    "`padding` and `dilation` are one number for both axes or a pair `[h, w]`; `padding: same` keeps the size "
    "(stride 1); `padding_mode` zeros, reflect, replicate or circular, as torch's. `groups` splits the channels "
    "(groups = C = out: depthwise). Weight `[out, C / groups, kh, "
    "kw]`, bias `[out]` (torch.nn.Conv2d's layout). SegFormer's overlapping patch embeddings, spatial "
    "reduction and Mix-FFN; CvT's and ConvNeXt's convolutions.",
    Conv2dAttrs, ("x",), _conv2d_shape, params=_conv2d_params, flops=_conv2d_flops,
    sequence=MIXES, tp=REPLICATE, saves=keeps_float_inputs, matmul=True,
    example="dwconv: {op: conv2d, in: grid, out: d_ff, kernel: 3, padding: 1, groups: d_ff}",
))


# ---------------------------------------------------------------- conv_transpose2d

class ConvTranspose2dAttrs(Attrs):
    dim_fields = ("out", "kernel", "stride", "padding", "output_padding", "dilation", "groups")
    out: DimAttr = Field(description="output channels")
    kernel: DimPair = Field(description="kernel size: k (k × k) or [kh, kw]")
    stride: DimPair = Field(1, description="upsampling factor: one for both axes or [sh, sw]")
    padding: DimPair = Field(0, description="rows and columns cropped from both ends of the full output: "
                                            "dilation·(kernel − 1) − padding zeros of the equivalent convolution")
    output_padding: DimPair = Field(0, description="rows and columns added at the bottom and right, less than "
                                                   "the stride or the dilation: picks one of the input sizes a "
                                                   "strided conv2d maps to the same output")
    dilation: DimPair = Field(1, description="spacing between the kernel's taps")
    groups: DimAttr = Field(1, description="channel groups: weight `[C, out / groups, kh, kw]`")
    bias: bool = True


def conv_transpose_size(n: Dim, k: int, s: int, p: int, op: int, d: int) -> Dim:
    """torch.nn.ConvTranspose2d's output size: (n − 1)·s − 2·p + d·(k − 1) + output_padding + 1."""
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


def conv_transpose2d_weight(a: ConvTranspose2dAttrs, channels: int) -> tuple[int, int, int, int]:
    return (channels, a.out // a.groups, *pair(a.kernel))


def _conv_t_channels(a: ConvTranspose2dAttrs, x: TensorType) -> int:
    expect_rank(x, "x", 4, what=" ([B, channels, height, width])")
    c = concrete(x.shape[1], "x", "the channel dimension")
    positive(a.out, "out"), positive(a.groups, "groups")
    _positive_pairs(a, ("kernel", "stride", "dilation"))
    _not_negative(a, "padding"), _not_negative(a, "output_padding")
    for o, s, d in zip(pair(a.output_padding), pair(a.stride), pair(a.dilation)):
        if o >= max(s, d):
            raise ShapeError(
                "GF296", f"`output_padding: {written(a.output_padding)}` is not less than the stride "
                         f"({written(a.stride)}) or the dilation ({written(a.dilation)})",
                attr="output_padding",
                help="output_padding picks one of the `stride` input sizes a strided conv2d maps to one size: keep "
                     "it below the stride (or the dilation), as torch requires")
    groups_divide(a.groups, c, "x", out=a.out)
    return c


def _conv_t_shape(a: ConvTranspose2dAttrs, ins):
    x = ins["x"]
    _conv_t_channels(a, x)
    expect_float(x, "x")
    sizes = []
    for axis, name, k, s, p, o, d in zip((2, 3), ("height", "width"), pair(a.kernel), pair(a.stride),
                                         pair(a.padding), pair(a.output_padding), pair(a.dilation)):
        n = x.shape[axis]
        size = conv_transpose_size(n, k, s, p, o, d)
        if size.is_const and size.value <= 0:
            raise ShapeError(
                "GF296", f"output {name} {size.value} ≤ 0: `padding: {written(a.padding)}` crops more than the "
                         f"{size.value + 2 * p} rows the transposed convolution makes from {name} {n}", "x",
                help=f"({n} − 1)·{s} − 2·{p} + {d}·({k} − 1) + {o} + 1 = {size.value}: pad less, or feed a larger "
                     "grid")
        sizes.append(size)
    return TensorType((x.shape[0], Dim.const(a.out), *sizes))


def _conv_t_params(a: ConvTranspose2dAttrs, ins):
    w = conv_transpose2d_weight(a, _conv_t_channels(a, ins["x"]))
    return {"weight": w, **({"bias": (a.out,)} if a.bias else {})}


def _conv_t_flops(a: ConvTranspose2dAttrs, ins, out):
    # every input value is multiplied into kh·kw taps of out / groups channels, and added there
    kh, kw = pair(a.kernel)
    return 2 * numel(ins["x"].shape) * (a.out // a.groups) * kh * kw


register(OpDef(
    "conv_transpose2d", "conv",
    "Transposed 2-D convolution (the gradient of conv2d with respect to its input), channels first, as "
    "torch.nn.ConvTranspose2d: `[B, C, H, W] → [B, out, H', W']` with H' = (H − 1)·stride − 2·padding + "
    "dilation·(kernel − 1) + output_padding + 1 (W' alike; symbolic where H, W are). `kernel`, `stride`, "
    "`padding`, `output_padding` and `dilation` are one number or a pair `[h, w]`. Weight `[C, out / groups, "
    "kh, kw]` (torch's layout), bias `[out]`. Learned upsampling: U-Net and segmentation decoders, "
    "DETR-style mask heads.",
    ConvTranspose2dAttrs, ("x",), _conv_t_shape, params=_conv_t_params, flops=_conv_t_flops,
    sequence=MIXES, tp=REPLICATE, saves=keeps_float_inputs, matmul=True,
    example="up: {op: conv_transpose2d, in: grid, out: 64, kernel: 2, stride: 2}",
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
    dim_fields = ("kernel", "stride", "padding", "dilation", "output")
    kind: Literal["max", "avg"] = Field(description="the window's maximum or its mean")
    kernel: DimPair | None = Field(None, description="window size: k (k × k) or [kh, kw]; or, instead, `output`")
    stride: DimPair | None = Field(None, description="step between windows: one for both axes or [sh, sw] "
                                                     "(default: the kernel, as torch's)")
    padding: DimPair = Field(0, description="added on both ends of an axis, one for both axes or [ph, pw], at most "
                                            "half the kernel along it: max pooling never picks it (−∞), avg "
                                            "pooling counts it as zeros unless count_include_pad is false")
    dilation: DimPair = Field(1, description="max only: spacing between the window's taps, one for both axes or "
                                             "[dh, dw] (torch.nn.MaxPool2d's; AvgPool2d has none)")
    ceil_mode: bool = Field(False, description="round the number of windows up, keeping a last partial window "
                                               "that starts inside the input or its left/top padding")
    count_include_pad: bool | None = Field(None, description="avg only: divide by the whole window, padding "
                                                              "included (torch's default, true), or by the "
                                                              "input pixels it covers")
    output: DimPair | None = Field(None, description="adaptive pooling instead of `kernel`: the output's size, h "
                                                     "(h × h) or [h, w], from any input size; output row i pools "
                                                     "input rows floor(i·H/h) to ceil((i + 1)·H/h) − 1, as "
                                                     "torch.nn.AdaptiveAvgPool2d / AdaptiveMaxPool2d")

    @property
    def step(self) -> tuple[int, int]:
        """The (height, width) stride; the kernel's where none is given."""
        return pair(self.kernel if self.stride is None else self.stride)

    @property
    def extents(self) -> tuple[int, int]:
        """Input pixels one window spans along each axis: d·(k − 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(pair(self.kernel), pair(self.dilation)))


def adaptive_windows(n: int, o: int) -> list[tuple[int, int]]:
    """The [start, end) input rows of each of `o` adaptive windows over `n` rows (aten's start_index,
    end_index): they tile the input when o divides n, and overlap or repeat rows otherwise."""
    return [(i * n // o, -(-(i + 1) * n // o)) for i in range(o)]


def _adaptive_taps(n: Dim, o: int) -> Dim:
    """Input rows read along an axis, summed over the windows; where `n` is symbolic, n (exact when o divides
    n: the windows tile the input)."""
    return Dim.const(sum(e - b for b, e in adaptive_windows(n.value, o))) if n.is_const else n


def _adaptive_refusal(a: Pool2dAttrs) -> ShapeError | None:
    """GF297: adaptive pooling (`output`) and fixed windows (`kernel`) are two ways to pool, not one."""
    if (a.kernel is None) == (a.output is None):
        return ShapeError("GF297", "`pool2d` needs " + ("`kernel` or `output`, got neither" if a.kernel is None else
                                                        "one of `kernel` and `output`, got both"),
                          attr=None if a.kernel is None else "output",
                          help="`kernel: k` pools k × k windows (stride, padding as torch's MaxPool2d / AvgPool2d); "
                               "`output: [h, w]` pools any input to h × w (AdaptiveMaxPool2d / AdaptiveAvgPool2d)")
    fixed = [n for n, set_ in (("stride", a.stride is not None), ("padding", a.padding != 0),
                               ("ceil_mode", a.ceil_mode), ("count_include_pad", a.count_include_pad is not None))
             if set_]
    if a.output is not None and fixed:
        return ShapeError("GF297", f"`{fixed[0]}` applies to fixed windows (`kernel`), not to adaptive pooling "
                                   "(`output`), whose windows follow from the input's size", attr=fixed[0],
                          help=f"drop `{fixed[0]}`, or pool fixed windows with `kernel` instead of `output`")
    return None


def pool_size(n: Dim, e: int, s: int, p: int, ceil_mode: bool) -> Dim:
    """Windows spanning `e` pixels (d·(k − 1) + 1) along an axis of size `n`, torch's pooling_output_shape:
    floor((n + 2p − e) / s) + 1; in ceil mode ceil(...) + 1, less a last window starting beyond n + p, which
    is min((n + 2p − e + s − 1) // s, (n + p − 1) // s) + 1: the second is the smaller exactly when p + s > e,
    so it stays symbolic."""
    if not ceil_mode:   # the + 1 folded into the division: `H // 2` for k = s = 2
        return (n + 2 * p - e + s) // s
    return (n + p - 1 + s) // s if p + s > e else (n + 2 * p - e + 2 * s - 1) // s


def _pool2d_windows(a: Pool2dAttrs) -> None:
    """The fixed windows' attributes: positive, padding at most half the kernel (torch's rule), dilation and
    count_include_pad only where torch takes them."""
    _positive_pairs(a, ("kernel", "dilation"))
    for v in pair(a.step):
        positive(v, "stride")
    _not_negative(a, "padding")
    if any(p > k // 2 for p, k in zip(pair(a.padding), pair(a.kernel))):
        half = written(tuple(k // 2 for k in pair(a.kernel))) if isinstance(a.kernel, tuple) else a.kernel // 2
        raise ShapeError("GF290", f"`padding` {written(a.padding)} is more than half the kernel "
                                  f"({written(a.kernel)}): a window could hold padding only", attr="padding",
                         help=f"pad at most {half} (torch refuses more), or widen the kernel")
    if a.kind == "max" and a.count_include_pad is not None:
        raise ShapeError("GF290", "`count_include_pad` applies to avg pooling only: max pooling never picks "
                                  "padding", attr="count_include_pad", help="drop `count_include_pad`")
    if a.kind == "avg" and pair(a.dilation) != (1, 1):
        raise ShapeError("GF290", f"`dilation: {written(a.dilation)}` applies to max pooling only: torch's "
                                  "AvgPool2d has no dilation", attr="dilation",
                         help="drop `dilation`, or pool with `kind: max`")


def _pool2d_shape(a: Pool2dAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 4, what=" ([B, channels, height, width])")
    expect_float(x, "x")
    refused = _adaptive_refusal(a)
    if refused:
        raise refused
    if a.output is not None:
        _positive_pairs(a, ("output",))
        return TensorType((x.shape[0], x.shape[1], *map(Dim.const, pair(a.output))), x.dtype)
    _pool2d_windows(a)
    sizes = []
    for axis, name, e, s, p in zip((2, 3), ("height", "width"), a.extents, a.step, pair(a.padding)):
        n = x.shape[axis]
        if n.is_const and n.value + 2 * p < e:
            raise ShapeError(
                "GF290", f"the input {name} {n.value} + 2·{p} padding is less than the {e}-pixel window: there is "
                         "no output", "x",
                help=f"feed at least {e - 2 * p} pixels, pad more or use a smaller kernel"
                     + " or dilation" * (e > pair(a.kernel)[axis - 2]))
        sizes.append(pool_size(n, e, s, p, a.ceil_mode))
    return TensorType((x.shape[0], x.shape[1], *sizes), x.dtype)


def _pool2d_flops(a: Pool2dAttrs, ins, out):
    """A compare or an add per tap: kh·kw per output value, or, adaptive, every window's rows × columns."""
    if a.output is None:
        kh, kw = pair(a.kernel)
        return kh * kw * numel(out.shape)
    x, (oh, ow) = ins["x"], pair(a.output)
    return numel(x.shape[:2]) * _adaptive_taps(x.shape[2], oh) * _adaptive_taps(x.shape[3], ow)


register(OpDef(
    "pool2d", "conv",
    "Max or average pooling over kh × kw windows, channels first, as torch.nn.MaxPool2d / AvgPool2d: `[B, C, "
    "H, W] → [B, C, H', W']` with H' = floor((H + 2·padding − dilation·(kernel − 1) − 1) / stride) + 1 (ceil "
    "in `ceil_mode`, less a last window that would start in the right padding; symbolic where H, W are). "
    "`kernel`, `stride`, `padding` and `dilation` (max only) are one number for both axes or a pair `[h, w]`; "
    "`stride` defaults to the kernel; padding is never picked by max, and counted as zeros by avg unless "
    "`count_include_pad: false`. Adaptive pooling instead: `output: [h, w]` pools any H × W to h × w "
    "(AdaptiveAvgPool2d / AdaptiveMaxPool2d; `output: 1` is global pooling). A ResNet stem's max pool, a "
    "classifier's global average. No parameters.",
    Pool2dAttrs, ("x",), _pool2d_shape, flops=_pool2d_flops,
    sequence=MIXES, tp=UNPLANNED, saves=lambda c: keeps("x")(c) if c.attrs.kind == "max" else keeps()(c),
    example="pool: {op: pool2d, in: stem, kind: max, kernel: 3, stride: 2, padding: 1}",
))
