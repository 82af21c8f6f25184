"""Torch lowerings of the scans (graphformer/ops/scan.py): Mamba's selective scan as a loop over positions;
its heads form (Mamba-2) in blocks of positions (the chunked SSD form), a one-token step as the recurrence;
RWKV-4's token shift (a pad, or the carried token) and WKV recurrence (the reference's loop).

Decoding: while generation's `StateCache` is attached (`cache`, `layer_id`: backends/torch/generation.py), the
loop starts from the slot's carried state instead of zero and leaves its last state there, so the prompt
fills the state and each later step runs the loop once, over its one new position."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .core import _param
from .lower import lowers


def _recur(decay, drive, c_col, h):
    """h_t = decay_t·h_{t−1} + drive_t, y_t = h_t·C_t for every position t (axis 1 of decay, drive, c_col);
    returns (y stacked along axis 1, the last h)."""
    ys = []
    for t in range(drive.shape[1]):
        h = decay[:, t] * h + drive[:, t]
        ys.append(torch.matmul(h.to(c_col.dtype), c_col[:, t])[..., 0])
    return (torch.stack(ys, dim=1) if ys else None), h


def _chunked(xdt, log_decay, b, c, h, q: int):
    """The heads scan over blocks of q positions (Mamba-2's state space duality, as transformers' torch path
    and mamba_ssm compute a prompt): within a block, y_t = Σ_{s≤t} exp(a_s+1 + … + a_t) (C_t·B_s) Δ_s x_s as
    one masked matrix product per head; across blocks, the state at each block's end carried by a loop over
    the L / q blocks. xdt = Δ·x (B, L, H, P), log_decay = Δ·A (B, L, H), b, c (B, L, H, N), h the state
    before position 0 (B, H, P, N). Returns y (B, L, H, P) and the state after the last position. Padding
    to a whole block adds positions with Δ = 0: no decay, no input, so the state passes them unchanged."""
    length = xdt.shape[1]
    pad = -length % q
    if pad:
        xdt, log_decay, b, c = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (xdt, log_decay, b, c))
    blocks = xdt.shape[1] // q
    xdt, b, c = (t.unflatten(1, (blocks, q)) for t in (xdt, b, c))          # (B, K, q, H, ·)
    cum = log_decay.unflatten(1, (blocks, q)).cumsum(2)                     # (B, K, q, H)
    causal = torch.ones(q, q, dtype=torch.bool, device=xdt.device).tril()
    gaps = (cum[:, :, :, None] - cum[:, :, None, :]).masked_fill(~causal[:, :, None], float("-inf"))
    weights = torch.einsum("bkthn,bkshn->bktsh", c, b) * torch.exp(gaps)   # (B, K, q_t, q_s, H)
    y = torch.einsum("bktsh,bkshp->bkthp", weights, xdt)                    # within each block
    to_end = torch.exp(cum[:, :, -1:] - cum)                                # decay from s to the block's end
    adds = torch.einsum("bkshn,bksh,bkshp->bkhpn", b, to_end, xdt)          # each block's state from zero
    starts = []
    for k in range(blocks):                                                 # the state entering each block
        starts.append(h)
        h = torch.exp(cum[:, k, -1])[..., None, None] * h + adds[:, k]
    starts = torch.stack(starts, dim=1)                                     # (B, K, H, P, N)
    y = y + torch.einsum("bkthn,bkhpn->bkthp", c, starts) * torch.exp(cum)[..., None]
    return y.flatten(1, 2)[:, :length], h


class SelectiveScan(nn.Module):
    """h_t = exp(Δ_t·A)·h_{t−1} + Δ_t·B_t·x_t, y_t = C_t·h_t + D·x_t, A = −exp(A_log), computed as
    transformers' MambaMixer computes it without its CUDA kernels: the decay and input terms for the whole
    sequence at once, then one multiply-add per position. A loop, not a parallel (log-space or chunked)
    scan: it is exactly the reference's arithmetic, in the same order, and autograd runs through it.

    With `heads` (Mamba-2), A, Δ and D are one scalar per head and the state is [H, P, N] per sequence
    (transformers' layout); B and C are repeated from their group to its heads. As transformers' Mamba2 and
    mamba_ssm do, a sequence runs in blocks of `chunk` positions (`_chunked`: matrix products within a block,
    a loop over blocks) and a one-token decoder step as the recurrence."""

    def __init__(self, channels: int, state: int, heads: int | None = None, groups: int = 1,
                 delta_bias: bool = False, delta_softplus: bool = False):
        super().__init__()
        per = channels if heads is None else heads
        self.A_log = _param(channels, state) if heads is None else _param(heads)
        self.D = _param(per)
        self.dt_bias = _param(per) if delta_bias else None
        self.heads, self.groups, self.softplus = heads, groups, delta_softplus

    def init_parameters(self, gen) -> None:
        """Mamba's S4D-real init: A_log[d, n] = log(n + 1), so A = −(1, 2, …, N) in every channel (Mamba-2:
        A = −(1, …, H) over the heads); D = 1; dt_bias = 0."""
        n = self.A_log.shape[-1]
        self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand_as(self.A_log))
        self.D.fill_(1.0)
        if self.dt_bias is not None:
            self.dt_bias.zero_()

    cache = None      # generation's StateCache while a decoder runs the model, and this node's slot in it
    layer_id = 0

    def _delta(self, delta):
        if self.dt_bias is not None:
            delta = delta + self.dt_bias
        return F.softplus(delta) if self.softplus else delta

    def _state(self, x, shape):
        return x.new_zeros(x.shape[0], *shape, dtype=torch.float32) if self.cache is None else \
            self.cache.read(self.layer_id, "ssm")                           # carried, float32

    def _keep(self, h) -> None:
        if self.cache is not None:
            self.cache.write(self.layer_id, "ssm", h)

    def forward(self, x, delta, B, C):
        delta = self._delta(delta)
        if self.heads is not None:
            return self._heads(x, delta, B, C)
        # in float32 whatever the model's dtype, as the reference: the state too; each output in x's dtype
        A = -torch.exp(self.A_log.float())                                  # (D, N)
        decay = torch.exp(delta[..., None] * A)                             # (B, L, D, N)
        drive = delta[..., None] * B[:, :, None, :].float() * x[..., None].float()   # (B, L, D, N): Δ·B·x
        y, h = _recur(decay, drive, C[..., None].to(x.dtype), self._state(x, A.shape))
        self._keep(h)
        return (torch.zeros_like(x) if y is None else y) + x * self.D

    chunk = 64        # positions per block of the chunked (SSD) form of the heads scan

    def _heads(self, x, delta, B, C):
        b, length, d = x.shape
        heads, n = self.heads, B.shape[-1] // self.groups
        xh = x.float().view(b, length, heads, d // heads)                  # (B, L, H, P)
        dt = delta.float()                                                  # (B, L, H)
        log_decay = dt * -torch.exp(self.A_log.float())                     # Δ·A ≤ 0
        per_group = heads // self.groups                                    # B, C: group g serves its heads
        bh = B.float().view(b, length, self.groups, n).repeat_interleave(per_group, dim=2)    # (B, L, H, N)
        ch = C.float().view(b, length, self.groups, n).repeat_interleave(per_group, dim=2)    # (B, L, H, N)
        h = self._state(x, (heads, d // heads, n))                          # (B, H, P, N)
        if length == 1:      # a decoder step: the recurrence once
            h = torch.exp(log_decay)[:, 0, :, None, None] * h + (dt[:, 0, :, None, None] * bh[:, 0, :, None, :]
                                                                  * xh[:, 0, :, :, None])
            y = torch.matmul(h, ch[:, 0, :, :, None])[..., 0][:, None]     # (B, 1, H, P)
        else:
            y, h = _chunked(xh * dt[..., None], log_decay, bh, ch, h, self.chunk)
        self._keep(h)
        y = y + xh * self.D.float()[:, None]
        return y.reshape(b, length, d).to(x.dtype)

    def extra_repr(self) -> str:
        if self.heads is None:
            return f"channels={self.A_log.shape[0]}, state={self.A_log.shape[1]}"
        return f"heads={self.heads}, groups={self.groups}"


@lowers("selective_scan")
def _selective_scan(node, types):
    a = node.attrs
    return SelectiveScan(types["x"].shape[2].value, a.state, a.heads, a.groups, a.delta_bias, a.delta_softplus)


class TokenShift(nn.Module):
    """RWKV's time shift: x_{t−1} at position t, zero at 0 (transformers' `nn.ZeroPad2d((0, 0, 1, -1))`), or with
    `mix` the time-mix x·μ + shifted·(1 − μ) in the reference's order of operations. While a decoder runs, the
    carried last vector replaces the zero, and this call's last vector is kept for the next."""

    cache = None      # generation's StateCache while a decoder runs the model, and this node's slot in it
    layer_id = 0

    def __init__(self, channels: int, mix: bool):
        super().__init__()
        self.mix = _param(channels) if mix else None

    def init_parameters(self, gen) -> None:
        """μ = 0.5: half the current position, half the previous one."""
        if self.mix is not None:
            self.mix.fill_(0.5)

    def forward(self, x):
        if self.cache is None:
            shifted = F.pad(x, (0, 0, 1, -1))                                  # zero before position 0
        else:
            shifted = torch.cat([self.cache.read(self.layer_id, "last")[:, None].to(x.dtype), x[:, :-1]], dim=1)
            self.cache.write(self.layer_id, "last", x[:, -1])
        return shifted if self.mix is None else x * self.mix + shifted * (1 - self.mix)

    def extra_repr(self) -> str:
        return "" if self.mix is None else f"mix={self.mix.shape[0]}"


