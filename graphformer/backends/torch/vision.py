"""Torch lowerings of the vision ops (graphformer/ops/vision.py). Parameter names follow each op's `params` rule."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .core import _param
from .lower import lowers


# ---------------------------------------------------------------- vision

class PatchEmbed(nn.Module):
    """A strided convolution flattened to tokens (or kept on its grid, channels last): 2-D over an image,
    3-D over a video's tubelets; like torch.nn.Conv2d/Conv3d, a remainder that does not fit a patch is
    dropped."""

    def __init__(self, channels: int, dim: int, kernel: tuple[int, ...], stride: tuple[int, ...], bias: bool,
                 grid: bool, pad: tuple[int, int] = (0, 0)):
        super().__init__()
        self.weight = _param(dim, channels, *kernel)
        self.bias = _param(dim) if bias else None
        self.stride, self.grid, self.pad = stride, grid, pad
        self.conv = F.conv3d if len(kernel) == 3 else F.conv2d

    def forward(self, x):
        if any(self.pad):
            x = F.pad(x, (0, self.pad[1], 0, self.pad[0]))            # zeros bottom and right
        y = self.conv(x, self.weight, self.bias, stride=self.stride)  # (B, D, [T',] H', W')
        if self.grid:
            return y.permute(0, 2, 3, 1)                               # (B, H', W', D)
        return y.flatten(2).transpose(1, 2)                            # (B, [T'·]H'·W', D)

    def extra_repr(self) -> str:
        d, c, *kernel = self.weight.shape
        return f"{c}→{d}, kernel={tuple(kernel)}, stride={self.stride}"


@lowers("patch_embed")
def _patch_embed(node, types):
    a, x = node.attrs, types["x"]
    pad = a.padding(x.shape[2].value, x.shape[3].value) if a.remainder == "pad" else (0, 0)
    return PatchEmbed(x.shape[1].value, a.dim, a.kernel, a.conv_strides, a.bias, a.grid, pad)


class PrependTokens(nn.Module):
    def __init__(self, count: int, dim: int, at: int = 0):
        super().__init__()
        self.tokens = _param(count, dim) if count else None
        self.at = at

    def forward(self, x):
        if self.tokens is None:                                                 # count 0: nothing to add
            return x
        tokens = self.tokens.expand(x.shape[0], -1, -1)
        if self.at:                                                             # after the first `at` tokens
            return torch.cat([x[:, :self.at], tokens, x[:, self.at:]], dim=1)
        return torch.cat([tokens, x], dim=1)                                    # (B, count + n, d)


@lowers("prepend_tokens")
def _prepend(node, types):
    return PrependTokens(node.attrs.count, types["x"].shape[-1].value, node.attrs.at)


class Latents(nn.Module):
    def __init__(self, count: int, dim: int):
        super().__init__()
        self.latents = _param(count, dim)

    def forward(self, like):
        return self.latents.expand(like.shape[0], -1, -1)                      # (B, N, D)


@lowers("latents")
def _latents(node, types):
    return Latents(node.attrs.count, node.attrs.dim)


class MaskTokens(nn.Module):
    """The learned token where `mask` is true, `x` elsewhere (no mask: `x`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.token = _param(dim)

    def forward(self, x, mask=None):
        if mask is None:
            return x
        return torch.where(mask.bool().unsqueeze(-1), self.token.to(x.dtype), x)


@lowers("mask_tokens")
def _mask_tokens(node, types):
    return MaskTokens(types["x"].shape[-1].value)


def resize_grid(grid: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    """A `[S, S, d]` grid of rows resized to `size` (as transformers' Dinov2 does it: channels first, in
    float32, align_corners false): `[size[0] · size[1], d]`."""
    d = grid.shape[-1]
    y = grid.permute(2, 0, 1).unsqueeze(0).to(torch.float32)                 # (1, d, S, S)
    y = F.interpolate(y, size=size, mode=mode, align_corners=False, antialias=antialias).to(grid.dtype)
    return y[0].permute(1, 2, 0).reshape(-1, d)                              # (h·w, d), row-major


class GridPositions(nn.Module):
    """`x` + the learned table, its grid resized to the image's patch grid when that differs."""

    def __init__(self, side: int, prefix: int, dim: int, patch: int, mode: str, antialias: bool):
        super().__init__()
        self.weight = _param(prefix + side * side, dim)
        self.side, self.prefix, self.patch, self.mode, self.antialias = side, prefix, patch, mode, antialias

    def forward(self, x, image):
        size = (image.shape[-2] // self.patch, image.shape[-1] // self.patch)
        table = self.weight
        if size != (self.side, self.side):   # (resizing to the same size is exactly the identity)
            grid = table[self.prefix:].reshape(self.side, self.side, -1)
            table = torch.cat([table[:self.prefix], resize_grid(grid, size, self.mode, self.antialias)])
        return x + table

    def extra_repr(self) -> str:
        aa = ", antialias" if self.antialias else ""
        return f"{self.prefix} + {self.side}×{self.side} rows, patch={self.patch}, {self.mode}{aa}"


@lowers("grid_positions")
def _grid_positions(node, types):
    a = node.attrs
    return GridPositions(a.table, a.prefix, types["x"].shape[-1].value, a.patch, a.mode, a.antialias)
