"""Torch lowering of DeBERTa's disentangled attention (graphformer/ops/relative.py), after transformers'
DisentangledSelfAttention: the same projections, the same log buckets (backends/tables.py, checked equal to
`make_log_bucket_position`), the same gathers, fp32 scores.

The two position terms are an additive [B, h, n, n] bias; the padding mask is folded into it as the
reference's masked_fill (the lowest float where a query or a key is padding), and SDPA does the rest. A row
whose every entry is masked (a padded query) is then uniform over all keys, as in the reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..tables import disentangled_position_index
from .core import Linear, _param, _width
from .lower import lowers


class RelativeEmbeddings(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.weight = _param(rows, dim)

    def forward(self, like):
        return self.weight                                                           # (rows, d)


@lowers("relative_embeddings")
def _relative_embeddings(node, types):
    return RelativeEmbeddings(node.attrs.rows, node.attrs.dim)


class DisentangledAttention(nn.Module):
    def __init__(self, d: int, a):
        super().__init__()
        self.query_proj, self.key_proj, self.value_proj = Linear(d, d), Linear(d, d), Linear(d, d)
        if not a.share_att_key:
            for name in a.position_projections():
                setattr(self, name, Linear(d, d))
        self.heads, self.span = a.heads, a.span
        self.c2p, self.p2c = "c2p" in a.pos_att_type, "p2c" in a.pos_att_type
        self.pos_q = ("query_proj" if a.share_att_key else "pos_query_proj") if self.p2c else None
        self.pos_k = ("key_proj" if a.share_att_key else "pos_key_proj") if self.c2p else None
        self.dropout, self.pos_dropout = a.dropout, a.pos_dropout
        # transformers' scale: sqrt of (d_head · scale_factor) taken in float32
        # (on the CPU: a build on the meta device has no values to read)
        self.root = float(torch.sqrt(torch.tensor(d // a.heads, dtype=torch.float32, device="cpu") * a.scale_factor))
        c2p, p2c, far = disentangled_position_index(a.position_buckets, a.max_relative_positions)
        device = torch.get_default_device()
        # not persistent: functions of the attributes
        self.register_buffer("c2p_of", torch.from_numpy(c2p).to(device), persistent=False)
        self.register_buffer("p2c_of", torch.from_numpy(p2c).to(device), persistent=False)
        self.far = far

    def _heads(self, t):
        """(..., m, d) → (..., h, m, d_head)."""
        return t.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def _table(self, rel, name: str):
        return self._heads(getattr(self, name)(rel))                                 # (h, 2·span, d_head)

    def bias(self, q, k, rel):
        """The position terms, already divided by the scale: (B, h, n, n)."""
        b, h, n, _ = q.shape
        i = torch.arange(n, device=q.device)
        distance = (i[:, None] - i[None, :]).clamp(-self.far, self.far) + self.far   # (n, n): i − j
        score = torch.zeros((), dtype=q.dtype, device=q.device)
        if self.c2p:
            att = q @ self._table(rel, self.pos_k).transpose(-1, -2)                   # (B, h, n, 2·span)
            score = score + att.gather(-1, self.c2p_of[distance].expand(b, h, n, n)) / self.root
        if self.p2c:
            att = k @ self._table(rel, self.pos_q).transpose(-1, -2)                   # (B, h, n, 2·span)
            score = score + att.gather(-1, self.p2c_of[distance].expand(b, h, n, n)).transpose(-1, -2) / self.root
        return score

    def forward(self, x, rel, mask=None):
        training = self.training
        rel = F.dropout(rel[: 2 * self.span], self.pos_dropout, training)
        q, k, v = (self._heads(p(x)) for p in (self.query_proj, self.key_proj, self.value_proj))  # (B, h, n, dh)
        bias = self.bias(q, k, rel)
        if mask is not None:
            keep = mask if mask.dtype == torch.bool else mask != 0
            keep = keep[:, None, :, None] & keep[:, None, None, :]                       # (B, 1, n, n)
            bias = bias.masked_fill(~keep, torch.finfo(bias.dtype).min)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0 / self.root,
                                           dropout_p=self.dropout if training else 0.0)
        return y.transpose(1, 2).flatten(2)                                           # (B, n, d)

    def extra_repr(self) -> str:
        terms = "+".join(t for t, on in (("c2p", self.c2p), ("p2c", self.p2c)) if on)
        return f"heads={self.heads}, span={self.span}, {terms}"


@lowers("disentangled_attention")
def _disentangled_attention(node, types):
    return DisentangledAttention(_width(types), node.attrs)
