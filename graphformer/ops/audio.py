"""Audio ops: a waveform → log-mel spectrogram front end (no parameters; a fixed filter bank), the 1-D
convolution that speech encoders (Whisper, wav2vec 2.0) run over time (grouped, weight-normalised, its last
frames dropped: Wav2Vec2's positional convolution), and the group norm of Wav2Vec2's feature encoder.

`conv1d` is channels-first, `[B, C, T] → [B, out, T']`: the layout of torch.nn.Conv1d, ONNX Conv and
transformers' `input_features`, and the one `spectrogram` produces, so a front end chains
spectrogram → conv1d → conv1d with reference weights loading as stored (`[out, C, kernel]`); one
`transpose` then turns the frames into tokens `[B, T', d]`. `group_norm` takes the same channels-first
layout (torch.nn.GroupNorm's), so conv1d → group_norm → gelu chains without transposes.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..base.dims import Dim
from .base import (MIXES, RECURRENT, REPLICATE, UNPLANNED, keeps_float_inputs, Attrs, Carry, CarriedState, DimAttr,
                   OpDef, ShapeError, TensorType, register, expect_rank, expect_float, numel, positive)
from .core import concrete, normed_weights, weight_norm_field, weight_norm_flops


class SpectrogramAttrs(Attrs):
    dim_fields = ("sample_rate", "n_fft", "win_length", "hop", "mels")
    sample_rate: DimAttr = 16000
    n_fft: DimAttr = Field(400, description="FFT size; frequency bins = n_fft // 2 + 1")
    win_length: DimAttr | None = Field(None, description="Hann window length (default n_fft), centred in the FFT")
    hop: DimAttr | None = Field(None, description="samples between frames (default win_length // 2)")
    mels: DimAttr = Field(128, description="mel bands")
    f_min: float = Field(0.0, ge=0.0)
    f_max: float | None = Field(None, description="highest frequency of the filter bank (default sample_rate / 2)")
    mel_scale: Literal["htk", "slaney"] = "htk"
    center: bool = Field(True, description="reflect-pad n_fft // 2 samples on each side so frame t is centred "
                                           "on sample t·hop (torch.stft, librosa, torchaudio default)")
    log: bool = Field(True, description="natural log of the mel power, floored at `floor`")
    floor: float = Field(1e-10, gt=0.0)

    @model_validator(mode="after")
    def _frequencies(self):
        if not self.f_min < self.top <= self.sample_rate / 2:
            raise ValueError(f"need f_min < f_max ≤ sample_rate / 2, got f_min={self.f_min}, f_max={self.top}, "
                             f"sample_rate={self.sample_rate}")
        return self

    @property
    def window(self) -> int:
        return self.win_length if self.win_length is not None else self.n_fft

    @property
    def top(self) -> float:
        """The highest frequency of the filter bank: `f_max`, or the Nyquist frequency."""
        return self.f_max if self.f_max is not None else self.sample_rate / 2

    @property
    def bins(self) -> int:
        """Frequency bins of one FFT frame."""
        return self.n_fft // 2 + 1

    @property
    def step(self) -> int:
        return self.hop if self.hop is not None else max(self.window // 2, 1)


def frames(a: SpectrogramAttrs, t: Dim) -> Dim:
    """Frames of a `t`-sample waveform: t // hop + 1 when centred, else (t − n_fft) // hop + 1."""
    return t // a.step + 1 if a.center else (t - a.n_fft) // a.step + 1


def _spectrogram_shape(a: SpectrogramAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 2, what=" ([B, samples])")
    expect_float(x, "x")
    for name in ("sample_rate", "n_fft", "mels"):
        positive(getattr(a, name), name)
    positive(a.window, "win_length"), positive(a.step, "hop")
    if a.window > a.n_fft:
        raise ShapeError("GF102", f"`win_length` {a.window} is longer than `n_fft` {a.n_fft}")
    t = x.shape[1]
    if t.is_const:
        # reflect padding needs more samples than it pads; an uncentred frame needs a full window
        need = a.n_fft // 2 + 1 if a.center else a.n_fft
        if t.value < need:
            raise ShapeError("GF120", f"a waveform of {t.value} samples is shorter than the {need} that one "
                                      f"frame of n_fft {a.n_fft} needs" + (" (with reflect padding)" if a.center else ""),
                             "x")
    return TensorType((x.shape[0], Dim.const(a.mels), frames(a, t)))


