"""ONNX lowerings of the vision ops (ops/vision.py), with the semantics of backends/torch/vision.py.

Learned tokens and latent arrays are broadcast over the runtime batch with Expand, so nothing here fixes
`B` or the token count.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...base.diagnostics import Diagnostic, SpecError
from ...ops.vision import grid_of
from .lower import NodeEmitter, lowers


def _broadcast_batch(ctx: NodeEmitter, table: str, like: str, rows: int, width: int, tag: str,
                     final: bool = False) -> str:
    """A learned `[rows, width]` table repeated over the batch of `like`: `[B, rows, width]`."""
    batch = ctx.shape(like, 0, 1, f"{tag}_batch")                                            # [B]
    shape = ctx.op("Concat", [batch, ctx.const([rows, width], f"{tag}_rows", np.int64)], f"{tag}_shape", axis=0)
    one = ctx.op("Unsqueeze", [table, ctx.const([0], f"{tag}_axis", np.int64)], tag)         # (1, rows, width)
    return ctx.op("Expand", [one, shape], tag, final=final)                                  # (B, rows, width)


# ---------------------------------------------------------------- vision

@lowers("patch_embed")
def _patch_embed(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    if a.remainder == "pad":
        ph, pw = a.padding(ctx.types["x"].shape[2].value, ctx.types["x"].shape[3].value)
        if ph or pw:
            x = ctx.op("Pad", [x, ctx.const([0, 0, 0, 0, 0, 0, ph, pw], "pads", np.int64)], "pad")
    ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if a.bias else [])
    # a strided convolution, like torch.nn.Conv2d/Conv3d: trailing frames/rows/columns that fit no patch are
    # dropped; a video's kernel is 3-D (t, P, P)
    y = ctx.op("Conv", ins, kernel_shape=list(a.kernel), strides=list(a.conv_strides))     # (B, D, [nt,] nh, nw)
    if a.grid:
        ctx.op("Transpose", [y], perm=[0, 2, 3, 1], final=True)                              # (B, nh, nw, D)
        return
    y = ctx.op("Reshape", [y, ctx.const([0, 0, -1], "flatten", np.int64)], "flatten")       # (B, D, [nt·]nh·nw)
    ctx.op("Transpose", [y], perm=[0, 2, 1], final=True)                                     # (B, N, D), row-major


@lowers("prepend_tokens")
def _prepend_tokens(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    d = ctx.types["x"].shape[2].value
    if not a.count:                                 # no tokens to add
        ctx.op("Identity", [x], final=True)
        return
    tokens = _broadcast_batch(ctx, ctx.param("tokens"), x, a.count, d, "tokens")
    if not a.at:
        ctx.op("Concat", [tokens, x], axis=1, final=True)
        return
    head, tail = (_slice(ctx, x, start, end, 1, tag) for start, end, tag in ((0, a.at, "head"), (a.at, _END, "tail")))
    ctx.op("Concat", [head, tokens, tail], axis=1, final=True)


_END = 2**62   # Slice's "to the end"


def _slice(ctx: NodeEmitter, x: str, start: int, end: int, axis: int, tag: str) -> str:
    consts = [ctx.const([v], f"{tag}_{what}", np.int64) for v, what in ((start, "start"), (end, "end"), (axis, "axis"))]
    return ctx.op("Slice", [x, *consts], tag)


@lowers("latents")
def _latents(ctx: NodeEmitter, node) -> None:
    (like,) = ctx.inputs
    a = node.attrs
    _broadcast_batch(ctx, ctx.param("latents"), like, a.count, a.dim, "latents", final=True)


@lowers("mask_tokens")
def _mask_tokens(ctx: NodeEmitter, node) -> None:
    if len(ctx.inputs) == 1:                        # no mask fed: the tokens as they are
        ctx.op("Identity", ctx.inputs, final=True)
        return
    x, mask = ctx.inputs
    if ctx.types["mask"].dtype != "bool":
        mask = ctx.op("Cast", [mask], "mask", to=TensorProto.BOOL)
    where = ctx.op("Unsqueeze", [mask, ctx.const([-1], "axis", np.int64)], "mask")     # (B, n, 1)
    ctx.op("Where", [where, ctx.param("token"), x], final=True)


# Resize attributes that reproduce torch's F.interpolate(align_corners=False) exactly (checked against
# ONNX Runtime in tests/integration/test_dinov2.py): plain bicubic is Keys' a = −0.75 with edge samples
# repeated; torch's antialiased filter is a = −0.5 with the weights of samples outside the grid dropped
# and the rest renormalised (PIL's), which is ONNX's `exclude_outside` — and `antialias` needs opset 18.
def _resize_attrs(mode: str, antialias: bool) -> dict:
    attrs = {"mode": "cubic" if mode == "bicubic" else "linear", "coordinate_transformation_mode": "half_pixel"}
    if mode == "bicubic":
        attrs["cubic_coeff_a"] = -0.5 if antialias else -0.75
    if antialias:
        attrs.update(antialias=1, exclude_outside=1)
    return attrs


def _opset_refusal(node, opset: int) -> Diagnostic | None:
    if node.op == "grid_positions" and node.attrs.antialias and opset < 18:
        return Diagnostic(
            "GF233", f"`{node.name}` resizes its positions with antialiasing, which ONNX has from opset 18; "
                     f"this export asks for opset {opset}", node.span, node=node.name,
            help="export with `--opset 18` or later (an antialiased resize at an older opset would compute "
                 "other positions than torch)")
    return None


def opset_refusals(ir, opset: int) -> list[Diagnostic]:
    """Nodes whose ONNX form at `opset` would differ from torch's (GF233), found before any weights are read."""
    return [d for d in (_opset_refusal(n, opset) for n in ir.nodes()) if d]


