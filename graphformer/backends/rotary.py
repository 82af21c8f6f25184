"""Rotary inverse frequencies, shared by the torch and ONNX lowerings of `attention` (one definition, two
backends: torch turns the array into its buffer, ONNX into a constant)."""
from __future__ import annotations

import math

import numpy as np


def rotary_inv_freq(a, head_dim: int) -> np.ndarray:
    """float32 `[r/2]`: 1 / theta^(2i/r) for the r rotated dims of a head (`a`: AttentionAttrs), with
    Llama 3.1's frequency scaling if asked.

    Float32 arithmetic in transformers' order (so the two agree to the last bit or one ulp), except the
    power, taken in float64 and rounded once: no libm's float32 powf rounds the same as another's.
    """
    f32 = np.float32
    r = a.rope_dims or head_dim
    exponent = np.arange(0, r, 2, dtype=np.int64).astype(f32) / f32(r)
    inv = f32(1.0) / np.power(np.float64(a.rope_theta), exponent.astype(np.float64)).astype(f32)
    if a.rope_scaling == "llama3":
        # long wavelengths are slowed by `factor`, short ones kept, the band between interpolated
        factor, low, high, original = f32(a.rope_factor), f32(a.rope_low_freq), f32(a.rope_high_freq), \
            f32(a.rope_original_max_len)
        low_wl, high_wl = original / low, original / high
        wl = f32(2 * math.pi) / inv
        scaled = np.where(wl > low_wl, inv / factor, inv)
        smooth = (original / wl - low) / (high - low)
        mid = (f32(1) - smooth) * scaled / factor + smooth * scaled
        inv = np.where((wl >= high_wl) & (wl <= low_wl), mid, scaled)
    return inv.astype(f32)
