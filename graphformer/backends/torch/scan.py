"""Torch lowerings of the scans (graphformer/ops/scan.py): Mamba's selective scan as a loop over positions.

Decoding: while generation's `StateCache` is attached (`cache`, `layer_id`: backends/torch/generation.py), the
loop starts from the slot's carried state instead of zero and leaves its last state there, so the prompt
fills the state and each later step runs the loop once, over its one new position."""
from __future__ import annotations

import torch
from torch import nn

from .core import _param
from .lower import lowers


class SelectiveScan(nn.Module):
    """h_t = exp(Δ_t·A)·h_{t−1} + Δ_t·B_t·x_t, y_t = C_t·h_t + D·x_t, A = −exp(A_log), computed as
    transformers' MambaMixer computes it without its CUDA kernels: the decay and input terms for the whole
    sequence at once, then one multiply-add per position. A loop, not a parallel (log-space or chunked)
    scan: it is exactly the reference's arithmetic, in the same order, and autograd runs through it."""

    def __init__(self, channels: int, state: int):
        super().__init__()
        self.A_log = _param(channels, state)
        self.D = _param(channels)

    def init_parameters(self, gen) -> None:
        """Mamba's S4D-real init: A_log[d, n] = log(n + 1), so A = −(1, 2, …, N) in every channel; D = 1."""
        n = self.A_log.shape[1]
        self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand_as(self.A_log))
        self.D.fill_(1.0)

    cache = None      # generation's StateCache while a decoder runs the model, and this node's slot in it
    layer_id = 0

    def forward(self, x, delta, B, C):
        # in float32 whatever the model's dtype, as the reference: the state too; each output in x's dtype
        A = -torch.exp(self.A_log.float())                                  # (D, N)
        decay = torch.exp(delta[..., None] * A)                             # (B, L, D, N)
        drive = delta[..., None] * B[:, :, None, :].float() * x[..., None].float()   # (B, L, D, N): Δ·B·x
        h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]) if self.cache is None else \
            self.cache.read(self.layer_id, "ssm")                           # (B, D, N): carried, float32
        ys = []
        for t in range(x.shape[1]):
            h = decay[:, t] * h + drive[:, t]
            ys.append(torch.matmul(h.to(x.dtype), C[:, t, :, None])[..., 0])   # (B, D)
        if self.cache is not None:
            self.cache.write(self.layer_id, "ssm", h)
        y = torch.stack(ys, dim=1) if ys else torch.zeros_like(x)           # (B, L, D)
        return y + x * self.D

    def extra_repr(self) -> str:
        return f"channels={self.A_log.shape[0]}, state={self.A_log.shape[1]}"


@lowers("selective_scan")
def _selective_scan(node, types):
    return SelectiveScan(types["x"].shape[2].value, node.attrs.state)

