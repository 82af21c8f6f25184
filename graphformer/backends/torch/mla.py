"""Torch lowering of multi-head latent attention (graphformer/ops/mla.py), after transformers'
DeepseekV2Attention: the same projections, the same interleaved-pair rotary, the same cache contents.

Generation's cache (kvcache.py) holds, per layer, the normalised latent [B, 1, m, kv_rank] as its "keys"
and the rotated shared key [B, 1, m, rope_dim] as its "values"; every step expands all cached positions
through `kv_b` again, as the reference does (no weight absorption).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..rotary import mla_inv_freq
from .core import Linear, RMSNorm, _sdpa_mask, _width, rotate_pairs
from .lower import lowers


class LatentAttention(nn.Module):
    takes_prepared_mask = True   # `mask` may be `prepare_key_mask(mask)` (the plan hoists that call)

    def __init__(self, d: int, a):
        super().__init__()
        h, qk = a.heads, a.qk_dim
        if a.q_rank:
            self.q_a, self.q_norm = Linear(d, a.q_rank, a.bias), RMSNorm(a.q_rank, a.eps)
            self.q_b = Linear(a.q_rank, h * qk, False)
        else:
            self.q = Linear(d, h * qk, False)
        self.kv_a = Linear(d, a.kv_rank + a.rope_dim, a.bias)
        self.kv_norm = RMSNorm(a.kv_rank, a.eps)
        self.kv_b = Linear(a.kv_rank, h * (a.nope_dim + a.v_dim), False)
        self.o = Linear(h * a.v_dim, d, a.bias)
        self.register_buffer("inv_freq", torch.from_numpy(mla_inv_freq(a)).to(torch.get_default_device()),
                             persistent=False)   # a function of the attributes: not in the state dict
        self.low_rank_q = bool(a.q_rank)
        self.heads, self.nope_dim, self.rope_dim, self.v_dim = h, a.nope_dim, a.rope_dim, a.v_dim
        self.kv_rank, self.causal, self.scale = a.kv_rank, a.causal, a.softmax_scale
        self.rope_gain = a.rope_attention_factor
        # what generation sizes the cache by: one "head" holding the latent (keys) and the rotary key (values)
        self.kv_heads, self.head_dim, self.value_dim, self.window = 1, a.kv_rank, a.rope_dim, None
        self.cache = None          # set by generation for the duration of a decode
        self.layer_id = None

    def cos_sin(self, positions, n: int, x):
        if positions is None:
            positions = torch.arange(n, device=x.device)[None]
        freqs = positions[:, :, None].float() * self.inv_freq.float()                 # (B|1, n, r/2)
        gain = self.rope_gain
        return ((freqs.cos() * gain)[:, None].to(x.dtype), (freqs.sin() * gain)[:, None].to(x.dtype))

    def forward(self, x, mask=None, positions=None):
        b, n, _ = x.shape
        q = self.q_b(self.q_norm(self.q_a(x))) if self.low_rank_q else self.q(x)
        # heads from the widths (-1): under tensor parallelism a rank holds only its share of them
        q = q.view(b, n, -1, self.nope_dim + self.rope_dim).transpose(1, 2)             # (B, h, n, qk)
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_rope = self.kv_a(x).split([self.kv_rank, self.rope_dim], dim=-1)
        latent, k_rope = self.kv_norm(latent)[:, None], k_rope[:, None]                 # (B, 1, n, r), (B, 1, n, dr)
        cache = self.cache
        if cache is not None and positions is None:
            positions = cache.positions                                                 # (B, n)
        cos, sin = self.cos_sin(positions, n, x)
        q = torch.cat((q_nope, rotate_pairs(q_rope, cos, sin)), dim=-1)
        k_rope = rotate_pairs(k_rope, cos, sin)
        if cache is not None:
            latent, k_rope, mask = cache.update(self.layer_id, latent, k_rope, mask)
        m = latent.shape[2]
        kv = self.kv_b(latent[:, 0]).view(b, m, -1, self.nope_dim + self.v_dim).transpose(1, 2)
        k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)                      # (B, h, m, ·)
        k = torch.cat((k_nope, k_rope.expand(-1, k_nope.shape[1], -1, -1)), dim=-1)     # (B, h, m, qk)
        attn_mask, is_causal = _sdpa_mask(mask, self.causal, n, m)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=self.scale)
        return self.o(y.transpose(1, 2).reshape(b, n, -1))                              # (B, n, d)

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, kv_rank={self.kv_rank}, nope={self.nope_dim}, rope={self.rope_dim}, "
                f"v={self.v_dim}" + (", causal" if self.causal else ""))


@lowers("latent_attention")
def _latent_attention(node, types):
    return LatentAttention(_width(types), node.attrs)
