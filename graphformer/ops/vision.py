"""Vision ops: patch embedding (images, and videos in tubelets), learned tokens put into a sequence, masked-patch tokens, learned 2-D positions
resized to the image's grid, learned latent arrays.

The other non-text families live beside this one: audio.py (spectrogram), sequence.py (slicing,
interleaving token streams), multimodal.py (pooling by id, normalisation, contrastive logits).
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from ..base.dims import Dim
from .base import (
    MIXES, POSITION, REPLICATE, UNPLANNED, keeps, keeps_float_inputs,
    Attrs, DimAttr, NoAttrs, OpDef, ShapeError, TensorType, register, expect_rank, expect_float, expect_dim,
    expect_dtype, numel, positive,
)
from .core import concrete


# ---------------------------------------------------------------- patch_embed

class PatchEmbedAttrs(Attrs):
    dim_fields = ("dim", "patch", "stride", "stride_w", "tubelet")
    dim: DimAttr = Field(description="width D of each patch embedding")
    patch: DimAttr = Field(description="side P of the square patch (the convolution kernel)")
    stride: DimAttr | None = Field(None, description="step between patches (default P: non-overlapping)")
    stride_w: DimAttr | None = Field(None, description="step along the width, if it differs from `stride`")
    tubelet: DimAttr | None = Field(
        None, description="frames t per tubelet: the input is a video `[B, C, T, H, W]` cut into t×P×P "
                          "tubelets, t frames apart (a 3-D convolution: ViViT, VideoMAE); unset: an image")
    bias: bool = True
    remainder: Literal["error", "drop", "pad"] = Field(
        "error", description="when the patches do not tile the input exactly: `error`, `drop` the last "
                             "rows/columns (and frames) as torch.nn.Conv2d/Conv3d does (AST's overlapping "
                             "patches), or `pad` with zeros at the bottom/right until they do (transformers' "
                             "Swin; needs a concrete image size; images only)")
    grid: bool = Field(False, description="keep the patches on their grid, `[B, H', W', D]` (channels last), "
                                          "for the grid ops (Swin's windows) instead of a sequence `[B, N, D]`; "
                                          "images only")

    @property
    def strides(self) -> tuple[int, int]:
        """(along the height, along the width): `stride` defaults to the patch, `stride_w` to `stride`."""
        sh = self.stride if self.stride is not None else self.patch
        return sh, self.stride_w if self.stride_w is not None else sh

    @property
    def kernel(self) -> tuple[int, ...]:
        """The convolution's kernel: (t, P, P) for a video, (P, P) for an image."""
        return ((self.tubelet,) if self.tubelet is not None else ()) + (self.patch, self.patch)

    @property
    def conv_strides(self) -> tuple[int, ...]:
        """The convolution's strides: tubelets never overlap in time (t, then the spatial strides)."""
        return ((self.tubelet,) if self.tubelet is not None else ()) + self.strides

    def padding(self, height: int, width: int) -> tuple[int, int]:
        """Zero rows and columns that `remainder: pad` adds at the bottom and right (0, 0 otherwise)."""
        if self.remainder != "pad":
            return 0, 0
        return tuple(_pad_to_tile(n, self.patch, s) for n, s in zip((height, width), self.strides))


def _pad_to_tile(n: int, p: int, s: int) -> int:
    """How many zeros make patches of side `p`, `s` apart, tile a side of `n`: up to p, then to a step."""
    grown = max(n, p)
    return grown - n + (-(grown - p)) % s


