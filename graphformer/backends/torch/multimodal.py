"""Torch lowerings of the multimodal ops (graphformer/ops/multimodal.py): pooling by token id, normalising,
contrastive logits, CLIP's quick GELU, a constant scale."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .core import Fn, activation
from .lower import lowers


# ---------------------------------------------------------------- multimodal

def _token_at(x, ids, token: int | None):
    pos = ids.argmax(dim=-1) if token is None else (ids == token).int().argmax(dim=-1)   # (B,)
    return x[torch.arange(x.shape[0], device=x.device), pos]                           # (B, d)


@lowers("token_at")
def _token_at_op(node, types):
    a = node.attrs
    token = a.token if a.select == "first" else None    # argmax ignores `token` (a param may switch the rule)
    pos = "{1}.argmax(dim=-1)" if token is None else f"({{1}} == {token}).int().argmax(dim=-1)"
    return Fn(partial(_token_at, token=token), "argmax of ids" if token is None else f"first id {token}",
              "{0}[torch.arange({0}.shape[0], device={0}.device), " + pos + "]")


@lowers("l2_normalize")
def _l2(node, types):
    eps = node.attrs.eps
    return Fn(partial(F.normalize, dim=-1, eps=eps), "l2 normalize", f"F.normalize({{0}}, dim=-1, eps={eps!r})")


class CosineLogits(nn.Module):
    def __init__(self, normalize: bool, learned: bool, init: float, bias: bool = False, bias_init: float = 0.0):
        super().__init__()
        self.normalize, self.init, self.bias_init = normalize, init, bias_init
        self.logit_scale = nn.Parameter(torch.empty(())) if learned else None   # a scalar
        self.logit_bias = nn.Parameter(torch.empty(())) if bias else None       # a scalar (SigLIP)

    def init_parameters(self, generator=None) -> None:
        with torch.no_grad():
            if self.logit_scale is not None:
                self.logit_scale.fill_(self.init)
            if self.logit_bias is not None:
                self.logit_bias.fill_(self.bias_init)

    def forward(self, a, b):
        if self.normalize:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        logits = a @ b.t()                                                      # (N_a, N_b)
        if self.logit_scale is not None:
            logits = logits * self.logit_scale.exp()
        return logits + self.logit_bias if self.logit_bias is not None else logits


@lowers("cosine_logits")
def _cosine(node, types):
    a = node.attrs
    return CosineLogits(a.normalize, a.scale == "learned", a.init, a.bias, a.bias_init)


@lowers("quick_gelu")
def _quick_gelu(node, types):
    return activation("quick_gelu")


@lowers("scale")
def _scale(node, types):
    by = node.attrs.by
    return Fn(partial(torch.mul, other=by), f"× {by!r}", f"{{0}} * {by!r}")


@lowers("equal")
def _equal(node, types):
    to = node.attrs.to
    return Fn(partial(torch.eq, other=to), f"== {to}", f"({{0}} == {to})")


class ScatterTokens(nn.Module):
    """x with the rows of `features` at the positions `mask` marks, in row-major order (transformers'
    masked_scatter). `cache` is set by generation: once the prompt is in the cache, a step's new tokens
    take no features (the image entered with the prompt), as in transformers' generate."""

    def __init__(self):
        super().__init__()
        self.cache = None

    def forward(self, x, mask, features):
        if self.cache is not None and self.cache.written > 0:
            return x
        marked = mask.bool() if mask.dtype != torch.bool else mask
        feats = features.reshape(-1, features.shape[-1])
        count = int(marked.sum())
        if count != feats.shape[0]:
            raise ValueError(f"scatter_tokens: the mask marks {count} positions but there are {feats.shape[0]} "
                             f"feature vectors (features {tuple(features.shape)}); each marked position takes one "
                             "(for LLaVA: one image token per image patch in the prompt)")
        return x.masked_scatter(marked.unsqueeze(-1).expand_as(x), feats.to(x.dtype))


@lowers("scatter_tokens")
def _scatter_tokens(node, types):
    return ScatterTokens()
