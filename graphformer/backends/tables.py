"""Fixed numeric tables that the torch and ONNX lowerings share (one definition, two backends): the
sinusoidal positions of `positional`, the mel filter banks of `spectrogram`, and the relative-position
index and shifted-window mask of `window_position_bias`, the ALiBi slopes of `attention`. numpy only, no torch,
computed in float64 and returned as float32 so that both backends hold exactly the same numbers."""
from __future__ import annotations

import math

import numpy as np


def sinusoids(max_len: int, dim: int, layout: str = "interleaved") -> np.ndarray:
    """`[max_len, dim]` position encodings.

    interleaved — Vaswani et al. 3.5: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...).
    halves — tensor2tensor's timing signal (fairseq, Whisper): PE[p, i] = sin(p / 10000^(i/(d/2 − 1))) for the
    first d/2 columns, then the cosines of the same angles; the slowest frequency is exactly 1/10000.
    """
    pos = np.arange(max_len, dtype=np.float64)[:, None]                                       # (max_len, 1)
    if layout == "halves":
        inv = np.exp(np.arange(dim // 2, dtype=np.float64) * (-math.log(10000.0) / (dim // 2 - 1)))  # (dim/2,)
        return np.concatenate([np.sin(pos * inv), np.cos(pos * inv)], axis=1).astype(np.float32)
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


def window_relative_index(window: int) -> np.ndarray:
    """For tokens i, j of a w×w window (row-major), the row of the `(2w − 1)²` relative position table:
    `(Δrow + w − 1)·(2w − 1) + Δcol + w − 1`; `[w², w²]` int64 (Swin's `relative_position_index`)."""
    rows, cols = np.divmod(np.arange(window * window), window)
    d_row = rows[:, None] - rows[None, :] + window - 1
    d_col = cols[:, None] - cols[None, :] + window - 1
    return (d_row * (2 * window - 1) + d_col).astype(np.int64)


def shifted_window_mask(height: int, width: int, window: int, shift: int, value: float) -> np.ndarray:
    """`[nW, 1, w², w²]` float32 for a (padded) `height × width` grid rolled by −shift: `value` where two
    tokens of a window come from different regions of the unrolled grid, else 0. Along each axis the
    regions are [0, L − w), [L − w, L − shift), [L − shift, L): the wrapped-around strip and the strip
    next to it (transformers' SwinLayer.get_attn_mask)."""
    def regions(length: int) -> np.ndarray:
        i = np.arange(length)
        return (i >= length - window).astype(np.int64) + (i >= length - shift)
    label = regions(height)[:, None] * 3 + regions(width)[None, :]                          # (H, W)
    label = label.reshape(height // window, window, width // window, window).transpose(0, 2, 1, 3)
    label = label.reshape(-1, window * window)                                              # (nW, w²)
    differ = label[:, None, :] != label[:, :, None]                                        # (nW, w², w²)
    return np.where(differ, np.float32(value), np.float32(0.0))[:, None].astype(np.float32)


def relative_position_buckets(buckets: int, max_distance: int, causal: bool) -> np.ndarray:
    """T5's bucket of every relative position `key - query` in -max_distance..max_distance (int64,
    `[2·max_distance + 1]`, index = relative position + max_distance; farther distances share the end
    buckets, so callers clip). Half of a direction's buckets are exact distances, the rest grow
    logarithmically up to max_distance. Bidirectional (encoder): keys ahead get the upper half of the
    buckets. Causal (decoder): keys ahead share bucket 0 (they are masked anyway).

    The logarithm is taken in float32, as transformers' `T5Attention._relative_position_bucket` takes it,
    so the published configurations land in the same buckets; a distance whose real bucket value is an
    exact integer can round either way by one ulp (see tests/integration/test_t5.py)."""
    rel = np.arange(-max_distance, max_distance + 1, dtype=np.int64)
    out = np.zeros_like(rel)
    per_side = buckets
    if causal:
        dist = -np.minimum(rel, 0)
    else:
        per_side //= 2
        out += (rel > 0) * per_side
        dist = np.abs(rel)
    exact = per_side // 2
    with np.errstate(divide="ignore"):   # log(0) at distance 0, which is an exact bucket anyway
        grow = (np.log(dist.astype(np.float32) / np.float32(exact)) / np.float32(math.log(max_distance / exact))
                * np.float32(per_side - exact))
    far = exact + np.nan_to_num(grow, neginf=0.0).astype(np.int64)
    return out + np.where(dist < exact, dist, np.minimum(far, per_side - 1))


def alibi_slopes(heads: int) -> np.ndarray:
    """`[heads]` ALiBi slopes (Press et al.), as transformers' BLOOM computes them: the geometric sequence
    b^k, k = 1..p, with b = 2^(-8/p) for the largest power of two p ≤ heads; the remaining heads take every
    other power of the sequence for 2p (b'^k, k = 1, 3, 5, ...). The bases are float32, as BLOOM's; each
    power is rounded once (torch's float32 pow may differ from it in the last bit)."""
    def base(p: int) -> float:
        return float(np.float32(2.0 ** (-(2.0 ** -(math.log2(p) - 3)))))
    p = 2 ** math.floor(math.log2(heads))
    slopes = [base(p) ** k for k in range(1, p + 1)]
    if p != heads:
        slopes += [base(2 * p) ** k for k in range(1, 1 + 2 * min(p, heads - p), 2)]
    return np.array(slopes, dtype=np.float64).astype(np.float32)


def _log_bucket(rel: np.ndarray, buckets: int, max_position: int) -> np.ndarray:
    """DeBERTa's bucket of each relative position (transformers' `make_log_bucket_position`), in its float32
    steps: exact within ±(buckets // 2), beyond that mid + ceil(log(|r| / mid) / log((max − 1) / mid) · (mid − 1))
    with the sign of r."""
    mid = buckets // 2
    near = (rel < mid) & (rel > -mid)
    abs_pos = np.where(near, mid - 1, np.abs(rel))
    log_pos = (np.ceil(np.log(abs_pos.astype(np.float32) / np.float32(mid))
                       / np.log(np.float32((max_position - 1) / mid)) * np.float32(mid - 1)) + np.float32(mid))
    return np.where(abs_pos <= mid, rel.astype(np.float32), log_pos * np.sign(rel)).astype(np.int64)


def disentangled_position_index(buckets: int, max_position: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The table index each relative position i − j reads in DeBERTa's disentangled attention, for the
    content→position term (c2p: clip(span + bucket(i − j))) and the position→content term (p2c: clip(span −
    bucket(i − j)), gathered along the key's row and transposed, as transformers does), over i − j in
    −D..D (int64, `[2·D + 1]`, index = i − j + D). Past ±D both have reached the ends of the table, so
    callers clip i − j to ±D. `buckets` ≤ 0: no buckets, the distance itself (clipped at `max_position`)."""
    span = buckets if buckets > 0 else max_position
    if buckets > 0:
        far = max(span, max_position)
        # the logarithmic buckets grow without bound (buckets ≥ 4): double until both ends are reached
        while _log_bucket(np.array([far]), buckets, max_position)[0] < span and far < 1 << 30:
            far *= 2
        rel = np.arange(-far, far + 1, dtype=np.int64)
        bucket = _log_bucket(rel, buckets, max_position)
    else:
        far = span
        rel = bucket = np.arange(-far, far + 1, dtype=np.int64)
    c2p = np.clip(span + bucket, 0, 2 * span - 1)
    p2c = np.clip(span - bucket, 0, 2 * span - 1)
    return c2p, p2c, far
