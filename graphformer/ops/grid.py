"""Grid ops: tensors laid out as an image grid `[B, H, W, C]` (channels last), as in Swin.

Swin's shifted-window attention is written with the ordinary `attention` op between two reshapes:
`window_partition` cuts the grid into w×w windows (each a short sequence, windows stacked on the batch
axis), `attention` runs on them with the additive bias of `window_position_bias` (the learned relative
position table, plus the mask that keeps shifted windows from mixing regions), and `window_merge` puts
the windows back on the grid. `patch_merge` halves the grid between stages; `flatten_grid` turns it
into a token sequence. Why reshape ops and not attention attributes: ARCHITECTURE.md, "Decision".

All three window ops follow transformers' SwinLayer on sizes that don't fit: a grid that the window
does not divide is padded with zeros at the bottom and right (the padding is attended to, unmasked, as
there); a grid whose shorter side equals the window is one window and is never shifted; a window larger
than the grid is refused (GF190: the reference fails there too).
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from ..base.dims import Dim
from .base import (
    MIXES, UNPLANNED, keeps_float_inputs,
    Attrs, DimAttr, NoAttrs, OpDef, ShapeError, TensorType, register, expect_rank, expect_float, expect_dim,
    numel, positive,
)
from .core import concrete

# transformers' SwinLayer masks the pairs of tokens that the cyclic shift brought together with this
# logit offset, not −inf: kept so that outputs match to the last bit
SHIFT_MASK_VALUE = -100.0


def _grid(x: TensorType, port: str) -> None:
    expect_rank(x, port, 4, what=" ([B, H, W, C], channels last)")
    expect_float(x, port)


# ---------------------------------------------------------------- window geometry

class WindowAttrs(Attrs):
    dim_fields = ("window", "shift")
    window: DimAttr = Field(description="side w of the square windows")
    shift: DimAttr = Field(0, description="cyclic shift of the grid before partitioning (Swin: w // 2 in every "
                                          "second layer); 0: regular windows. Not applied where the grid's "
                                          "shorter side is w (one window across), as in transformers")


@dataclass(frozen=True)
class WindowGeometry:
    """Where the windows of one grid lie, after the reference's rules for sizes that don't fit."""
    height: int
    width: int
    window: int
    shift: int        # the shift in effect: 0 when the grid is a single window across

    @property
    def rows(self) -> int:
        return -(-self.height // self.window)

    @property
    def cols(self) -> int:
        return -(-self.width // self.window)

    @property
    def padded(self) -> tuple[int, int]:
        return self.rows * self.window, self.cols * self.window

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def area(self) -> int:
        return self.window * self.window


def window_geometry(a: WindowAttrs, grid: TensorType, port: str) -> WindowGeometry:
    """The windows of `grid [B, H, W, C]` under `a` (window, shift); a ShapeError if they don't fit."""
    _grid(grid, port)
    positive(a.window, "window")
    if not 0 <= a.shift < a.window:
        raise ShapeError("GF102", f"`shift` must be between 0 and the window minus one ({a.window - 1}), "
                         f"got {a.shift}", attr="shift", help="Swin shifts by half a window: `shift: window // 2`")
    h = _side(grid.shape[1], port, "the grid height")
    w = _side(grid.shape[2], port, "the grid width")
    if min(h, w) < a.window:
        raise ShapeError(
            "GF190", f"window {a.window} is larger than the {h}×{w} grid of `{port}`", port, attr="window",
            help=f"use a window of at most {min(h, w)}, or a larger image; transformers' SwinLayer clamps the "
                 f"window here but keeps the relative position table of the larger one, and fails")
    # transformers: a grid no larger than one window across is not shifted (there is nothing to shift into)
    return WindowGeometry(h, w, a.window, 0 if min(h, w) == a.window else a.shift)


def _side(d: Dim, port: str, what: str) -> int:
    if not d.is_const:
        raise ShapeError("GF124", f"{what} of `{port}` must be a concrete size to place the windows, got `{d}`",
                         port, help="give the image size as a param, not a symbol")
    return d.value


# ---------------------------------------------------------------- window_partition

def _partition_shape(a: WindowAttrs, ins):
    x = ins["x"]
    g = window_geometry(a, x, "x")
    concrete(x.shape[3], "x", "the channel dimension")
    return TensorType((x.shape[0] * g.count, Dim.const(g.area), x.shape[3]))


register(OpDef(
    "window_partition", "grid",
    "Cut a grid `[B, H, W, C]` into w×w windows, each a sequence of w² tokens in row-major order: "
    "`[B·nW, w², C]`, windows in row-major order within each image. With `shift: s` the grid is first "
    "rolled up and left by s (torch.roll by −s). A side that w does not divide is padded with zeros at "
    "the bottom/right to a multiple of w (nW = ⌈H/w⌉·⌈W/w⌉).",
    WindowAttrs, ("x",), _partition_shape,
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs,
    example="windows: {op: window_partition, window: 7, shift: 3}",
))