def _spectrogram_flops(a: SpectrogramAttrs, ins, out):
    # per frame: an FFT (~5 n log2 n real flops), the power spectrum, the mel projection, the log
    n, bins = a.n_fft, a.bins
    per_frame = 5 * n * max(n.bit_length() - 1, 1) + 3 * bins + 2 * bins * a.mels + a.mels
    return out.shape[0] * out.shape[2] * per_frame


register(OpDef(
    "spectrogram", "audio",
    "Log-mel spectrogram of a waveform: `[B, samples] → [B, mels, frames]`. Hann-windowed STFT, power "
    "spectrum, triangular mel filter bank (HTK or Slaney scale, unnormalised), natural log floored at "
    "`floor` — torchaudio's MelSpectrogram followed by a log. No parameters.",
    SpectrogramAttrs, ("x",), _spectrogram_shape, flops=_spectrogram_flops,
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs,
    example="spec: {op: spectrogram, in: waveform, sample_rate: 16000, n_fft: 400, hop: 160, mels: 128}",
))


# ---------------------------------------------------------------- conv1d

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
PADDING_MODE = ("what the padding holds, torch.nn.Conv1d/Conv2d's `padding_mode`: zeros; reflect (the pixels "
                "beyond the edge mirrored, the edge itself not repeated: the padding must be less than the side); "
                "replicate (the edge pixel repeated); circular (the other end's pixels, wrapping once: the padding "
                "at most the side)")


def padding_fits(mode: str, pads, sides, names) -> None:
    """GF317 where an axis's padding is more than `mode` can take from a side known here, as torch refuses it:
    reflect mirrors pixels beyond the edge (fewer than the side), circular wraps the other end once (at most
    the side). `pads` are (before, after) per axis, `sides` the input's sizes along them."""
    for (before, after), n, name in zip(pads, sides, names):
        p = max(before, after)
        if mode == "reflect" and n.is_const and p >= n.value:
            need = f"needs more than {p} pixels along the {name}"
        elif mode == "circular" and n.is_const and p > n.value:
            need = f"needs at least {p} pixels along the {name}"
        else:
            continue
        raise ShapeError("GF317", f"`padding_mode: {mode}` pads {p} from an input {name} of {n.value}: it {need} "
                                  "to take the padding from", "x", attr="padding_mode",
                         help=f"pad less than {'the side' if mode == 'reflect' else 'the side, plus one'}, feed a "
                              "larger input, or pad with `zeros` or `replicate` (any amount)")


class Conv1dAttrs(Attrs):
    dim_fields = ("out", "kernel", "stride", "padding", "dilation", "groups", "drop_last")
    out: DimAttr = Field(description="output channels")
    kernel: DimAttr = Field(description="kernel size k (taps along time)")
    stride: DimAttr = Field(1, description="step between output frames")
    padding: DimAttr = Field(0, description="frames added at each end of the time axis (zeros unless "
                                            "`padding_mode` says otherwise)")
    padding_mode: PaddingMode = Field("zeros", description=PADDING_MODE)
    dilation: DimAttr = Field(1, description="spacing between the kernel's taps")
    groups: DimAttr = Field(1, description="channel groups: output group g reads input group g only (weight "
                                           "`[out, C / groups, kernel]`); must divide C and out")
    drop_last: DimAttr = Field(0, description="output frames removed from the end (Wav2Vec2's SamePad: kernel "
                                              "128, padding 64 gives T + 1 frames, one dropped)")
    weight_norm: int | None = weight_norm_field(3, "[out, C / groups, kernel]", "Wav2Vec2 uses 2")
    bias: bool = True

    @property
    def extent(self) -> int:
        """Input frames one output frame reads: d·(k − 1) + 1."""
        return self.dilation * (self.kernel - 1) + 1


