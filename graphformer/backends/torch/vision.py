"""Torch lowerings of the vision, audio, sequence and multimodal ops (graphformer/ops/vision.py, audio.py,
sequence.py, multimodal.py). Parameter names follow each op's `params` rule."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import melscale
from .core import Fn, _param, activation
from .lower import lowers


# ---------------------------------------------------------------- vision

class PatchEmbed(nn.Module):
    """A strided convolution flattened to tokens; Conv2d drops a remainder that does not fit a patch."""

    def __init__(self, channels: int, dim: int, patch: int, stride: tuple[int, int], bias: bool):
        super().__init__()
        self.weight = _param(dim, channels, patch, patch)
        self.bias = _param(dim) if bias else None
        self.stride = stride

    def forward(self, x):
        y = F.conv2d(x, self.weight, self.bias, stride=self.stride)   # (B, D, H', W')
        return y.flatten(2).transpose(1, 2)                            # (B, H'·W', D)

    def extra_repr(self) -> str:
        d, c, p, _ = self.weight.shape
        return f"{c}→{d}, patch={p}, stride={self.stride}"


@lowers("patch_embed")
def _patch_embed(node, types):
    a = node.attrs
    sh = a.stride if a.stride is not None else a.patch
    sw = a.stride_w if a.stride_w is not None else sh
    return PatchEmbed(types["x"].shape[1].value, a.dim, a.patch, (sh, sw), a.bias)


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


# ---------------------------------------------------------------- audio

def mel_filters(bins: int, mels: int, sample_rate: int, f_min: float, f_max: float, scale: str) -> torch.Tensor:
    """Triangular filters `[bins, mels]` (graphformer/backends/melscale.py), as a float32 tensor."""
    return torch.from_numpy(melscale.mel_filters(bins, mels, sample_rate, f_min, f_max, scale)).float()


class Spectrogram(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.n_fft, self.hop, self.win, self.center = a.n_fft, a.step, a.window, a.center
        self.log, self.floor = a.log, a.floor
        top = a.f_max if a.f_max is not None else a.sample_rate / 2
        fb = mel_filters(a.n_fft // 2 + 1, a.mels, a.sample_rate, a.f_min, top, a.mel_scale)
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


# ---------------------------------------------------------------- sequence

def _slice(x, axis: int, start: int, stop: int | None):
    end = x.shape[axis] if stop is None else stop
    return x.narrow(axis, start, end - start)


def _interleave(*xs):
    return torch.stack(xs, dim=2).flatten(1, 2)          # (B, T, k, d) → (B, T·k, d): step-major


def _deinterleave(x, streams: int, index: int):
    return x.unflatten(1, (-1, streams))[:, :, index]    # (B, T, k, d) → (B, T, d)


@lowers("slice")
def _slice_op(node, types):
    a = node.attrs
    ax = a.axis % types["x"].rank
    index = ":, " * ax + f"{a.start}:{'' if a.stop is None else a.stop}"
    return Fn(partial(_slice, axis=ax, start=a.start, stop=a.stop), f"[{index}]", f"{{0}}[{index}]")


@lowers("transpose")
def _transpose(node, types):
    i, j = node.attrs.axes
    return Fn(partial(torch.transpose, dim0=i, dim1=j), f"transpose({i}, {j})", f"{{0}}.transpose({i}, {j})")


@lowers("unsqueeze")
def _unsqueeze(node, types):
    ax = node.attrs.axis
    return Fn(partial(torch.unsqueeze, dim=ax), f"unsqueeze({ax})", f"{{0}}.unsqueeze({ax})")


@lowers("interleave")
def _interleave_op(node, types):
    return Fn(_interleave, f"interleave {len(node.inputs)} streams", "torch.stack(({all},), dim=2).flatten(1, 2)")


@lowers("deinterleave")
def _deinterleave_op(node, types):
    a = node.attrs
    return Fn(partial(_deinterleave, streams=a.streams, index=a.index), f"stream {a.index} of {a.streams}",
              f"{{0}}.unflatten(1, (-1, {a.streams}))[:, :, {a.index}]")


class TableRow(nn.Module):
    def __init__(self, rows: int, dim: int, index: int):
        super().__init__()
        self.weight = _param(rows, dim)
        self.index = index

    def forward(self, x):
        return x + self.weight[self.index]

    def extra_repr(self) -> str:
        return f"row {self.index} of {self.weight.shape[0]}"


@lowers("table_row")
def _table_row(node, types):
    return TableRow(node.attrs.rows, types["x"].shape[-1].value, node.attrs.index)


class Vestigial(nn.Module):
    """Holds a parameter the forward pass never reads (see the op's doc)."""

    def __init__(self, rows: int, cols: int):
        super().__init__()
        self.weight = _param(rows, cols)

    def forward(self, x):
        return x


@lowers("vestigial")
def _vestigial(node, types):
    return Vestigial(node.attrs.rows, node.attrs.cols)


# ---------------------------------------------------------------- multimodal

def _token_at(x, ids, token: int | None):
    pos = ids.argmax(dim=-1) if token is None else (ids == token).int().argmax(dim=-1)   # (B,)
    return x[torch.arange(x.shape[0], device=x.device), pos]                           # (B, d)


@lowers("token_at")
def _token_at_op(node, types):
    a = node.attrs
    pos = "{1}.argmax(dim=-1)" if a.token is None else f"({{1}} == {a.token}).int().argmax(dim=-1)"
    return Fn(partial(_token_at, token=a.token), "argmax of ids" if a.token is None else f"first id {a.token}",
              "{0}[torch.arange({0}.shape[0], device={0}.device), " + pos + "]")


@lowers("l2_normalize")
def _l2(node, types):
    eps = node.attrs.eps
    return Fn(partial(F.normalize, dim=-1, eps=eps), "l2 normalize", f"F.normalize({{0}}, dim=-1, eps={eps!r})")


class CosineLogits(nn.Module):
    def __init__(self, normalize: bool, learned: bool, init: float):
        super().__init__()
        self.normalize, self.init = normalize, init
        self.logit_scale = nn.Parameter(torch.empty(())) if learned else None   # a scalar

    def init_parameters(self, generator=None) -> None:
        if self.logit_scale is not None:
            with torch.no_grad():
                self.logit_scale.fill_(self.init)

    def forward(self, a, b):
        if self.normalize:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        logits = a @ b.t()                                                      # (N_a, N_b)
        return logits * self.logit_scale.exp() if self.logit_scale is not None else logits


@lowers("cosine_logits")
def _cosine(node, types):
    a = node.attrs
    return CosineLogits(a.normalize, a.scale == "learned", a.init)


@lowers("quick_gelu")
def _quick_gelu(node, types):
    return activation("quick_gelu")


@lowers("scale")
def _scale(node, types):
    by = node.attrs.by
    return Fn(partial(torch.mul, other=by), f"× {by!r}", f"{{0}} * {by!r}")
