"""Torch lowerings of the grid ops (graphformer/ops/grid.py): Swin's windows, their position bias, patch
merging. Views and one copy per reshape, like transformers' window_partition / window_reverse; the
geometry (padding, effective shift) is decided once by the op registry's `window_geometry`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.grid import SHIFT_MASK_VALUE, WindowGeometry, window_geometry
from ..tables import shifted_window_mask, window_relative_index
from .core import _param
from .lower import lowers


def _geometry(node, types, port: str) -> WindowGeometry:
    return window_geometry(node.attrs, types[port], port)


class _Windows(nn.Module):
    def __init__(self, g: WindowGeometry):
        super().__init__()
        self.g = g

    def extra_repr(self) -> str:
        return f"window={self.g.window}, shift={self.g.shift}, grid={self.g.height}×{self.g.width}"


class WindowPartition(_Windows):
    def forward(self, x):                                                     # (B, H, W, C)
        g, c = self.g, x.shape[-1]
        (ph, pw), w = g.padded, g.window
        if (ph, pw) != (g.height, g.width):
            x = F.pad(x, (0, 0, 0, pw - g.width, 0, ph - g.height))           # zeros bottom and right
        if g.shift:
            x = torch.roll(x, (-g.shift, -g.shift), (1, 2))
        x = x.view(-1, g.rows, w, g.cols, w, c).transpose(2, 3)               # (B, rows, cols, w, w, C)
        return x.reshape(-1, g.area, c)                                       # (B·nW, w², C)


class WindowMerge(_Windows):
    def forward(self, x, grid):                                               # (B·nW, w², C)
        g, c = self.g, x.shape[-1]
        (ph, pw), w = g.padded, g.window
        x = x.view(-1, g.rows, g.cols, w, w, c).transpose(2, 3).reshape(-1, ph, pw, c)
        if g.shift:
            x = torch.roll(x, (g.shift, g.shift), (1, 2))
        if (ph, pw) != (g.height, g.width):
            x = x[:, : g.height, : g.width]
        return x                                                              # (B, H, W, C)


@lowers("window_partition")
def _window_partition(node, types):
    return WindowPartition(_geometry(node, types, "x"))


@lowers("window_merge")
def _window_merge(node, types):
    return WindowMerge(_geometry(node, types, "grid"))


class WindowPositionBias(nn.Module):
    """`table` gathered by the fixed relative index, plus the shift mask; both fixed tables are buffers that
    stay out of the state dict (functions of the window and grid, like transformers' index)."""

    def __init__(self, heads: int, g: WindowGeometry):
        super().__init__()
        self.g = g
        self.table = _param((2 * g.window - 1) ** 2, heads)
        index = torch.from_numpy(window_relative_index(g.window)).to(torch.get_default_device())
        self.register_buffer("index", index, persistent=False)
        mask = None
        if g.shift:
            ph, pw = g.padded
            mask = torch.from_numpy(shifted_window_mask(ph, pw, g.window, g.shift, SHIFT_MASK_VALUE))
            mask = mask.to(device=torch.get_default_device(), dtype=torch.get_default_dtype())
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, grid):
        bias = self.table[self.index].permute(2, 0, 1).unsqueeze(0)            # (1, heads, w², w²)
        if self.mask is None:
            return bias
        bias = bias + self.mask                                                # (nW, heads, w², w²)
        return bias.expand(grid.shape[0], *bias.shape).flatten(0, 1)           # (B·nW, heads, w², w²)

    def extra_repr(self) -> str:
        return f"heads={self.table.shape[1]}, window={self.g.window}, shift={self.g.shift}"


@lowers("window_position_bias")
def _window_position_bias(node, types):
    return WindowPositionBias(node.attrs.heads, _geometry(node, types, "grid"))


class PatchMerge(nn.Module):
    def forward(self, x):                                                     # (B, H, W, C)
        h, w = x.shape[1], x.shape[2]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        cells = [x[:, row::2, col::2] for col in range(2) for row in range(2)]   # (0,0) (1,0) (0,1) (1,1)
        return torch.cat(cells, dim=-1)                                       # (B, ⌈H/2⌉, ⌈W/2⌉, 4C)


@lowers("patch_merge")
def _patch_merge(node, types):
    return PatchMerge()


class FlattenGrid(nn.Module):
    def forward(self, x):
        return x.flatten(1, 2)                                                # (B, H·W, C)


@lowers("flatten_grid")
def _flatten_grid(node, types):
    return FlattenGrid()
