"""Torch lowerings of the convolution-network ops (graphformer/ops/conv.py): 2-D convolutions, transposed or
not, and batch normalisation, computed as torch.nn.Conv2d, ConvTranspose2d and BatchNorm2d compute them
(F.conv2d, F.conv_transpose2d, F.batch_norm), with the parameters and buffers named as theirs; resizing and
pooling are F.interpolate, F.max_pool2d and F.avg_pool2d, or their adaptive forms."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.conv import conv2d_weight, conv_transpose2d_weight, pair, pair_text, target_size
from .builder import INIT_STD
from .core import _param
from .lower import lowers


class Conv2d(nn.Module):
    """torch.nn.Conv2d's computation (or ConvTranspose2d's, `transposed`) without its own init: the builder
    initialises every parameter once."""

    def __init__(self, weight: tuple[int, ...], a, transposed: bool = False):
        super().__init__()
        self.weight = _param(*weight)
        self.bias = _param(a.out) if a.bias else None
        self.transposed = transposed
        self.stride, self.dilation, self.groups = pair(a.stride), pair(a.dilation), a.groups
        self.padding = pair(a.padding) if transposed else tuple(before for before, _ in a.pads)
        # `same` with an even extent: one more zero after than before, padded first as torch's padding='same'
        # does (F.pad's order: left, right, top, bottom), without its warning about the copy
        (top, bottom), (left, right) = ((0, 0), (0, 0)) if transposed else a.pads
        self.extra = (0, right - left, 0, bottom - top) if (right - left, bottom - top) != (0, 0) else None
        # another padding mode: all of it by F.pad first, as torch.nn.Conv2d does, and none in the convolution
        self.mode = None if transposed or a.padding_mode == "zeros" else a.padding_mode
        if self.mode is not None:
            self.extra, self.padding = (left, right, top, bottom), (0, 0)
        self.output_padding = pair(a.output_padding) if transposed else None

    def init_parameters(self, gen) -> None:
        """normal(0, 0.02) weights, zero bias: the builder's default for a weight of rank > 1."""
        self.weight.normal_(0.0, INIT_STD, generator=gen)
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x):
        if self.transposed:
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                      self.groups, self.dilation)
        if self.extra is not None:
            x = F.pad(x, self.extra, mode=self.mode or "constant")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        a, b, kh, kw = self.weight.shape
        c, out = (a, b * self.groups) if self.transposed else (b * self.groups, a)
        if self.mode is not None:
            left, right, top, bottom = self.extra
            pad = pair_text((top, left)) + (f" (+{pair_text((bottom - top, right - left))} after)"
                                            if (bottom, right) != (top, left) else "") + f" {self.mode}"
        else:
            pad = pair_text(self.padding) + (f" (+{pair_text((self.extra[3], self.extra[1]))} after)"
                                             if self.extra else "")
        return (f"{c}→{out}, kernel={pair_text((kh, kw))}, stride={pair_text(self.stride)}, padding={pad}"
                + f", output_padding={pair_text(self.output_padding)}" * (self.transposed and any(self.output_padding))
                + f", dilation={pair_text(self.dilation)}" + f", groups={self.groups}" * (self.groups > 1)
                + ", no bias" * (self.bias is None))


@lowers("conv2d")
def _conv2d(node, types):
    return Conv2d(conv2d_weight(node.attrs, types["x"].shape[1].value), node.attrs)


class ConvTranspose2d(Conv2d):
    """torch.nn.ConvTranspose2d's computation: weight `[C, out / groups, kh, kw]`."""

    def __init__(self, channels: int, a):
        super().__init__(conv_transpose2d_weight(a, channels), a, transposed=True)