@lowers("grid_positions")
def _grid_positions(ctx: NodeEmitter, node) -> None:
    x, image = ctx.inputs
    a = node.attrs
    refused = _opset_refusal(node, ctx.opset)
    if refused:
        raise SpecError([refused])
    d = ctx.types["x"].shape[2].value
    gh, gw = grid_of(a, ctx.types["image"])
    table = ctx.param("weight")
    if gh.is_const and gw.is_const and (gh.value, gw.value) == (a.table, a.table):
        ctx.op("Add", [x, table], final=True)       # the image's grid is the table's: nothing to resize
        return
    grid = _slice(ctx, table, a.prefix, a.rows, 0, "grid")
    grid = ctx.op("Reshape", [grid, ctx.const([1, a.table, a.table, d], "square", np.int64)], "square")
    grid = ctx.op("Transpose", [grid], "channels_first", perm=[0, 3, 1, 2])                  # (1, d, S, S)
    if gh.is_const and gw.is_const:
        sizes = ctx.const([1, d, gh.value, gw.value], "sizes", np.int64)
    else:   # the image's size at run time: (H // P, W // P)
        hw = ctx.op("Div", [ctx.shape(image, 2, 4, "image_hw"), ctx.const([a.patch], "patch", np.int64)], "grid_hw")
        sizes = ctx.op("Concat", [ctx.const([1, d], "sizes_head", np.int64), hw], "sizes", axis=0)
    grid = ctx.op("Resize", [grid, "", "", sizes], "grid", **_resize_attrs(a.mode, a.antialias))  # (1, d, h, w)
    grid = ctx.op("Transpose", [grid], "channels_last", perm=[0, 2, 3, 1])                   # (1, h, w, d)
    grid = ctx.op("Reshape", [grid, ctx.const([-1, d], "rows", np.int64)], "rows")            # (h·w, d)
    if a.prefix:
        grid = ctx.op("Concat", [_slice(ctx, table, 0, a.prefix, 0, "head"), grid], "table", axis=0)
    ctx.op("Add", [x, grid], final=True)