# ---------------------------------------------------------------- window_merge

def _merge_shape(a: WindowAttrs, ins):
    x, grid = ins["x"], ins["grid"]
    g = window_geometry(a, grid, "grid")
    expect_rank(x, "x", 3, what=" ([B·nW, w², C], windows)")
    expect_float(x, "x")
    expect_dim(x.shape[0], grid.shape[0] * g.count, "x", f"dimension 0 (batch × {g.count} windows)", x)
    expect_dim(x.shape[1], g.area, "x", f"dimension 1 (the {g.window}×{g.window} tokens of a window)", x)
    return TensorType(grid.shape[:3] + (x.shape[2],))


register(OpDef(
    "window_merge", "grid",
    "The inverse of `window_partition` with the same `window` and `shift`: windows `x [B·nW, w², C]` back "
    "onto the grid of `grid [B, H, W, ·]` (read for its shape only), rolled back by s and cropped to "
    "H×W: `[B, H, W, C]`.",
    WindowAttrs, ("x", "grid"), _merge_shape,
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs,
    example="merged: {op: window_merge, in: {x: attn, grid: norm1}, window: 7, shift: 3}",
))


# ---------------------------------------------------------------- window_position_bias

class WindowBiasAttrs(WindowAttrs):
    dim_fields = ("window", "shift", "heads")
    heads: DimAttr = Field(description="attention heads: one bias per head")


def _bias_shape(a: WindowBiasAttrs, ins):
    grid = ins["grid"]
    g = window_geometry(a, grid, "grid")
    positive(a.heads, "heads")
    # the shift mask differs between windows, so a shifted bias has one slice per window of every image
    batch = grid.shape[0] * g.count if g.shift else Dim.const(1)
    return TensorType((batch, Dim.const(a.heads), Dim.const(g.area), Dim.const(g.area)))


register(OpDef(
    "window_position_bias", "grid",
    "Swin's relative position bias, for the `bias` input of `attention` over the windows of "
    "`grid [B, H, W, C]` (read for its shape only). A learned table `table [(2w − 1)², heads]` holds one "
    "value per head and relative offset (Δrow, Δcol); token i of a window attends to token j with "
    "table[(Δrow + w − 1)·(2w − 1) + Δcol + w − 1]. Unshifted: `[1, heads, w², w²]`. With `shift`, "
    f"pairs of tokens that the roll brought together from different regions also get {SHIFT_MASK_VALUE:g} "
    "(transformers' mask): `[B·nW, heads, w², w²]`, in `window_partition`'s order.",
    WindowBiasAttrs, ("grid",), _bias_shape,
    params=lambda a, ins: {"table": ((2 * a.window - 1) ** 2, a.heads)},
    flops=lambda a, ins, out: numel(out.shape),
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs,
    example="rel_bias: {op: window_position_bias, in: norm1, heads: heads, window: 7, shift: 3}",
))


# ---------------------------------------------------------------- patch_merge, flatten_grid

def _patch_merge_shape(a, ins):
    x = ins["x"]
    _grid(x, "x")
    c = concrete(x.shape[3], "x", "the channel dimension")
    h, w = (_side(x.shape[i], "x", what) for i, what in ((1, "the grid height"), (2, "the grid width")))
    return TensorType((x.shape[0], Dim.const(-(-h // 2)), Dim.const(-(-w // 2)), Dim.const(4 * c)))


register(OpDef(
    "patch_merge", "grid",
    "Swin's patch merging, without its norm and linear: each 2×2 neighbourhood of `[B, H, W, C]` becomes "
    "one cell of `[B, ⌈H/2⌉, ⌈W/2⌉, 4C]`, its channels the cells (0,0), (1,0), (0,1), (1,1) in that "
    "order (row offset first, as transformers' SwinPatchMerging). An odd side is padded with zeros.",
    NoAttrs, ("x",), _patch_merge_shape,
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs,
    example="cells: {op: patch_merge}",
))


def _flatten_shape(a, ins):
    x = ins["x"]
    _grid(x, "x")
    return TensorType((x.shape[0], x.shape[1] * x.shape[2], x.shape[3]))


register(OpDef(
    "flatten_grid", "grid",
    "A grid `[B, H, W, C]` as a token sequence `[B, H·W, C]`, tokens in row-major order (what `patch_embed` "
    "gives without `grid: true`).",
    NoAttrs, ("x",), _flatten_shape,
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs,
    example="tokens: {op: flatten_grid}",
))
