"""Fixed numeric tables that the torch and ONNX lowerings share (one definition, two backends): the
sinusoidal positions of `positional` and the mel filter banks of `spectrogram`. numpy only, no torch,
computed in float64 and returned as float32 so that both backends hold exactly the same numbers."""
from __future__ import annotations

import math

import numpy as np


def sinusoids(max_len: int, dim: int) -> np.ndarray:
    """Vaswani et al. 3.5: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...); `[max_len, dim]`."""
    pos = np.arange(max_len, dtype=np.float64)[:, None]                                       # (max_len, 1)
    inv = np.exp(np.arange(0, dim, 2, dtype=np.float64) * (-math.log(10000.0) / dim))        # (dim/2,)
    table = np.empty((max_len, dim))
    table[:, 0::2] = np.sin(pos * inv)
    table[:, 1::2] = np.cos(pos * inv)
    return table.astype(np.float32)


def _hz_to_mel(f: float, scale: str) -> float:
    if scale == "htk":
        return 2595.0 * math.log10(1.0 + f / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above
    return f / (200.0 / 3) if f < 1000.0 else 15.0 + math.log(f / 1000.0) / (math.log(6.4) / 27.0)


def _mel_to_hz(m: float, scale: str) -> float:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return m * (200.0 / 3) if m < 15.0 else 1000.0 * math.exp((m - 15.0) * (math.log(6.4) / 27.0))


def mel_filters(bins: int, mels: int, sample_rate: int, f_min: float, f_max: float, scale: str) -> np.ndarray:
    """Triangular filters `[bins, mels]`, equally spaced on the mel scale, peak 1 (no area normalisation)."""
    lo, hi = _hz_to_mel(f_min, scale), _hz_to_mel(f_max, scale)
    edges = np.array([_mel_to_hz(lo + (hi - lo) * i / (mels + 1), scale) for i in range(mels + 2)])
    freqs = np.linspace(0, sample_rate // 2, bins)[:, None]                                    # (bins, 1)
    rise = (freqs - edges[:-2]) / (edges[1:-1] - edges[:-2])                                   # (bins, mels)
    fall = (edges[2:] - freqs) / (edges[2:] - edges[1:-1])
    return np.clip(np.minimum(rise, fall), 0.0, None).astype(np.float32)