def _patches_along(size: Dim, p: int, s: int, what: str, remainder: str) -> Dim:
    """How many patches of side `p`, `s` apart, fit along one axis of `size`: (size − p) // s + 1."""
    if not size.is_const:
        # a symbolic side can't be checked here; `H // P` reads better than `(H − P) // P + 1`
        return size // p if s == p else (size - p) // s + 1
    n = size.value
    if remainder == "pad":
        n += _pad_to_tile(n, p, s)
    if n < p:
        raise ShapeError("GF120", f"patch size {p} is larger than the {what} {n}", "x")
    if (n - p) % s and remainder == "error":
        left = (n - p) % s
        raise ShapeError(
            "GF123", f"patch size {p} with stride {s} does not tile {what} {n}: ({n} - {p}) / {s} is not an "
                     f"integer", "x",
            help=f"make the {what} {n - left} or {n - left + s}, set `remainder: drop` to drop the last "
                 f"{left} {'rows' if what == 'height' else 'columns'} as torch.nn.Conv2d does, or `remainder: "
                 f"pad` to pad with zeros")
    return Dim.const((n - p) // s + 1)


def _tubelets_along(frames: Dim, t: int, remainder: str) -> Dim:
    """How many tubelets of t frames fit in `frames` (T // t); GF274 when they don't tile it."""
    if not frames.is_const:
        return frames // t
    n = frames.value
    if n < t or (n % t and remainder == "error"):
        fits = f"{n} frames are fewer than one tubelet of {t}" if n < t else \
            f"a tubelet of {t} frames does not tile {n} frames: {n} / {t} is not an integer"
        below, left = n - n % t, n % t
        drop = f", or set `remainder: drop` to drop the last {left} frame{'s' * (left > 1)} as torch.nn.Conv3d does"
        raise ShapeError("GF274", fits, "x", attr="tubelet",
                         help=f"make the frames {below or t}" + (f" or {below + t}{drop}" if below else ""))
    return Dim.const(n // t)


def _patch_shape(a: PatchEmbedAttrs, ins):
    x = ins["x"]
    video = a.tubelet is not None
    if video:
        for attr, text in (("grid", "grid: true"), ("remainder", "remainder: pad")):
            if (a.grid if attr == "grid" else a.remainder == "pad"):
                raise ShapeError(
                    "GF275", f"`{text}` is for images: a `tubelet` patch embedding gives a token sequence and "
                             f"pads nothing", attr=attr,
                    help=f"drop `{text}` (or `tubelet`, for an image `[B, C, H, W]`)")
        expect_rank(x, "x", 5, what=" ([B, C, T, H, W]: `tubelet` convolves over frames and pixels)")
    else:
        expect_rank(x, "x", 4, what=" ([B, C, H, W]" + ("; a video `[B, C, T, H, W]` needs `tubelet`)"
                                                         if x.rank == 5 else ")"))
    expect_float(x, "x")
    concrete(x.shape[1], "x", "the channel dimension")
    for v, name in ((a.dim, "dim"), (a.patch, "patch")) + tuple((s, "stride") for s in a.strides) \
            + (((a.tubelet, "tubelet"),) if video else ()):
        positive(v, name)
    sh, sw = a.strides
    if a.remainder == "pad":
        for i, what in ((2, "the image height"), (3, "the image width")):
            concrete(x.shape[i], "x", what + " (to size the padding of `remainder: pad`)")
    nt = _tubelets_along(x.shape[2], a.tubelet, a.remainder) if video else Dim.const(1)
    nh = _patches_along(x.shape[-2], a.patch, sh, "height", a.remainder)
    nw = _patches_along(x.shape[-1], a.patch, sw, "width", a.remainder)
    if a.grid:
        return TensorType((x.shape[0], nh, nw, Dim.const(a.dim)))
    # tokens in the order the convolution's output flattens: time-major, then rows, then columns
    return TensorType((x.shape[0], nt * nh * nw if video else nh * nw, Dim.const(a.dim)))


def _patch_params(a: PatchEmbedAttrs, ins):
    c = concrete(ins["x"].shape[1], "x", "the channel dimension")
    p = {"weight": (a.dim, c) + a.kernel}            # torch.nn.Conv2d / Conv3d's layout
    if a.bias:
        p["bias"] = (a.dim,)
    return p


def _patch_flops(a: PatchEmbedAttrs, ins, out):
    return 2 * numel(out.shape[:-1]) * a.dim * ins["x"].shape[1] * math.prod(a.kernel)


register(OpDef(
    "patch_embed", "vision",
    "Cut an image `[B, C, H, W]` into P×P patches (stride S, default P) and project each to D: "
    "`[B, N, D]` with N = ((H − P) // S + 1) · ((W − P) // S + 1), patches in row-major order (`grid: true`: "
    "`[B, H', W', D]`, the same patches on their grid). A strided convolution: weight `[D, C, P, P]` "
    "(torch.nn.Conv2d layout), bias `[D]`. With `tubelet: t`, a video `[B, C, T, H, W]` cut into t×P×P "
    "tubelets (ViViT, VideoMAE): N = (T // t) · (H′ · W′), tokens time-major then row-major, weight "
    "`[D, C, t, P, P]` (torch.nn.Conv3d layout).",
    PatchEmbedAttrs, ("x",), _patch_shape, params=_patch_params, flops=_patch_flops,
    sequence=MIXES, tp=REPLICATE, saves=keeps_float_inputs, matmul=True,
    example="patches: {op: patch_embed, in: pixels, patch: 16, dim: d_model}",
))


# ---------------------------------------------------------------- prepend_tokens

class PrependAttrs(Attrs):
    dim_fields = ("count", "at")
    count: DimAttr = Field(1, description="how many learned tokens (1 for [CLS]; AST has 2; 0 adds none, so "
                                          "that a param can switch DINOv2's registers off)")
    at: DimAttr = Field(0, description="where they go: before token `at` (0: in front; DINOv2's register "
                                       "tokens go after [CLS], `at: 1`)")


def _prepend_shape(a: PrependAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_float(x, "x")
    concrete(x.shape[2], "x", "the last dimension")
    if a.count < 0:
        raise ShapeError("GF102", f"`count` must be 0 or more, got {a.count}", attr="count")
    n = x.shape[1]
    if a.at < 0 or (n.is_const and a.at > n.value):
        raise ShapeError("GF102", f"`at` {a.at} is outside the {n} tokens of `x` (0 to {n})", attr="at")
    return TensorType((x.shape[0], x.shape[1] + a.count, x.shape[2]))


register(OpDef(
    "prepend_tokens", "vision",
    "Put `count` learned tokens (a [CLS] token, a distillation token, ...) in front of every sequence, or "
    "before token `at` (register tokens after [CLS]): `[B, n, d] → [B, count + n, d]`; parameter "
    "`tokens [count, d]`.",
    PrependAttrs, ("x",), _prepend_shape,
    params=lambda a, ins: {"tokens": (a.count, concrete(ins["x"].shape[2], "x", "the last dimension"))}
    if a.count else {},
    sequence=MIXES, tp=UNPLANNED, saves=keeps(), embedding=True,
    example="cls: {op: prepend_tokens, count: 1}",
))


# ---------------------------------------------------------------- latents

class LatentsAttrs(Attrs):
    dim_fields = ("count", "dim")
    count: DimAttr = Field(description="number N of latent vectors")
    dim: DimAttr = Field(description="width D of each latent vector")


def _latents_shape(a: LatentsAttrs, ins):
    like = ins["like"]
    expect_rank(like, "like", min_rank=1, what=" (its first dimension is the batch)")
    positive(a.count, "count"), positive(a.dim, "dim")
    return TensorType((like.shape[0], Dim.const(a.count), Dim.const(a.dim)))


register(OpDef(
    "latents", "vision",
    "A learned array `latents [N, D]`, repeated over the batch of `like` (whose values are not read): "
    "`[B, ...] → [B, N, D]`. Perceiver's latent array; also learned output queries.",
    LatentsAttrs, ("like",), _latents_shape,
    params=lambda a, ins: {"latents": (a.count, a.dim)},
    sequence=MIXES, tp=UNPLANNED, saves=keeps(), embedding=True,
    example="latent: {op: latents, in: inputs, count: 256, dim: d_latent}",
))


# ---------------------------------------------------------------- mask_tokens

def _mask_tokens_shape(a, ins):
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_float(x, "x")
    concrete(x.shape[2], "x", "the last dimension")
    m = ins.get("mask")
    if m is not None:
        expect_rank(m, "mask", 2, what=" ([B, n])")
        expect_dtype(m, "mask", ("bool", "int64"))
        expect_dim(m.shape[0], x.shape[0], "mask", "dimension 0 (batch)", m)
        expect_dim(m.shape[1], x.shape[1], "mask", "dimension 1 (tokens)", m)
    return x


register(OpDef(
    "mask_tokens", "vision",
    "Replace the tokens of `x [B, n, d]` where the optional `mask [B, n]` (bool, or 0/1 int) is true by a "
    "learned `token [d]` (masked image modelling: BEiT, SimMIM, DINOv2's `mask_token`); without a mask, `x` "
    "unchanged. Feed it from an `optional` input so that the token exists (and is counted) whether or not a "
    "mask is given.",
    NoAttrs, ("x", "mask?"), _mask_tokens_shape,
    params=lambda a, ins: {"token": (concrete(ins["x"].shape[2], "x", "the last dimension"),)},
    sequence=POSITION, tp=UNPLANNED, saves=keeps("mask"), embedding=True,
    example="masked: {op: mask_tokens, in: {x: patches, mask: bool_masked_pos}}",
))


# ---------------------------------------------------------------- grid_positions

class GridPositionsAttrs(Attrs):
    dim_fields = ("table", "patch", "prefix")
    table: DimAttr = Field(description="side S of the learned square grid of positions: the table holds "
                                       "`prefix` + S² rows (DINOv2: image_size // patch_size)")
    patch: DimAttr = Field(description="patch side P: the image `[B, C, H, W]` has an (H // P) × (W // P) grid")
    prefix: DimAttr = Field(1, description="leading tokens with a row of their own, not on the grid ([CLS])")
    mode: Literal["bicubic", "bilinear"] = Field(
        "bicubic", description="how the grid is resized (torch.nn.functional.interpolate, align_corners false)")
    antialias: bool = Field(False, description="resize with torch's antialiasing filter, as transformers' "
                                               "Dinov2WithRegisters does (Dinov2 does not); the ONNX form needs "
                                               "opset 18")

    @property
    def rows(self) -> int:
        return self.prefix + self.table * self.table


def grid_of(a: GridPositionsAttrs, image: TensorType) -> tuple[Dim, Dim]:
    """The image's patch grid (H // P, W // P), as transformers' Dinov2 computes it (the remainder dropped)."""
    return image.shape[2] // a.patch, image.shape[3] // a.patch


def _grid_positions_shape(a: GridPositionsAttrs, ins):
    x, image = ins["x"], ins["image"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_float(x, "x")
    concrete(x.shape[2], "x", "the last dimension")
    expect_rank(image, "image", 4, what=" ([B, C, H, W]: only its size is read)")
    positive(a.table, "table"), positive(a.patch, "patch")
    if a.prefix < 0:
        raise ShapeError("GF102", f"`prefix` must be 0 or more, got {a.prefix}", attr="prefix")
    gh, gw = grid_of(a, image)
    for side, what in ((gh, "height"), (gw, "width")):
        if side.is_const and side.value == 0:
            raise ShapeError("GF232", f"the image {what} {image.shape[2 if what == 'height' else 3]} is smaller "
                                      f"than one patch ({a.patch}): there is no grid to resize the positions to",
                             "image")
    want = gh * gw + a.prefix
    if x.shape[1] != want:
        raise ShapeError(
            "GF232", f"`x` has {x.shape[1]} tokens but the image's {gh} × {gw} patch grid (patch {a.patch}) and "
                     f"{a.prefix} leading token(s) make {want}", "x",
            help="`x` must hold the leading tokens, then the image's patches in row-major order: the "
                 "patch_embed of this image (same patch, no stride), with `prefix` tokens prepended")
    return x


def _grid_positions_flops(a: GridPositionsAttrs, ins, out):
    # the resize (16 taps bicubic, 4 bilinear, 2 flops each) of the grid's rows, then the addition
    gh, gw = grid_of(a, ins["image"])
    if gh == Dim.const(a.table) and gw == Dim.const(a.table):
        return numel(out.shape)                     # the table's own grid: nothing is resized
    taps = 16 if a.mode == "bicubic" else 4
    return 2 * taps * gh * gw * ins["x"].shape[2] + numel(out.shape)


register(OpDef(
    "grid_positions", "vision",
    "Add learned positions on a 2-D grid to `x [B, n, d]`, resized to the grid of `image [B, C, H, W]` "
    "(only its size is read): the table `weight [prefix + S², d]` holds `prefix` rows for the leading "
    "tokens ([CLS]) and an S × S grid, resized (bicubic, align_corners false, as transformers' Dinov2 "
    "interpolate_pos_encoding) to (H // P) × (W // P) when that differs. So a model trained at one image "
    "size runs at another: n must be prefix + (H // P)(W // P).",
    GridPositionsAttrs, ("x", "image"), _grid_positions_shape,
    params=lambda a, ins: {"weight": (a.rows, concrete(ins["x"].shape[2], "x", "the last dimension"))},
    flops=_grid_positions_flops,
    sequence=MIXES, tp=UNPLANNED, saves=keeps(), embedding=True,
    example="pos: {op: grid_positions, in: {x: cls, image: pixel_values}, table: 16, patch: 14}",
))
