"""ONNX lowerings of the audio ops (ops/audio.py): `conv1d` is one Conv; the log-mel spectrogram equals the
torch backend's torch.stft path.

No FFT op is needed: frames are gathered from the (reflect-padded) waveform with a runtime index grid,
and one MatMul with a constant basis — the Hann window times [cos | −sin] of the DFT — gives the real
and imaginary parts side by side. Squaring them and projecting with the mel filters stacked twice adds
re² + im² inside the same MatMul. Every constant is computed in float64 with numpy and stored as float32.
"""
from __future__ import annotations


import numpy as np

from ..tables import mel_filters
from .lower import NodeEmitter, lowers


def dft_basis(n_fft: int, win: int) -> np.ndarray:
    """`[n_fft, 2·bins]`: periodic Hann window (centred in n_fft, as torch.stft pads it) × [cos | −sin]."""
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    bins = n_fft // 2 + 1
    angle = 2 * np.pi * np.outer(np.arange(n_fft), np.arange(bins)) / n_fft                    # (n_fft, bins)
    return window[:, None] * np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)


@lowers("spectrogram")
def _spectrogram(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    i64, f32 = np.int64, np.float32
    if a.center:  # reflect-pad n_fft // 2 samples on each side so frame t is centred on sample t·hop
        p = a.n_fft // 2
        x = ctx.op("Pad", [x, ctx.const([0, p, 0, p], "pads", i64)], "center", mode="reflect")
    # frame f covers samples f·hop ... f·hop + n_fft − 1
    offsets = np.arange(a.n_fft)[None, :]
    count = node.shape.shape[2]
    if count.is_const:  # a fixed-length waveform: a constant index grid keeps every dim static
        grid = ctx.const(np.arange(count.value)[:, None] * a.step + offsets, "grid", i64)  # (F, n_fft)
    else:
        grid = _runtime_grid(ctx, x, a.n_fft, a.step, offsets)
    frames = ctx.op("Gather", [x, grid], "frames", axis=1)                                  # (B, F, n_fft)
    spec = ctx.op("MatMul", [frames, ctx.const(dft_basis(a.n_fft, a.window), "dft", f32)], "dft")  # (B, F, 2·bins)
    power = ctx.op("Mul", [spec, spec], "power")
    fb = mel_filters(a.bins, a.mels, a.sample_rate, a.f_min, a.top, a.mel_scale)
    # the filters stacked twice sum re² and im² of each bin: one MatMul for |X|² and the mel projection
    mel = ctx.op("MatMul", [power, ctx.const(np.concatenate([fb, fb]), "mel_filters", f32)], "mel")  # (B, F, mels)
    if a.log:
        mel = ctx.op("Log", [ctx.op("Max", [mel, ctx.const(a.floor, "floor", f32)], "floor")], "log")
    ctx.op("Transpose", [mel], perm=[0, 2, 1], final=True)                                  # (B, mels, F)


def _runtime_grid(ctx: NodeEmitter, x: str, n_fft: int, hop: int, offsets: np.ndarray) -> str:
    """The (F, n_fft) sample indices of every frame of `x`, with F = (len − n_fft) // hop + 1 at run time."""
    i64 = np.int64
    length = ctx.op("Squeeze", [ctx.shape(x, 1, 2, "samples")], "samples")
    count = ctx.op("Div", [ctx.op("Sub", [length, ctx.const(n_fft, "n_fft", i64)], "frames"),
                           ctx.const(hop, "hop", i64)], "frames")
    count = ctx.op("Add", [count, ctx.const(1, "one", i64)], "frames")
    starts = ctx.op("Range", [ctx.const(0, "zero", i64), count, ctx.const(1, "step", i64)], "starts")
    starts = ctx.op("Unsqueeze", [ctx.op("Mul", [starts, ctx.const(hop, "stride", i64)], "starts"),
                                  ctx.const([1], "axis", i64)], "starts")                   # (F, 1)
    return ctx.op("Add", [starts, ctx.const(offsets, "offsets", i64)], "grid")


@lowers("conv1d")
def _conv1d(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if a.bias else [])
    ctx.op("Conv", ins, kernel_shape=[a.kernel], strides=[a.stride], pads=[a.padding, a.padding],
           dilations=[a.dilation], final=True)                                               # (B, out, T')