@lowers("conv_transpose2d")
def _conv_transpose2d(node, types):
    return ConvTranspose2d(types["x"].shape[1].value, node.attrs)


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm2d's computation for any rank ≥ 2 (F.batch_norm): batch statistics while training
    (updating the running ones in place, with `momentum`, or a cumulative average when it is None), the
    running statistics in eval mode. `running_mean` and `running_var` are persistent buffers, so the state
    dict holds them under torch's names; the step counter is an integer buffer kept out of it (see
    ops/conv.py)."""

    def __init__(self, channels: int, a):
        super().__init__()
        self.eps, self.momentum, self.track = a.eps, a.momentum, a.track_running_stats
        self.weight = _param(channels) if a.affine else None
        self.bias = _param(channels) if a.affine else None
        if self.track:
            self.register_buffer("running_mean", torch.empty(channels))
            self.register_buffer("running_var", torch.empty(channels))
            self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long), persistent=False)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def init_parameters(self, gen) -> None:
        """Unit scale, zero shift, running statistics of a standard normal (mean 0, variance 1): torch's."""
        if self.weight is not None:
            self.weight.fill_(1.0)
            self.bias.zero_()
        if self.track:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def forward(self, x):
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:   # a cumulative average: batch k weighs 1 / k
                factor = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or not self.track
        return F.batch_norm(x, self.running_mean if self.track else None, self.running_var if self.track else None,
                            self.weight, self.bias, batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[0] if self.weight is not None else '?'}, eps={self.eps}, "
                f"momentum={self.momentum}" + ", no affine" * (self.weight is None)
                + ", batch statistics only" * (not self.track))


@lowers("batch_norm")
def _batch_norm(node, types):
    return BatchNorm(types["x"].shape[1].value, node.attrs)


class Interpolate(nn.Module):
    """F.interpolate to a constant size, by an integer factor, or to the height and width of `like`."""

    def __init__(self, a, size: tuple[int, int] | None):
        super().__init__()
        self.size, self.scale, self.mode = size, a.scale, a.mode
        self.align_corners = a.align_corners if a.mode != "nearest" else None   # torch refuses it for nearest

    def forward(self, x, like=None):
        size = tuple(like.shape[-2:]) if like is not None else self.size
        return F.interpolate(x, size=size, scale_factor=None if size is not None else float(self.scale),
                             mode=self.mode, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        to = f"size={self.size}" if self.size else f"scale={self.scale}" if self.scale else "like"
        return f"{to}, {self.mode}" + ", align_corners" * bool(self.align_corners)


@lowers("interpolate")
def _interpolate(node, types):
    a = node.attrs
    size = None
    if a.size is not None:
        size = tuple(d.value for d in target_size(a, types["x"], None))
    return Interpolate(a, size)


class Pool2d(nn.Module):
    """F.max_pool2d or F.avg_pool2d, torch.nn.MaxPool2d's and AvgPool2d's computation; with `output`, their
    adaptive forms (AdaptiveMaxPool2d, AdaptiveAvgPool2d)."""

    def __init__(self, a):
        super().__init__()
        self.kind, self.ceil_mode = a.kind, a.ceil_mode
        if a.output is None:
            self.kernel, self.stride, self.padding = pair(a.kernel), a.step, pair(a.padding)
            self.dilation = pair(a.dilation)
        self.count_include_pad = a.count_include_pad is not False
        self.output = pair(a.output) if a.output is not None else None

    def forward(self, x):
        if self.output is not None:
            if self.kind == "max":
                return F.adaptive_max_pool2d(x, self.output)
            return F.adaptive_avg_pool2d(x, self.output)
        if self.kind == "max":
            return F.max_pool2d(x, self.kernel, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode)
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode,
                            count_include_pad=self.count_include_pad)

    def extra_repr(self) -> str:
        if self.output is not None:
            return f"{self.kind}, adaptive → {self.output[0]}×{self.output[1]}"
        return (f"{self.kind}, kernel={pair_text(self.kernel)}, stride={pair_text(self.stride)}, "
                f"padding={pair_text(self.padding)}"
                + f", dilation={pair_text(self.dilation)}" * (self.dilation != (1, 1))
                + ", ceil_mode" * self.ceil_mode
                + ", padding not counted" * (self.kind == "avg" and not self.count_include_pad))


@lowers("pool2d")
def _pool2d(node, types):
    return Pool2d(node.attrs)
