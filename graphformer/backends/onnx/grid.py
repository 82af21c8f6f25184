"""ONNX lowerings of the grid ops (ops/grid.py), with the semantics of backends/torch/grid.py.

Every reshape leaves the batch to the runtime (-1, or the Shape of an input), so `B` stays a dynamic
axis; the grid's own sizes are constants (the window ops need a concrete grid). A roll is two Slices and
a Concat, as torch.onnx exports torch.roll.
"""
from __future__ import annotations

import numpy as np

from ...ops.grid import SHIFT_MASK_VALUE, window_geometry
from ..tables import shifted_window_mask, window_relative_index
from .lower import NodeEmitter, lowers

i64 = np.int64


def _roll(ctx: NodeEmitter, x: str, by: int, length: int, axis: int, tag: str) -> str:
    """torch.roll(x, by, axis) for 0 < |by| < length: the last `by` entries move to the front."""
    cut = (length - by) % length
    head = ctx.op("Slice", [x, ctx.const([cut], f"{tag}_cut", i64), ctx.const([length], f"{tag}_end", i64),
                            ctx.const([axis], f"{tag}_axis", i64)], f"{tag}_tail")
    tail = ctx.op("Slice", [x, ctx.const([0], f"{tag}_start", i64), ctx.const([cut], f"{tag}_cut2", i64),
                            ctx.const([axis], f"{tag}_axis2", i64)], f"{tag}_head")
    return ctx.op("Concat", [head, tail], tag, axis=axis)


def _roll_grid(ctx: NodeEmitter, x: str, by: int, height: int, width: int, tag: str) -> str:
    x = _roll(ctx, x, by, height, 1, f"{tag}_rows")
    return _roll(ctx, x, by, width, 2, f"{tag}_cols")


@lowers("window_partition")
def _window_partition(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    g = window_geometry(node.attrs, ctx.types["x"], "x")
    c = ctx.types["x"].shape[3].value
    (ph, pw), w = g.padded, g.window
    if (ph, pw) != (g.height, g.width):
        pads = [0, 0, 0, 0, 0, ph - g.height, pw - g.width, 0]                 # zeros bottom and right
        x = ctx.op("Pad", [x, ctx.const(pads, "pads", i64)], "pad")
    if g.shift:
        x = _roll_grid(ctx, x, -g.shift, ph, pw, "shift")
    x = ctx.op("Reshape", [x, ctx.const([-1, g.rows, w, g.cols, w, c], "cells", i64)], "cells")
    x = ctx.op("Transpose", [x], "windows", perm=[0, 1, 3, 2, 4, 5])                # (B, rows, cols, w, w, C)
    ctx.op("Reshape", [x, ctx.const([-1, g.area, c], "tokens", i64)], final=True)   # (B·nW, w², C)


@lowers("window_merge")
def _window_merge(ctx: NodeEmitter, node) -> None:
    x = ctx.inputs[0]
    g = window_geometry(node.attrs, ctx.types["grid"], "grid")
    c = ctx.types["x"].shape[2].value
    (ph, pw), w = g.padded, g.window
    cropped = (ph, pw) != (g.height, g.width)
    x = ctx.op("Reshape", [x, ctx.const([-1, g.rows, g.cols, w, w, c], "windows", i64)], "windows")
    x = ctx.op("Transpose", [x], "cells", perm=[0, 1, 3, 2, 4, 5])                  # (B, rows, w, cols, w, C)
    last = not (g.shift or cropped)
    x = ctx.op("Reshape", [x, ctx.const([-1, ph, pw, c], "grid", i64)], "grid", final=last)
    if g.shift:
        x = _roll_grid(ctx, x, g.shift, ph, pw, "unshift")
        if not cropped:
            ctx.op("Identity", [x], final=True)
    if cropped:
        ctx.op("Slice", [x, ctx.const([0, 0], "crop_start", i64), ctx.const([g.height, g.width], "crop_end", i64),
                         ctx.const([1, 2], "crop_axes", i64)], "crop", final=True)


@lowers("window_position_bias")
def _window_position_bias(ctx: NodeEmitter, node) -> None:
    (grid,) = ctx.inputs
    g = window_geometry(node.attrs, ctx.types["grid"], "grid")
    heads = node.attrs.heads
    index = ctx.const(window_relative_index(g.window), "index", i64)
    bias = ctx.op("Gather", [ctx.param("table"), index], "table", axis=0)                # (w², w², heads)
    bias = ctx.op("Transpose", [bias], "heads", perm=[2, 0, 1])
    bias = ctx.op("Unsqueeze", [bias, ctx.const([0], "axis", i64)], "bias", final=not g.shift)
    if not g.shift:
        return                                                                            # (1, heads, w², w²)
    ph, pw = g.padded
    mask = ctx.const(shifted_window_mask(ph, pw, g.window, g.shift, SHIFT_MASK_VALUE), "mask")
    bias = ctx.op("Add", [bias, mask], "masked")                                          # (nW, heads, w², w²)
    batch = ctx.shape(grid, 0, 1, "batch")
    shape = ctx.op("Concat", [batch, ctx.const([g.count, heads, g.area, g.area], "per_image", i64)], "shape",
                   axis=0)
    bias = ctx.op("Expand", [bias, shape], "images")                                       # (B, nW, heads, ·, ·)
    ctx.op("Reshape", [bias, ctx.const([-1, heads, g.area, g.area], "flat", i64)], final=True)


@lowers("patch_merge")
def _patch_merge(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    h, w = (ctx.types["x"].shape[i].value for i in (1, 2))
    if h % 2 or w % 2:
        x = ctx.op("Pad", [x, ctx.const([0, 0, 0, 0, 0, h % 2, w % 2, 0], "pads", i64)], "pad")
    cells = []
    for col in range(2):
        for row in range(2):
            tag = f"r{row}c{col}"
            cells.append(ctx.op("Slice", [x, ctx.const([row, col], f"{tag}_start", i64),
                                          ctx.const([h + 1, w + 1], f"{tag}_end", i64),
                                          ctx.const([1, 2], f"{tag}_axes", i64),
                                          ctx.const([2, 2], f"{tag}_steps", i64)], tag))
    ctx.op("Concat", cells, axis=-1, final=True)                                          # (B, ⌈H/2⌉, ⌈W/2⌉, 4C)


@lowers("flatten_grid")
def _flatten_grid(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    c = ctx.types["x"].shape[3].value
    ctx.op("Reshape", [x, ctx.const([0, -1, c], "tokens", i64)], final=True)
