"""ONNX lowerings of the audio ops (ops/audio.py): `conv1d` is one Conv (its weight computed in the graph
under `weight_norm`), `group_norm` one InstanceNormalization over the grouped channels; the log-mel
spectrogram equals the torch backend's torch.stft path.

No FFT op is needed: frames are gathered from the (reflect-padded) waveform with a runtime index grid,
and one MatMul with a constant basis — the Hann window times [cos | −sin] of the DFT — gives the real
and imaginary parts side by side. Squaring them and projecting with the mel filters stacked twice adds
re² + im² inside the same MatMul. Every constant is computed in float64 with numpy and stored as float32.
"""
from __future__ import annotations


import numpy as np

from ..tables import mel_filters
from .core import normed_weight
from .lower import NodeEmitter, lowers
from .past import carry_states, past_state_name


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
    """One Conv. Frames dropped at the end (`drop_last`) are, at stride 1, padding not added (the last
    outputs are the ones that read the end padding), else a Slice. A convolution that keeps its input's
    length (Mamba's causal conv, Wav2Vec2's SamePad) ends in a Reshape to that length: ONNX's Conv rule
    leaves a symbolic length unknown, and the Reshape hands shape inference the input's symbol."""
    (x,) = ctx.inputs
    a = node.attrs
    i64 = np.int64
    slot = ctx.state.past.state(node.name) if ctx.state.past is not None and a.padding else None
    if slot is not None:     # a causal one in a decoder step: the carried frames replace the left padding
        x = _carried_frames(ctx, slot, x, a.padding)
    unpadded = a.drop_last if a.stride == 1 and a.drop_last <= a.padding else 0
    pads = [a.padding, a.padding - unpadded]
    if a.padding_mode != "zeros":   # the frames padded first (a prefix of the end's pad is a shorter pad of it)
        x, pads = padded(ctx, x, a.padding_mode, [pads]), [0, 0]
    ins = [x, normed_weight(ctx, a.weight_norm, 3)] + ([ctx.param("bias")] if a.bias else [])
    conv = dict(kernel_shape=[a.kernel], strides=[a.stride], pads=[0, 0] if slot else pads,
                dilations=[a.dilation], group=a.groups)
    if slot is not None:
        unpadded = a.drop_last
    keeps_length = node.shape.shape[2] == ctx.types["x"].shape[2] and not ctx.types["x"].shape[2].is_const
    if not keeps_length and a.drop_last == unpadded:
        ctx.op("Conv", ins, final=True, **conv)                                                  # (B, out, T')
        return
    y = ctx.op("Conv", ins, **conv)
    if a.drop_last != unpadded:
        y = ctx.op("Slice", [y, ctx.const([0], "starts", i64), ctx.const([-a.drop_last], "ends", i64),
                             ctx.const([2], "axes", i64)], "drop_last", final=not keeps_length)  # drop the last frames
    if keeps_length:
        size = ctx.op("Concat", [ctx.const([0, a.out], "batch_channels", i64), ctx.shape(ctx.inputs[0], 2, 3, "length")],
                      "same_length", axis=0)
        ctx.op("Reshape", [y, size], final=True)


def padded(ctx: NodeEmitter, x: str, mode: str, pads) -> str:
    """`x` padded along its axes from 2 on by (before, after) each, as F.pad's reflect, replicate and circular
    modes: Pad's reflect and edge, and circular as the other end's Slices concatenated around `x` (Pad's
    `wrap` is opset 19's)."""
    i64 = np.int64
    if mode != "circular":
        zeros = [0, 0]
        flat = zeros + [b for b, _ in pads] + zeros + [e for _, e in pads]
        return ctx.op("Pad", [x, ctx.const(flat, f"{mode}_pads", i64)], f"{mode}_padded",
                      mode="reflect" if mode == "reflect" else "edge")
    for axis, (before, after) in enumerate(pads, start=2):
        parts = [x]
        for n, start, end in ((before, -before, np.iinfo(i64).max), (after, 0, after)):
            if n:
                cut = ctx.op("Slice", [x, ctx.const([start], f"wrap{axis}_start", i64),
                                       ctx.const([end], f"wrap{axis}_end", i64),
                                       ctx.const([axis], f"wrap{axis}_axis", i64)], f"wrap{axis}")
                parts = [cut] + parts if start < 0 else parts + [cut]
        if len(parts) > 1:
            x = ctx.op("Concat", parts, f"circular{axis}", axis=axis)
    return x


def _carried_frames(ctx: NodeEmitter, slot, x: str, reach: int) -> str:
    """The past frames (`past_states.{j}.frames` [B, C, reach]) then x's; the last `reach` of them are the
    `present_states` output."""
    joined = ctx.op("Concat", [past_state_name(slot.layer, "frames"), x], "with_past_frames", axis=2)
    last = ctx.op("Slice", [joined, ctx.const([-reach], "last_frames", np.int64),
                            ctx.const([np.iinfo(np.int64).max], "end", np.int64),
                            ctx.const([2], "time_axis", np.int64)], "present_frames")
    carry_states(ctx, slot, "frames", last)
    return joined


@lowers("group_norm")
def _group_norm(ctx: NodeEmitter, node) -> None:
    """InstanceNormalization over [B, groups, C / groups · positions] (unit scale, zero shift), the shape given
    back, then the per-channel scale and shift."""
    (x,) = ctx.inputs
    a, rank = node.attrs, ctx.types["x"].rank
    i64, f32 = np.int64, np.float32
    grouped = ctx.op("Reshape", [x, ctx.const([0, a.groups, -1], "grouped_shape", i64)], "grouped")
    normed = ctx.op("InstanceNormalization", [grouped, ctx.const(np.ones(a.groups), "ones", f32),
                                              ctx.const(np.zeros(a.groups), "zeros", f32)], "normed", epsilon=a.eps)
    if not a.affine:
        ctx.op("Reshape", [normed, ctx.op("Shape", [x], "shape")], final=True)
        return
    y = ctx.op("Reshape", [normed, ctx.op("Shape", [x], "shape")], "ungrouped")
    per_channel = ctx.const([-1] + [1] * (rank - 2), "channel_shape", i64)      # [C, 1, ...]: broadcast over positions
    scaled = ctx.op("Mul", [y, ctx.op("Reshape", [ctx.param("weight"), per_channel], "weight")], "scaled")
    ctx.op("Add", [scaled, ctx.op("Reshape", [ctx.param("bias"), per_channel], "bias")], final=True)
