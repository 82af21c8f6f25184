"""Torch lowerings of the audio ops (graphformer/ops/audio.py): a log-mel spectrogram (no parameters) and a
1-D convolution over time."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import tables
from .core import _param
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


class Conv1d(nn.Module):
    """torch.nn.Conv1d's computation without its own init (the builder initialises every parameter once)."""

    def __init__(self, channels: int, a):
        super().__init__()
        self.weight = _param(a.out, channels, a.kernel)
        self.bias = _param(a.out) if a.bias else None
        self.stride, self.padding, self.dilation = a.stride, a.padding, a.dilation

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)   # (B, out, T')

    def extra_repr(self) -> str:
        out, c, k = self.weight.shape
        return (f"{c}→{out}, kernel={k}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
                + ("" if self.bias is not None else ", no bias"))


@lowers("conv1d")
def _conv1d(node, types):
    return Conv1d(types["x"].shape[1].value, node.attrs)
