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
    def __init__(self, normalize: bool, learned: bool, init: float):
        super().__init__()
        self.normalize, self.init = normalize, init
        self.logit_scale = nn.Parameter(torch.empty(())) if learned else None   # a scalar

    def init_parameters(self, generator=None) -> None:
        if self.logit_scale is not None:
            with torch.no_grad():
                self.logit_scale.fill_(self.init)

    def forward(self, a, b):
        if self.normalize:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        logits = a @ b.t()                                                      # (N_a, N_b)
        return logits * self.logit_scale.exp() if self.logit_scale is not None else logits


@lowers("cosine_logits")
def _cosine(node, types):
    a = node.attrs
    return CosineLogits(a.normalize, a.scale == "learned", a.init)


@lowers("quick_gelu")
def _quick_gelu(node, types):
    return activation("quick_gelu")


@lowers("scale")
def _scale(node, types):
    by = node.attrs.by
    return Fn(partial(torch.mul, other=by), f"× {by!r}", f"{{0}} * {by!r}")
