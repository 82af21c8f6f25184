"""Torch lowerings of the vision ops (graphformer/ops/vision.py). Parameter names follow each op's `params` rule."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .core import _param
from .lower import lowers


# ---------------------------------------------------------------- vision

class PatchEmbed(nn.Module):
    """A strided convolution flattened to tokens (or kept on its grid, channels last); Conv2d drops a
    remainder that does not fit a patch."""

    def __init__(self, channels: int, dim: int, patch: int, stride: tuple[int, int], bias: bool, grid: bool,
                 pad: tuple[int, int] = (0, 0)):
        super().__init__()
        self.weight = _param(dim, channels, patch, patch)
        self.bias = _param(dim) if bias else None
        self.stride, self.grid, self.pad = stride, grid, pad

    def forward(self, x):
        if any(self.pad):
            x = F.pad(x, (0, self.pad[1], 0, self.pad[0]))            # zeros bottom and right
        y = F.conv2d(x, self.weight, self.bias, stride=self.stride)   # (B, D, H', W')
        if self.grid:
            return y.permute(0, 2, 3, 1)                               # (B, H', W', D)
        return y.flatten(2).transpose(1, 2)                            # (B, H'·W', D)

    def extra_repr(self) -> str:
        d, c, p, _ = self.weight.shape
        return f"{c}→{d}, patch={p}, stride={self.stride}"


@lowers("patch_embed")
def _patch_embed(node, types):
    a, x = node.attrs, types["x"]
    pad = a.padding(x.shape[2].value, x.shape[3].value) if a.remainder == "pad" else (0, 0)
    return PatchEmbed(x.shape[1].value, a.dim, a.patch, a.strides, a.bias, a.grid, pad)


class PrependTokens(nn.Module):
    def __init__(self, count: int, dim: int):
        super().__init__()
        self.tokens = _param(count, dim)

    def forward(self, x):
        return torch.cat([self.tokens.expand(x.shape[0], -1, -1), x], dim=1)   # (B, count + n, d)


@lowers("prepend_tokens")
def _prepend(node, types):
    return PrependTokens(node.attrs.count, types["x"].shape[-1].value)


class Latents(nn.Module):
    def __init__(self, count: int, dim: int):
        super().__init__()
        self.latents = _param(count, dim)

    def forward(self, like):
        return self.latents.expand(like.shape[0], -1, -1)                      # (B, N, D)


@lowers("latents")
def _latents(node, types):
    return Latents(node.attrs.count, node.attrs.dim)