def conv_length(a: Conv1dAttrs, t: Dim) -> Dim:
    """Output frames of a `t`-frame input: floor((t + 2p − d·(k − 1) − 1) / s) + 1, as torch.nn.Conv1d,
    less `drop_last`."""
    return (t + 2 * a.padding - a.extent) // a.stride + 1 - a.drop_last


def weight_shape(a: Conv1dAttrs, channels: int) -> tuple[int, int, int]:
    return (a.out, channels // a.groups, a.kernel)


def _conv1d_shape(a: Conv1dAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, channels, time])")
    expect_float(x, "x")
    c = concrete(x.shape[1], "x", "the channel dimension")
    for name in ("out", "kernel", "stride", "dilation", "groups"):
        positive(getattr(a, name), name)
    if a.padding < 0 or a.drop_last < 0:
        name = "padding" if a.padding < 0 else "drop_last"
        raise ShapeError("GF102", f"`{name}` must be ≥ 0, got {getattr(a, name)}", attr=name)
    groups_divide(a.groups, c, "x", out=a.out)
    padding_fits(a.padding_mode, ((a.padding, a.padding),), x.shape[2:], ("time axis",))
    length = conv_length(a, x.shape[2])
    if length.is_const and length.value <= 0:
        t = x.shape[2]
        if a.drop_last and length.value + a.drop_last > 0:
            raise ShapeError("GF268", f"`drop_last: {a.drop_last}` removes every one of the "
                                      f"{length.value + a.drop_last} output frames", attr="drop_last",
                             help="drop fewer frames, or feed a longer input")
        raise ShapeError(
            "GF195", f"output length {length.value} ≤ 0: {t} input frames + 2·{a.padding} padding are "
                     f"fewer than the {a.extent} frames one output reads (kernel {a.kernel}, dilation {a.dilation})",
            "x", help=f"floor(({t} + 2·{a.padding} − {a.extent}) / {a.stride}) + 1 = {length.value}: feed at least "
                      f"{max(a.extent - 2 * a.padding, 1)} frames, or pad more, or use a smaller kernel or dilation")
    return TensorType((x.shape[0], Dim.const(a.out), length))


def groups_divide(groups: int, channels: int, port: str, out: int | None = None) -> None:
    """GF267 unless `groups` divides the channels (and a convolution's output channels)."""
    for what, n in (("input channels", channels), ("output channels", out)):
        if n is not None and n % groups:
            raise ShapeError("GF267", f"`groups: {groups}` does not divide the {n} {what}",
                             port if what.startswith("input") else None, attr="groups",
                             help=f"every group takes {what} / groups channels: pick a divisor of {n}")


def _conv1d_params(a: Conv1dAttrs, ins):
    w = weight_shape(a, concrete(ins["x"].shape[1], "x", "the channel dimension"))
    return {**normed_weights(a.weight_norm, w), **({"bias": (a.out,)} if a.bias else {})}