EMPTY_MAX = -1e38     # the running maximum of a state that has seen no position (the reference's start)


class WKV(nn.Module):
    """RWKV-4's recurrence as transformers' `rwkv_linear_attention_cpu` computes it (no CUDA kernel): a loop over
    positions, in float32, each output the ratio of the numerator and denominator states rescaled by the running
    maximum, in the reference's order of operations, so autograd runs through it and the values are the
    reference's. A decoder step starts from the carried (num, den, max) and leaves the last one."""

    cache = None
    layer_id = 0

    def __init__(self, channels: int):
        super().__init__()
        self.time_decay = _param(channels)
        self.time_first = _param(channels)

    def init_parameters(self, gen) -> None:
        """transformers' layer-0 shape: decays from −5 to 3 across the channels (w = −exp of them), bonus 1."""
        d = self.time_decay.shape[0]
        self.time_decay.copy_(-5 + 8 * (torch.arange(d, dtype=torch.float32) / max(d - 1, 1)) ** 0.7)
        self.time_first.fill_(1.0)

    def _start(self, k):
        if self.cache is None:
            zero = torch.zeros_like(k[:, 0], dtype=torch.float32)
            return zero, zero, zero + EMPTY_MAX
        num, den, top = (self.cache.read(self.layer_id, s) for s in ("num", "den", "max"))
        return num, den, torch.where(den == 0, EMPTY_MAX, top)          # zero state: nothing seen yet

    def forward(self, k, v):
        w = -torch.exp(self.time_decay.float())
        u = self.time_first.float()
        num, den, top = self._start(k)
        out = []
        for t in range(k.shape[1]):
            kt, vt = k[:, t].float(), v[:, t]
            peak = torch.maximum(top, kt + u)                                  # for the output at t
            e1, e2 = torch.exp(top - peak), torch.exp(kt + u - peak)
            out.append(((e1 * num + e2 * vt) / (e1 * den + e2)).to(k.dtype))
            peak = torch.maximum(top + w, kt)                                  # the state after t
            e1, e2 = torch.exp(top + w - peak), torch.exp(kt - peak)
            num, den, top = e1 * num + e2 * vt, e1 * den + e2, peak
        if self.cache is not None:
            for name, s in (("num", num), ("den", den), ("max", top)):
                self.cache.write(self.layer_id, name, s)
        return torch.stack(out, dim=1) if out else torch.zeros_like(k)

    def extra_repr(self) -> str:
        return f"channels={self.time_decay.shape[0]}"


@lowers("token_shift")
def _token_shift(node, types):
    return TokenShift(types["x"].shape[2].value, node.attrs.mix)


@lowers("wkv")
def _wkv(node, types):
    return WKV(types["k"].shape[2].value)
