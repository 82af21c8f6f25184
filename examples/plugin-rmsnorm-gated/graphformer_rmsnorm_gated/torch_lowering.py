"""The torch lowerings: `@lowers(op)` factories returning an nn.Module whose parameters are named as the op's
`params` rule names them (`weight`). Imported by graphformer's torch backend on its first lookup."""
import torch
from torch import nn
from torch.nn import functional as F

from graphformer.backends.torch.lower import lowers


class RMSNormGated(nn.Module):
    def __init__(self, d: int, groups: int, eps: float):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.empty(d))   # graphformer's init sets 1-D weights to 1

    def forward(self, x, gate):
        h = x * F.silu(gate)
        g = h.unflatten(-1, (self.groups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * g.flatten(-2)


class SwishBeta(nn.Module):
    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


@lowers("rmsnorm_gated")
def _rmsnorm_gated(node, types):
    return RMSNormGated(types["x"].shape[-1].value, node.attrs.groups, node.attrs.eps)


@lowers("swish_beta")
def _swish_beta(node, types):
    return SwishBeta(node.attrs.beta)