def _conv1d_flops(a: Conv1dAttrs, ins, out):
    macs = 2 * out.shape[0] * a.out * (out.shape[2] + a.drop_last) * (ins["x"].shape[1] // a.groups) * a.kernel
    return macs + weight_norm_flops(a.weight_norm, weight_shape(a, ins["x"].shape[1].value))


def _conv1d_carry(a: Conv1dAttrs, ins) -> Carry | str:
    """Causal (each output frame t reads input frames ≤ t, and one output frame per input frame) when the
    left padding is the kernel's reach, d·(k − 1), the stride 1, and `drop_last` removes the frames the right
    padding adds: then a step carries the last d·(k − 1) input frames (Mamba's conv state)."""
    reach = a.extent - 1
    if a.padding_mode != "zeros":
        return f"its `padding_mode: {a.padding_mode}` pads with the frames themselves, where a step carries zeros"
    if a.stride != 1:
        return f"its stride {a.stride} makes fewer output frames than input frames"
    if a.padding != reach or a.drop_last != a.padding:
        return (f"it reads later frames: padding {a.padding} at both ends and drop_last {a.drop_last}, where a "
                f"causal convolution pads the kernel's reach ({reach}) and drops as many frames (`padding: "
                f"{reach}, drop_last: {reach}`)")
    if not reach:     # one tap: each frame alone, nothing to carry
        return Carry("x", 2, {})
    return Carry("x", 2, {"frames": CarriedState((concrete(ins["x"].shape[1], "x", "the channel dimension"),
                                                  reach))})


register(OpDef(
    "conv1d", "audio",
    "1-D convolution over time, channels first: `[B, C, T] → [B, out, T']` with T' = floor((T + 2·padding "
    "− dilation·(kernel − 1) − 1) / stride) + 1 − drop_last; `padding_mode` zeros, reflect, replicate or "
    "circular, as torch's. Weight `[out, C / groups, kernel]`, bias `[out]` "
    "(torch.nn.Conv1d layout); with `weight_norm: AXIS` the weight is `weight_g · weight_v / ‖weight_v‖` "
    "(torch's weight_norm, as transformers' Wav2Vec2 stores it). Whisper's front end is two of them; a "
    "`transpose` of the last two axes makes tokens of frames. Causal (`padding` = `drop_last` = "
    "dilation·(kernel − 1), stride 1: Mamba's), it decodes step by step, carrying its last dilation·(kernel − 1) "
    "input frames.",
    Conv1dAttrs, ("x",), _conv1d_shape, params=_conv1d_params, flops=_conv1d_flops,
    sequence=RECURRENT, carry=_conv1d_carry, tp=REPLICATE, saves=keeps_float_inputs, matmul=True,
    example="conv2: {op: conv1d, in: act1, out: d_model, kernel: 3, stride: 2, padding: 1}",
))


# ---------------------------------------------------------------- group_norm

class GroupNormAttrs(Attrs):
    dim_fields = ("groups",)
    groups: DimAttr = Field(description="channel groups; each is normalised over its channels and every "
                                        "position (groups = channels: per channel over time, Wav2Vec2)")
    eps: float = Field(1e-5, gt=0)
    affine: bool = Field(True, description="learn a per-channel scale `weight [C]` and shift `bias [C]`")


def _group_norm_channels(a: GroupNormAttrs, ins) -> int:
    x = ins["x"]
    expect_rank(x, "x", min_rank=3, what=" ([B, channels, ...])")
    c = concrete(x.shape[1], "x", "the channel dimension")
    positive(a.groups, "groups")
    groups_divide(a.groups, c, "x")
    return c


def _group_norm_shape(a: GroupNormAttrs, ins):
    _group_norm_channels(a, ins)
    expect_float(ins["x"], "x")
    return ins["x"]


def _group_norm_params(a: GroupNormAttrs, ins):
    c = _group_norm_channels(a, ins)
    return {"weight": (c,), "bias": (c,)} if a.affine else {}


register(OpDef(
    "group_norm", "audio",
    "Group normalisation, channels first as torch.nn.GroupNorm and conv1d: `[B, C, ...] → [B, C, ...]`. The "
    "C channels fall into `groups` groups of C / groups; each group of each sample is normalised over its "
    "channels and all positions (biased variance, `eps`), then scaled and shifted per channel. Wav2Vec2's "
    "feature encoder has one with groups = channels after its first convolution. Statistics span the whole "
    "time axis, so it mixes positions.",
    GroupNormAttrs, ("x",), _group_norm_shape, params=_group_norm_params,
    flops=lambda a, ins, out: 7 * numel(out.shape),
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs,
    example="gn: {op: group_norm, in: conv0, groups: 512}",
))
