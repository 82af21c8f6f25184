"""Rotary inverse frequencies, shared by the torch and ONNX lowerings of `attention` (one definition, two
backends: torch turns the array into its buffer, ONNX into a constant)."""
from __future__ import annotations

import math

import numpy as np


def rotary_inv_freq(a, head_dim: int) -> np.ndarray:
    """float32 `[r/2]`: 1 / theta^(2i/r) for the r rotated dims of a head (`a`: AttentionAttrs), with
    linear, Llama 3.1's or YaRN's frequency scaling if asked.

    Float32 arithmetic in transformers' order (so the two agree to the last bit or one ulp), except the
    power, taken in float64 and rounded once: no libm's float32 powf rounds the same as another's.
    """
    f32 = np.float32
    r = a.rope_dims or head_dim
    if a.rope_scaling == "yarn":
        return yarn_inv_freq(a.rope_theta, r, a.rope_factor, a.rope_original_max_len, a.rope_beta_fast,
                             a.rope_beta_slow, a.rope_truncate)
    exponent = np.arange(0, r, 2, dtype=np.int64).astype(f32) / f32(r)
    inv = f32(1.0) / np.power(np.float64(a.rope_theta), exponent.astype(np.float64)).astype(f32)
    if a.rope_scaling == "linear":   # position interpolation: transformers' `inv_freq /= factor`, in float32
        inv = inv / f32(a.rope_factor)
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


def yarn_inv_freq(theta: float, dims: int, factor: float, original_max_len: int, beta_fast: float,
                  beta_slow: float, truncate: bool = True) -> np.ndarray:
    """float32 `[dims/2]`: YaRN's inverse frequencies (Peng et al.; transformers' `_compute_yarn_parameters`):
    high frequencies kept, low ones divided by `factor`, a linear ramp between the correction dims of
    `beta_fast` and `beta_slow` rotations over the original context, rounded outwards to whole dims with
    `truncate` (DeepSeek), fractional without (GPT-OSS)."""
    f32 = np.float32

    def correction_dim(rotations: float) -> float:
        return dims * math.log(original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dims - 1)
    exponent = np.arange(0, dims, 2, dtype=np.int64).astype(f32) / f32(dims)
    pos = np.power(np.float64(theta), exponent.astype(np.float64)).astype(f32)
    extrapolation, interpolation = f32(1.0) / pos, f32(1.0) / (f32(factor) * pos)
    span = (high - low) if high != low else 0.001
    ramp = np.clip((np.arange(dims // 2, dtype=f32) - f32(low)) / f32(span), 0, 1).astype(f32)
    keep = f32(1) - ramp                       # the share of each frequency kept as it is (extrapolated)
    return (interpolation * (f32(1) - keep) + extrapolation * keep).astype(f32)


def mla_inv_freq(a) -> np.ndarray:
    """float32 `[rope_dim/2]`: the rotary inverse frequencies of a `latent_attention` node (`a`: its attrs),
    YaRN-scaled under `rope_scaling: yarn`."""
    r = a.rope_dim
    if a.rope_scaling == "yarn":
        return yarn_inv_freq(a.rope_theta, r, a.rope_factor, a.rope_original_max_len, a.rope_beta_fast,
                             a.rope_beta_slow)
    exponent = np.arange(0, r, 2, dtype=np.int64).astype(np.float32) / np.float32(r)
    return np.float32(1.0) / np.power(np.float64(a.rope_theta), exponent.astype(np.float64)).astype(np.float32)
