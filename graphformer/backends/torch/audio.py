"""Torch lowerings of the audio ops (graphformer/ops/audio.py): a log-mel spectrogram (no parameters) and a
1-D convolution over time."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import tables
from ...ops.audio import weight_shape
from .core import NormedWeight, _param
from .lower import lowers


# ---------------------------------------------------------------- audio

def mel_filters(bins: int, mels: int, sample_rate: int, f_min: float, f_max: float, scale: str) -> torch.Tensor:
    """Triangular filters `[bins, mels]` (graphformer/backends/tables.py), as a float32 tensor."""
    return torch.from_numpy(tables.mel_filters(bins, mels, sample_rate, f_min, f_max, scale)).float()


class Spectrogram(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.n_fft, self.hop, self.win, self.center = a.n_fft, a.step, a.window, a.center
        self.log, self.floor = a.log, a.floor
        fb = mel_filters(a.bins, a.mels, a.sample_rate, a.f_min, a.top, a.mel_scale)
        # fixed functions of the attributes: buffers that stay out of the state dict
        self.register_buffer("filters", fb.to(torch.get_default_device()), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win, periodic=True), persistent=False)

    def forward(self, x):
        # FFTs have no half-precision CPU kernels (and lose too much in them): compute the features in
        # fp32 and hand them back in the model's dtype.
        spec = torch.stft(x.float(), self.n_fft, self.hop, self.win, self.window.float(), center=self.center,
                          pad_mode="reflect", return_complex=True)             # (B, bins, frames)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.filters.float().t(), power)                    # (B, mels, frames)
        out = torch.log(torch.clamp(mel, min=self.floor)) if self.log else mel
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop={self.hop}, win={self.win}, mels={self.filters.shape[1]}"


@lowers("spectrogram")
def _spectrogram(node, types):
    return Spectrogram(node.attrs)


class Conv1d(NormedWeight, nn.Module):
    """torch.nn.Conv1d's computation without its own init (the builder initialises every parameter once).
    With `weight_norm`, the weight is computed from `weight_g` and `weight_v` at each call (`NormedWeight`:
    transformers' Wav2Vec2 positional convolution)."""

    def __init__(self, channels: int, a):
        super().__init__()
        self.make_weight(weight_shape(a, channels), a.weight_norm)
        self.bias = _param(a.out) if a.bias else None
        self.stride, self.padding, self.dilation, self.groups = a.stride, a.padding, a.dilation, a.groups
        self.drop_last = a.drop_last
        self.mode = None if a.padding_mode == "zeros" else a.padding_mode   # F.pad's first, as torch.nn.Conv1d

    def init_parameters(self, gen) -> None:
        """normal(0, 0.02) weights (v; g = ‖v‖), zero bias."""
        self.init_weight(gen)
        if self.bias is not None:
            self.bias.zero_()

    cache = None      # generation's StateCache while a decoder runs a causal convolution (decoding.py's state
    layer_id = 0      # slot: `conv1d`'s carry trait), and this node's slot in it

    def forward(self, x):
        w = self.normed_weight()
        if self.cache is not None and self.padding:   # a decoder step: the carried frames replace the left padding
            x = torch.cat([self.cache.read(self.layer_id, "frames").to(x.dtype), x], dim=-1)
            self.cache.write(self.layer_id, "frames", x[..., x.shape[-1] - self.padding:])
            return F.conv1d(x, w, self.bias, 1, 0, self.dilation, self.groups)
        if self.mode is not None:
            x = F.pad(x, (self.padding, self.padding), mode=self.mode)
        y = F.conv1d(x, w, self.bias, self.stride, 0 if self.mode else self.padding, self.dilation, self.groups)
        return y[..., :y.shape[-1] - self.drop_last] if self.drop_last else y

    def extra_repr(self) -> str:
        out, c, k = self.stored_weight.shape
        extras = [f"groups={self.groups}"] * (self.groups > 1) + [f"weight_norm={self.norm_axis}"] * (
            self.norm_axis is not None) + [f"drop_last={self.drop_last}"] * (self.drop_last > 0) + [
            f"padding_mode={self.mode}"] * (self.mode is not None)
        return ", ".join([f"{c * self.groups}→{out}, kernel={k}, stride={self.stride}, padding={self.padding}, "
                          f"dilation={self.dilation}", *extras] + ([] if self.bias is not None else ["no bias"]))


@lowers("conv1d")
def _conv1d(node, types):
    return Conv1d(types["x"].shape[1].value, node.attrs)


class GroupNorm(nn.Module):
    """torch.nn.GroupNorm's computation, channels first; parameters initialised by the builder."""

    def __init__(self, channels: int, a):
        super().__init__()
        self.groups, self.eps = a.groups, a.eps
        self.weight = _param(channels) if a.affine else None
        self.bias = _param(channels) if a.affine else None

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, eps={self.eps}" + ("" if self.weight is not None else ", no affine")


@lowers("group_norm")
def _group_norm(node, types):
    return GroupNorm(types["x"].shape[1].value, node.attrs)
