"""Torch lowerings of the convolution-network ops (graphformer/ops/conv.py): a 2-D convolution and batch
normalisation, computed as torch.nn.Conv2d and torch.nn.BatchNorm2d compute them (F.conv2d, F.batch_norm),
with the parameters and buffers named as theirs; resizing and pooling are F.interpolate, F.max_pool2d and
F.avg_pool2d."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.conv import conv2d_weight, target_size
from .builder import INIT_STD
from .core import _param
from .lower import lowers


class Conv2d(nn.Module):
    """torch.nn.Conv2d's computation without its own init (the builder initialises every parameter once)."""

    def __init__(self, channels: int, a):
        super().__init__()
        self.weight = _param(*conv2d_weight(a, channels))
        self.bias = _param(a.out) if a.bias else None
        self.stride, self.padding, self.dilation, self.groups = a.stride, a.padding, a.dilation, a.groups

    def init_parameters(self, gen) -> None:
        """normal(0, 0.02) weights, zero bias: the builder's default for a weight of rank > 1."""
        self.weight.normal_(0.0, INIT_STD, generator=gen)
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        out, c, k, _ = self.weight.shape
        return (f"{c * self.groups}→{out}, kernel={k}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}" + f", groups={self.groups}" * (self.groups > 1)
                + ", no bias" * (self.bias is None))


@lowers("conv2d")
def _conv2d(node, types):
    return Conv2d(types["x"].shape[1].value, node.attrs)


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
    """F.max_pool2d or F.avg_pool2d, torch.nn.MaxPool2d's and AvgPool2d's computation."""

    def __init__(self, a):
        super().__init__()
        self.kind, self.kernel, self.stride, self.padding = a.kind, a.kernel, a.step, a.padding
        self.ceil_mode = a.ceil_mode
        self.count_include_pad = a.count_include_pad is not False

    def forward(self, x):
        if self.kind == "max":
            return F.max_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode)
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode,
                            count_include_pad=self.count_include_pad)

    def extra_repr(self) -> str:
        return (f"{self.kind}, kernel={self.kernel}, stride={self.stride}, padding={self.padding}"
                + ", ceil_mode" * self.ceil_mode
                + ", padding not counted" * (self.kind == "avg" and not self.count_include_pad))


@lowers("pool2d")
def _pool2d(node, types):
    return Pool2d(node.attrs)
