"""Torch lowerings of the core ops (graphformer/ops/core.py): one small module per op.

Parameters are created with `torch.empty` on the target device and filled later by the builder's
seeded init (or not at all on the meta device), so building never pays for an init twice.
"""
from __future__ import annotations

import contextlib
import math
import threading
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ...ops.core import normed_weights
from ..rotary import rotary_inv_freq as inv_freq
from ..tables import alibi_slopes, sinusoids
from .lower import lowers


def _param(*shape: int) -> nn.Parameter:
    # device and dtype come from the `torch.device(...)` context and default dtype set by the builder
    return nn.Parameter(torch.empty(*shape))


def _width(types, port: str = "x") -> int:
    return types[port].shape[-1].value


# ---------------------------------------------------------------- embedding, positions

def scaled(y: torch.Tensor, scale: float | None) -> torch.Tensor:
    """y · scale with the scale rounded to y's dtype first, as transformers' scaled embeddings do (Gemma's
    sqrt(3072) is 55.5 in bfloat16); in float32 the same as a Python float."""
    return y if scale is None else y * torch.tensor(scale, dtype=y.dtype)


class Embedding(nn.Embedding):
    """A token table. A subclass of nn.Embedding (without its init: the builder initialises every parameter
    once) so that torch's RowwiseParallel accepts it: vocab-parallel under tensor parallelism."""

    def __init__(self, vocab: int, dim: int, scale: bool, padding_idx: int | None = None):
        nn.Module.__init__(self)
        # padding_idx: that row gets no gradient (torch's own semantics, as the references' tables)
        self.num_embeddings, self.embedding_dim, self.padding_idx = vocab, dim, padding_idx
        self.weight = _param(vocab, dim)
        self.scale = math.sqrt(dim) if scale else None  # Vaswani et al. 3.4: multiply by sqrt(d_model)

    def forward(self, ids):
        return scaled(F.embedding(ids, self.weight, self.padding_idx), self.scale)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}" + (", scaled" if self.scale else "")


class TiedEmbedding(nn.Module):
    """An embedding that reads another embedding node's table (`tied: other`): one shared parameter, kept
    under the owner's name only, as `TiedLinear` keeps an LM head's."""

    def __init__(self, dim: int, scale: bool, owner_path: str, padding_idx: int | None = None):
        super().__init__()
        self.owner_path, self.padding_idx = owner_path, padding_idx
        self._owner: tuple[nn.Module, ...] = ()
        self.scale = math.sqrt(dim) if scale else None

    def tie(self, owner: nn.Module) -> None:
        self._owner = (owner,)

    @property
    def weight(self) -> nn.Parameter:
        return self._owner[0].weight

    def forward(self, ids):
        return scaled(F.embedding(ids, self._owner[0].weight, self.padding_idx), self.scale)

    def extra_repr(self) -> str:
        return f"table of {self.owner_path}" + (", scaled" if self.scale else "")


@lowers("embedding")
def _embedding(node, types):
    a = node.attrs
    if a.tied:
        return TiedEmbedding(a.dim, a.scale, a.tied, a.pad_row)
    return Embedding(a.vocab, a.dim, a.scale, a.pad_row)


class LearnedPositions(nn.Module):
    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.weight = _param(max_len, dim)
        self.cache = None   # set by generation: positions then come from `cache.positions` [B, n]

    def forward(self, x, positions=None):
        if positions is None and self.cache is not None:
            positions = self.cache.positions
        if positions is not None:
            return x + F.embedding(positions, self.weight)
        return x + self.weight[: x.shape[1]]

    def extra_repr(self) -> str:
        return f"max_len={self.weight.shape[0]}, dim={self.weight.shape[1]}"


class StoredSinusoids(LearnedPositions):
    """Sinusoids held as a parameter that is never trained: in the state dict and the parameter count, as
    transformers' Whisper keeps its encoder positions (a checkpoint's table loads over the built one)."""

    def __init__(self, max_len: int, dim: int, layout: str):
        super().__init__(max_len, dim)
        self.weight.requires_grad_(False)
        self.layout = layout

    def init_parameters(self, generator=None) -> None:
        self.weight.copy_(torch.from_numpy(sinusoids(*self.weight.shape, self.layout)))

    def extra_repr(self) -> str:
        return f"sinusoidal ({self.layout}), stored, " + super().extra_repr()


class SinusoidalPositions(nn.Module):
    def __init__(self, max_len: int, dim: int, layout: str = "interleaved"):
        super().__init__()
        # not persistent: a function of (max_len, dim), so it stays out of the state dict
        table = torch.from_numpy(sinusoids(max_len, dim, layout)).to(torch.get_default_device())
        self.register_buffer("table", table, persistent=False)
        self.cache = None   # set by generation: positions then come from `cache.positions` [B, n]

    def forward(self, x, positions=None):
        if positions is None and self.cache is not None:
            positions = self.cache.positions
        if positions is not None:
            return x + F.embedding(positions, self.table)
        return x + self.table[: x.shape[1]]

    def extra_repr(self) -> str:
        return f"sinusoidal, max_len={self.table.shape[0]}, dim={self.table.shape[1]}"


@lowers("positional")
def _positional(node, types):
    a, d = node.attrs, _width(types)
    if a.kind == "learned":
        return LearnedPositions(a.max_len, d)
    return StoredSinusoids(a.max_len, d, a.sinusoid) if a.stored else SinusoidalPositions(a.max_len, d, a.sinusoid)


# ---------------------------------------------------------------- linear

class Linear(nn.Linear):
    """`nn.Linear` without its own init (the builder initialises every parameter once). A subclass of
    nn.Linear so that torch's tensor-parallel styles (ColwiseParallel, RowwiseParallel) accept it."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True):
        nn.Module.__init__(self)        # not nn.Linear.__init__: it would allocate and initialise twice
        self.in_features, self.out_features = d_in, d_out
        self.weight = _param(d_out, d_in)
        self.bias = _param(d_out) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]} → {self.weight.shape[0]}" + ("" if self.bias is not None else ", no bias")


class NormedWeight:
    """A module's weight stored as `weight`, or under `weight_norm: AXIS` as a magnitude `weight_g` and a
    direction `weight_v`, the weight g · v / ‖v‖ (the norm over every axis but AXIS) recomputed at each call
    by torch._weight_norm, as torch's weight_norm parametrisation does. Shared by `linear` and `conv1d`."""

    norm_axis: int | None = None

    def make_weight(self, shape: tuple[int, ...], axis: int | None) -> None:
        self.norm_axis = axis
        for name, dims in normed_weights(axis, shape).items():
            setattr(self, name, _param(*dims))

    @property
    def stored_weight(self) -> nn.Parameter:
        """`weight`, or the direction `weight_v`: the tensor of the weight's shape."""
        return self.weight if self.norm_axis is None else self.weight_v

    def normed_weight(self) -> torch.Tensor:
        if self.norm_axis is None:
            return self.weight
        return torch._weight_norm(self.weight_v, self.weight_g, self.norm_axis)

    def init_weight(self, gen) -> None:
        """normal(0, 0.02), as the builder's default for a weight; under weight norm that is v, and g = ‖v‖,
        so the weight starts equal to v (torch's weight_norm init)."""
        from .builder import INIT_STD   # not at the top: the builder imports this module's package first
        self.stored_weight.normal_(0.0, INIT_STD, generator=gen)
        if self.norm_axis is not None:
            self.weight_g.copy_(torch.norm_except_dim(self.weight_v, 2, self.norm_axis))


class WeightNormLinear(NormedWeight, nn.Module):
    """A linear layer with `weight_norm: AXIS` (torch.nn.utils.parametrizations.weight_norm(nn.Linear)):
    parameters `weight_g`, `weight_v`, `bias`."""

    def __init__(self, d_in: int, d_out: int, bias: bool, axis: int):
        super().__init__()
        self.make_weight((d_out, d_in), axis)
        self.bias = _param(d_out) if bias else None

    def init_parameters(self, gen) -> None:
        self.init_weight(gen)
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x):
        return F.linear(x, self.normed_weight(), self.bias)

    def extra_repr(self) -> str:
        out, d = self.weight_v.shape
        return f"{d} → {out}, weight_norm={self.norm_axis}" + ("" if self.bias is not None else ", no bias")


class TiedLinear(nn.Module):
    """A linear layer whose weight is another node's (an embedding table): one shared parameter.

    The builder calls `tie(owner)` once every module exists. The owner is kept in a tuple so that it
    is not registered as a submodule here: the shared parameter then appears once in `parameters()`
    and in the state dict, under the owner's name (`tok.weight`).
    """

    def __init__(self, d_out: int, bias: bool, owner_path: str):
        super().__init__()
        self.owner_path = owner_path
        self._owner: tuple[nn.Module, ...] = ()
        self.bias = _param(d_out) if bias else None

    def tie(self, owner: nn.Module) -> None:
        self._owner = (owner,)

    @property
    def weight(self) -> nn.Parameter:
        return self._owner[0].weight

    def forward(self, x):
        return F.linear(x, self._owner[0].weight, self.bias)

    def extra_repr(self) -> str:
        return f"weight tied to {self.owner_path}"


@lowers("linear")
def _linear(node, types):
    a = node.attrs
    if a.tied:
        return TiedLinear(a.out, a.bias, a.tied)
    if a.weight_norm is not None:
        return WeightNormLinear(_width(types), a.out, a.bias, a.weight_norm)
    return Linear(_width(types), a.out, a.bias)


# ---------------------------------------------------------------- attention

def prepare_key_mask(mask):
    """A [B, m] key-padding mask (bool or 0/1) → SDPA's broadcast [B, 1, 1, m] bool, or None if it keeps
    every key: without a mask SDPA takes its fastest kernels. That check reads the data, so it is
    skipped while torch.compile or torch.export trace. The execution plan calls this once per mask
    value, not once per attention layer."""
    if mask is None:  # an optional mask input that was not given
        return None
    keep = mask if mask.dtype == torch.bool else mask != 0
    if not torch.compiler.is_compiling() and bool(keep.all()):
        return None
    return keep[:, None, None, :]                                                   # (B, 1, 1, m)


def _sdpa_mask(mask, causal: bool, n_q: int, n_k: int, window: int | None = None, biased: bool = False,
               prefix=None, blocks=None):
    """A raw [B, m] mask, a prepared [B, 1, 1, m] one or None → SDPA's (attn_mask, is_causal) pair.

    Without a mask nothing of size n×n is built: causality goes through `is_causal`, and so does a
    sliding window that covers every key — unless a logit bias will be added (`biased`): SDPA then takes
    one float mask, so causality must be spelled out. SDPA refuses attn_mask together with is_causal, so only a
    mask with causality (or a window that bites) materialises a [B|1, 1, n, m] mask. Queries are the last
    n_q of the n_k positions (a decode step sees the cache). A query row with no key left (a left-pad
    position) is given every key instead, as transformers does: its output is garbage that nothing
    reads, where an all-masked row would be NaN and poison the next layer through 0 · NaN.

    `prefix` [B, n_q] (a prefix LM's, causal only): query i also sees key j where both are in the prefix,
    after transformers' `blockwise_overlay` ((causal and window) or both in the prefix, then the key mask).
    It covers this call's queries; cached keys (a decode step's) count as outside it.

    `blocks` [B, n_q] (causal only): each run of equal non-zero values is one block whose positions see each
    other both ways, after transformers' Gemma-3 masks ((causal or same block) and window, then the key mask).
    Cached keys are outside every block, as with `prefix`.
    """
    windowed = window is not None and (n_k > window if causal else max(n_q, n_k) > window)
    if blocks is not None and (n_q == 1 or (not torch.compiler.is_compiling() and not bool(blocks.any()))):
        blocks = None   # a lone query, or no block: nothing widens the causal mask (its fast path stays)
    # SDPA's is_causal aligns the top-left corner: right only when queries and keys are the same positions
    if mask is None and prefix is None and blocks is None and not windowed and not (biased and causal) and (
            n_q == n_k or n_q == 1 or not causal):
        return None, causal and n_q > 1
    keep = None
    if mask is not None:
        keep = mask if mask.dim() == 4 else (mask if mask.dtype == torch.bool else mask != 0)[:, None, None, :]
    if causal:
        device = (mask if mask is not None else torch.empty(0)).device
        i = torch.arange(n_k - n_q, n_k, device=device)[:, None]
        j = torch.arange(n_k, device=device)[None, :]
        band = j <= i
        if blocks is not None:
            band = band[None, None] | _block_pairs(blocks, n_k)            # (B, 1, n_q, n_k)
        if windowed:
            band = band & (j > i - window)                           # Mistral: i - j < window
        band = band if band.dim() == 4 else band[None, None]
        band = band if prefix is None else band | _prefix_pairs(prefix, n_k)
        keep = band if keep is None else keep & band                 # (B|1, 1, n_q, n_k)
        keep = keep | ~keep.any(dim=-1, keepdim=True)
    elif windowed:  # bidirectional window (ModernBERT's local layers): |i - j| < window
        device = (mask if mask is not None else torch.empty(0)).device
        i = torch.arange(n_k - n_q, n_k, device=device)[:, None]
        band = (torch.arange(n_k, device=device)[None, :] - i).abs() < window
        keep = band[None, None] if keep is None else keep & band
    return keep, False


def _prefix_pairs(prefix, n_k: int):
    """(B, 1, n_q, n_k) bool: query and key both in the prefix [B, n_q] (the n_k − n_q cached keys before
    the queries are not)."""
    p = prefix if prefix.dtype == torch.bool else prefix != 0
    keys = F.pad(p, (n_k - p.shape[1], 0)) if n_k > p.shape[1] else p
    return (p[:, :, None] & keys[:, None, :])[:, None]


def block_ids(blocks):
    """[B, n] → int64 [B, n]: each run of consecutive equal non-zero values numbered 1, 2, ... in order, 0
    outside every run (transformers' get_block_sequence_ids_for_mask, over any values, not only 0/1)."""
    v = blocks.long()
    starts = (v != 0) & (v != F.pad(v, (1, 0))[:, :-1])
    return torch.where(v != 0, starts.long().cumsum(1), 0)


def _block_pairs(blocks, n_k: int):
    """(B, 1, n_q, n_k) bool: query and key in one block of `blocks` [B, n_q] (the n_k − n_q cached keys before
    the queries are in none)."""
    ids = block_ids(blocks)
    keys = F.pad(ids, (n_k - ids.shape[1], 0)) if n_k > ids.shape[1] else ids
    return ((ids[:, :, None] == keys[:, None, :]) & (ids[:, :, None] != 0))[:, None]


def layer_mask(mask, causal: bool, n_q: int, n_k: int, window: int | None = None, biased: bool = False,
               prefix=None, blocks=None):
    """`_sdpa_mask`, built once per forward for all the layers that ask with the same mask tensor, sizes and
    window (`forward_tables`): a padded prompt's [B, 1, n, n] mask, or a decode step's over the cache, is
    the same in every layer. The entry keeps the mask alive, so its id is not reused while the scope lasts."""
    tables = getattr(_FORWARD, "tables", None)
    if tables is None:
        return _sdpa_mask(mask, causal, n_q, n_k, window, biased, prefix, blocks)
    key = ("mask", None if mask is None else id(mask), causal, n_q, n_k, window, biased,
           None if prefix is None else id(prefix), None if blocks is None else id(blocks))
    hit = tables.get(key)
    if hit is None:
        hit = tables[key] = (*_sdpa_mask(mask, causal, n_q, n_k, window, biased, prefix, blocks), mask, prefix,
                             blocks)
    return hit[0], hit[1]


def alibi_bias(slopes: torch.Tensor, mask, m: int) -> torch.Tensor:
    """ALiBi's logit bias (B|1, h, 1, m): slope_h · p_j, where p_j counts the real keys before key j in a
    raw [B, m] or prepared [B, 1, 1, m] mask (0..m-1 without one), as transformers' build_alibi_tensor
    does; a masked key gets 0 (it is masked anyway). One row serves every query: softmax ignores a
    constant per row, so slope · (j - i) and slope · j give the same probabilities."""
    if mask is None:
        pos = torch.arange(m, device=slopes.device)[None]                           # (1, m)
    else:
        keep = (mask if mask.dtype == torch.bool else mask != 0).reshape(mask.shape[0], m).long()
        pos = (keep.cumsum(-1) - 1) * keep                                          # (B, m)
    return (slopes[:, None] * pos[:, None, :])[:, :, None, :]                      # (B|1, h, 1, m)


def written_attention(q, k, v, attn_mask, is_causal: bool, scale: float | None, softcap: float | None,
                      sinks: torch.Tensor | None, dropout: float):
    """SDPA's computation written out, for what SDPA has no hook for: tanh(s / softcap) · softcap on the
    scaled (and biased) scores before the mask (Gemma-2), and attention sinks (GPT-OSS: a logit per head,
    `sinks` [h], joins each row's softmax and is dropped after it, as transformers' eager attention).
    `attn_mask` is what `_sdpa_mask` (with a float bias folded in) gives; `is_causal` is never set with it."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    if k.shape[1] != q.shape[1]:  # grouped-query: each key/value head serves a group of query heads
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    s = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    live = None   # SDPA gives a row whose boolean mask keeps no key zeros (a float mask: uniform weights)
    if attn_mask is not None and attn_mask.dtype != torch.bool:      # a float bias (masked entries: lowest)
        s = s + attn_mask
        attn_mask = attn_mask > torch.finfo(s.dtype).min
    elif attn_mask is not None:
        live = attn_mask.any(dim=-1, keepdim=True)
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    if is_causal:
        attn_mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, torch.finfo(s.dtype).min)
    if sinks is None:
        p = torch.softmax(s, dim=-1)
    else:   # (B, h, n, m + 1): the sink column takes part in the normalisation only
        sink = sinks.to(s.dtype)[None, :, None, None].expand(s.shape[0], -1, n_q, 1)
        p = torch.softmax(torch.cat([s, sink], dim=-1), dim=-1)[..., :-1]
    if live is not None:
        p = p * live
    if dropout:
        p = F.dropout(p, dropout)
    return p @ v


def rotary_inv_freq(a, head_dim: int) -> torch.Tensor:
    """1 / theta^(2i/r) for the r rotated dims of a head, with Llama 3.1's frequency scaling if asked
    (computed once for both backends in backends/rotary.py)."""
    return torch.from_numpy(inv_freq(a, head_dim))


_FORWARD = threading.local()   # `.tables`: the rotary tables and attention masks of the forward in progress


@contextlib.contextmanager
def forward_tables():
    """While a whole model's forward runs, every `Rotary` with the same frequencies computes its cos/sin
    tables once for all its layers (same positions, length, device and dtype) instead of once per layer,
    and attention builds each distinct mask once (`layer_mask`). Scoped to one forward (a generation step is one), so nothing outlives the tensors it was made from."""
    if getattr(_FORWARD, "tables", None) is not None:   # a model inside a model: the outer scope serves
        yield
        return
    _FORWARD.tables = {}
    try:
        yield
    finally:
        _FORWARD.tables = None


def rotate_pairs(x, cos, sin):
    """x (..., r) rotated in interleaved pairs (x₂ᵢ, x₂ᵢ₊₁) by cos, sin (..., r/2): complex multiplication
    (GPT-J's rotate_every_two, DeepSeek's apply_rotary_emb)."""
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al.): the first `dims` of each head are rotated, the rest pass
    through (partial rotary: Phi, GPT-J). Rotate-half layout as transformers' Llama (dim i turns with
    dim i + dims/2), or with `interleaved` in pairs (x₂ᵢ, x₂ᵢ₊₁) as GPT-J; pair i turns at frequency i in
    both."""

    def __init__(self, inv_freq: torch.Tensor, scale: float = 1.0, interleaved: bool = False):
        super().__init__()
        self.dims = 2 * inv_freq.numel()
        self.scale = scale      # YaRN's attention factor on cos and sin (1: none)
        self.interleaved = interleaved   # its tables are dims/2 wide (one angle per pair), not dims
        # layers whose frequencies are equal share their tables within a forward (`forward_tables`)
        self.freq_key = ((tuple(inv_freq.tolist()), scale, interleaved) if inv_freq.device.type != "meta"
                         else id(self))
        # not persistent: a function of the attributes, so it stays out of the state dict
        self.register_buffer("inv_freq", inv_freq.to(torch.get_default_device()), persistent=False)

    def cos_sin(self, positions, n: int, offset, x):
        """cos, sin [B|1, 1, n, dims] (interleaved: dims/2) in x's dtype for `positions` [B, n] (or
        offset + 0..n-1)."""
        tables = getattr(_FORWARD, "tables", None)
        if tables is None or not isinstance(offset, int):
            return self._cos_sin(positions, n, offset, x)
        # `positions` is the same tensor object in every layer of one forward; the entry keeps it alive,
        # so its id can't be reused by another tensor while the scope lasts
        key = (self.freq_key, self.inv_freq.dtype, None if positions is None else id(positions), n, offset,
               x.device, x.dtype)
        hit = tables.get(key)
        if hit is None:
            hit = tables[key] = (*self._cos_sin(positions, n, offset, x), positions)
        return hit[0], hit[1]

    def _cos_sin(self, positions, n: int, offset, x):
        if positions is None:
            positions = (torch.arange(n, device=x.device) + offset)[None]
        freqs = positions[:, :, None].float() * self.inv_freq.float()                  # (B, n, dims/2)
        emb = (freqs if self.interleaved else torch.cat((freqs, freqs), dim=-1))[:, None]  # (B, 1, n, dims)
        cos, sin = emb.cos(), emb.sin()
        if self.scale != 1.0:
            cos, sin = cos * self.scale, sin * self.scale
        return cos.to(x.dtype), sin.to(x.dtype)

    def forward(self, x, cos, sin):
        """x (B, h, n, hd) rotated."""
        rot, rest = (x, None) if self.dims == x.shape[-1] else (x[..., :self.dims], x[..., self.dims:])
        if self.interleaved:
            y = rotate_pairs(rot, cos, sin)
        else:
            a, b = rot.chunk(2, dim=-1)
            y = rot * cos + torch.cat((-b, a), dim=-1) * sin
        return y if rest is None else torch.cat((y, rest), dim=-1)

    def extra_repr(self) -> str:
        return (f"dims={self.dims}" + (", interleaved pairs" if self.interleaved else "")
                + (f", scale={self.scale!r}" if self.scale != 1.0 else ""))


class Attention(nn.Module):
    """Multi-head attention with separate q, k, v, o projections; queries may come from another stream.

    Grouped-query attention runs on SDPA's `enable_gqa` (no repeated K/V in memory where the kernel
    allows). Generation (graphformer/backends/torch/generation.py) sets `cache`: an object with `keys_values(layer,
    compute, ctx) -> (k, v)` (a cross-attention's cache computes them once per sequence), `update(layer, k,
    v, mask) -> (k, v, mask)` over every cached position and `positions` [B, n] (this step's positions, left
    padding not counted), so one module serves both whole sequences and incremental decoding.
    """

    takes_prepared_mask = True   # `mask` may be `prepare_key_mask(mask)` (the plan hoists that call)

    def __init__(self, d_q: int, d_kv: int, heads: int, kv_heads: int, head_dim: int, d_out: int,
                 biases: dict[str, bool], causal: bool, dropout: float, window: int | None = None,
                 scale: float | None = None, rotary: Rotary | None = None, qk_norm: bool | str = False,
                 eps: float = 1e-6, alibi: bool = False, softcap: float | None = None, sinks: bool = False,
                 value_dim: int | None = None, qk_unit_offset: bool = False):
        super().__init__()
        value_dim = value_dim or head_dim    # a value head's width (q and k heads are head_dim wide)
        self.q = Linear(d_q, heads * head_dim, biases["q"])
        self.k = Linear(d_kv, kv_heads * head_dim, biases["k"])
        self.v = Linear(d_kv, kv_heads * value_dim, biases["v"])
        self.o = Linear(heads * value_dim, d_out, biases["o"])
        # qk_norm: True (or "rms") per head over head_dim; "full" over the whole projection (OLMo-2)
        # (qk_unit_offset: each scales by 1 + weight, Gemma-3)
        self.qk_full = qk_norm == "full"
        norm = OffsetRMSNorm if qk_unit_offset else RMSNorm
        if self.qk_full:
            self.q_norm, self.k_norm = norm(heads * head_dim, eps), norm(kv_heads * head_dim, eps)
        elif qk_norm == "layer_heads":
            self.q_norm, self.k_norm = HeadLayerNorm(heads, head_dim, eps), HeadLayerNorm(kv_heads, head_dim, eps)
        elif qk_norm:
            self.q_norm, self.k_norm = norm(head_dim, eps), norm(head_dim, eps)
        self.rotary = rotary
        self.alibi = alibi
        if alibi:  # not persistent: a function of `heads`, so it stays out of the state dict
            self.register_buffer("alibi_slopes", torch.from_numpy(alibi_slopes(heads)).to(
                torch.get_default_device()), persistent=False)
        # generation sizes each cache slot by kv_heads, head_dim (keys) and value_dim (values)
        self.heads, self.kv_heads, self.head_dim, self.value_dim = heads, kv_heads, head_dim, value_dim
        self.causal, self.dropout, self.window, self.scale = causal, dropout, window, scale
        self.qk_norm, self.softcap = bool(qk_norm), softcap
        self.sinks = _param(heads) if sinks else None   # one logit per head joining the softmax (GPT-OSS)
        self.cache = None          # set by generation for the duration of a decode
        self.layer_id = None       # this layer's slot in the cache

    def keys_values(self, ctx):
        """The keys and values of `ctx` [B, m, d_kv]: (B, kv, m, hd) and (B, kv, m, vd), k normalised under
        qk_norm."""
        b, m, _ = ctx.shape
        # heads from the widths (-1), not the attributes: under tensor parallelism a rank holds only its
        # share of the heads (column-sharded q, k, v)
        k = self.k(ctx)
        k = (self.k_norm(k) if self.qk_full else k).view(b, m, -1, self.head_dim).transpose(1, 2)  # (B, kv, m, hd)
        v = self.v(ctx).view(b, m, -1, self.value_dim).transpose(1, 2)    # (B, kv, m, vd)
        return (self.k_norm(k) if self.qk_norm and not self.qk_full else k), v

    def attend(self, x, ctx, mask, positions=None, bias=None, prefix=None, blocks=None):
        b, n, _ = x.shape
        q = self.q(x)
        q = (self.q_norm(q) if self.qk_full else q).view(b, n, -1, self.head_dim).transpose(1, 2)  # (B, h, n, hd)
        if self.qk_norm and not self.qk_full:
            q = self.q_norm(q)
        cache = self.cache
        k, v = self.keys_values(ctx) if cache is None else cache.keys_values(self.layer_id, self.keys_values, ctx)
        if cache is not None and positions is None and self.rotary is not None:
            positions = cache.positions                                   # (B, n)
        if self.rotary is not None:
            cos, sin = self.rotary.cos_sin(positions, n, 0, x)
            q, k = self.rotary(q, cos, sin), self.rotary(k, cos, sin)
        if cache is not None:
            k, v, mask = cache.update(self.layer_id, k, v, mask)
        if self.alibi:  # over every key the step attends to: the cached ones too
            pos_bias = alibi_bias(self.alibi_slopes, mask, k.shape[2])
            bias = pos_bias if bias is None else bias + pos_bias
        attn_mask, is_causal = layer_mask(mask, self.causal, n, k.shape[2], self.window, bias is not None,
                                          prefix if self.causal else None, blocks if self.causal else None)
        if bias is not None:  # one float mask: the bias where a key may be seen, the lowest float elsewhere
            bias = bias.to(q.dtype)
            attn_mask = bias if attn_mask is None else torch.where(attn_mask, bias, torch.finfo(q.dtype).min)
        if self.softcap is not None or self.sinks is not None:
            y = written_attention(q, k, v, attn_mask, is_causal, self.scale, self.softcap, self.sinks,
                                  self.dropout if self.training else 0.0)
            return self.o(y.transpose(1, 2).reshape(b, n, -1))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0, scale=self.scale,
                                           enable_gqa=q.shape[1] != k.shape[1])
        return self.o(y.transpose(1, 2).reshape(b, n, -1))                 # (B, n, d_out)

    def extra_repr(self) -> str:
        kv = f", kv_heads={self.kv_heads}" if self.kv_heads != self.heads else ""
        vd = f", value_dim={self.value_dim}" if self.value_dim != self.head_dim else ""
        return (f"heads={self.heads}{kv}, head_dim={self.head_dim}{vd}" + (", causal" if self.causal else "")
                + (f", window={self.window}" if self.window else "")
                + ((", qk_norm over the projection" if self.qk_full else ", qk_norm") if self.qk_norm else "")
                + (", alibi" if self.alibi else "")
                + (f", softcap={self.softcap}" if self.softcap is not None else "")
                + (", sinks" if self.sinks is not None else "")
                + (f", dropout={self.dropout}" if self.dropout else ""))


class SelfAttention(Attention):
    def forward(self, x, mask=None, positions=None, bias=None, prefix=None, blocks=None):
        return self.attend(x, x, mask, positions, bias, prefix, blocks)


class CrossAttention(Attention):
    def forward(self, query, context, mask=None, bias=None):
        return self.attend(query, context, mask, bias=bias)


@lowers("attention")
def _attention(node, types):
    a, d = node.attrs, _width(types)
    h, kv, hd = a.geometry(d)
    rotary = Rotary(rotary_inv_freq(a, hd), a.rope_cos_scale, a.rope_interleaved) if a.rope else None
    qk = {"none": False, "rms": True, "rms_full": "full", "layer_heads": "layer_heads"}[a.qk_norm]
    return SelfAttention(d, d, h, kv, hd, d, a.biases(), a.causal, a.dropout, a.window, a.scale, rotary,
                         qk, a.eps, a.alibi, a.softcap, bool(a.sinks), a.value_dim(d), a.qk_unit_offset)


@lowers("cross_attend")
def _cross_attend(node, types):
    a = node.attrs
    dq, dc = _width(types, "query"), _width(types, "context")
    inner = a.dim or dq
    return CrossAttention(dq, dc, a.heads, a.heads, inner // a.heads, a.out or dq, a.biases(), False, a.dropout,
                          scale=a.scale)


# ---------------------------------------------------------------- norms

class LayerNorm(nn.Module):
    def __init__(self, d: int, eps: float, bias: bool):
        super().__init__()
        self.shape, self.eps = (d,), eps
        self.weight = _param(d)
        self.bias = _param(d) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)


class UnitOffset:
    """A norm that scales by (1 + weight), the weight initialised to 0 (Gemma): normalised in float32 and
    multiplied there, then cast back, as transformers' Gemma2RMSNorm."""

    def init_parameters(self, generator=None) -> None:
        self.weight.zero_()
        if getattr(self, "bias", None) is not None:
            self.bias.zero_()

    def forward(self, x):
        y = self.normalise(x.float()) * (1.0 + self.weight.float())
        if getattr(self, "bias", None) is not None:
            y = y + self.bias.float()
        return y.type_as(x)


class OffsetLayerNorm(UnitOffset, LayerNorm):
    def normalise(self, x):
        return F.layer_norm(x, self.shape, None, None, self.eps)

    def extra_repr(self) -> str:
        return f"{self.shape[0]}, eps={self.eps}"


class RMSNorm(nn.Module):
    """weight · x / sqrt(mean(x²) + eps) over the last dimension."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.shape, self.eps = (d,), eps
        self.weight = _param(d)

    def forward(self, x):
        return F.rms_norm(x, self.shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.shape[0]}, eps={self.eps}, rms"


class HeadLayerNorm(nn.Module):
    """LayerNorm without bias over the last dimension of (B, heads, n, head_dim), a scale per head:
    weight [heads, head_dim] (Cohere's q/k norm)."""

    def __init__(self, heads: int, d: int, eps: float):
        super().__init__()
        self.shape, self.eps = (d,), eps
        self.weight = _param(heads, d)

    def init_parameters(self, generator=None) -> None:
        self.weight.fill_(1.0)

    def forward(self, x):
        return F.layer_norm(x, self.shape, None, None, self.eps) * self.weight[:, None, :]

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}, layer per head"


class OffsetRMSNorm(UnitOffset, RMSNorm):
    def normalise(self, x):
        return F.rms_norm(x, self.shape, None, self.eps)


class GroupRMSNorm(RMSNorm):
    """RMS norm of each of `groups` equal slices of the last dimension, then the per-channel scale
    (transformers' MambaRMSNormGated, whose gate is a `mul` before this node)."""

    def __init__(self, d: int, eps: float, groups: int):
        super().__init__(d, eps)
        self.groups = groups

    def forward(self, x):
        y = F.rms_norm(x.unflatten(-1, (self.groups, -1)), (x.shape[-1] // self.groups,), None, self.eps)
        return self.weight * y.flatten(-2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}"


@lowers("norm")
def _norm(node, types):
    a, d = node.attrs, _width(types)
    if a.unit_offset:
        return OffsetLayerNorm(d, a.eps, a.bias) if a.kind == "layer" else OffsetRMSNorm(d, a.eps)
    if a.groups != 1:
        return GroupRMSNorm(d, a.eps, a.groups)
    return LayerNorm(d, a.eps, a.bias) if a.kind == "layer" else RMSNorm(d, a.eps)


# ---------------------------------------------------------------- element-wise and structural

class Fn(nn.Module):
    """A parameter-free op: a plain function of the inputs, plus the same as a Python expression.

    The execution plan inlines `template` into the generated forward (`res1 = in0 + attn`), so these
    ops cost no module call; `forward` is what the node-by-node trace and direct calls use. Functions
    are module-level or `functools.partial`s, never lambdas, so built models pickle.
    """

    def __init__(self, fn, what: str, template: str):
        super().__init__()
        self.fn, self.what, self.template = fn, what, template

    def forward(self, *xs):
        return self.fn(*xs)

    def inline(self, args: list[str], training: bool) -> str:
        return self.template.format(*args, all=", ".join(args), sum=" + ".join(args))

    def extra_repr(self) -> str:
        return self.what


def _sum(*xs):
    y = xs[0] + xs[1]
    for x in xs[2:]:
        y = y + x
    return y


def _cat(*xs, axis: int):
    return torch.cat(xs, dim=axis)


def _take(x, index: int):
    return x[:, index]


def _mean_tokens(x):
    return x.mean(dim=1)


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def inline(self, args: list[str], training: bool) -> str:
        return f"F.dropout({args[0]}, {self.p!r}, True)" if training and self.p else args[0]

    def extra_repr(self) -> str:
        return f"p={self.p}"


@lowers("residual")
def _residual(node, types):
    return Fn(_sum, "sum", "{sum}")


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


# activation name → (function, the same as an inline template); shared by the per-op lowerings
ACTIVATIONS = {
    "relu": (F.relu, "F.relu({0})"),
    "gelu": (F.gelu, "F.gelu({0})"),
    "gelu_tanh": (partial(F.gelu, approximate="tanh"), "F.gelu({0}, approximate='tanh')"),
    "silu": (F.silu, "F.silu({0})"),
    "tanh": (torch.tanh, "torch.tanh({0})"),
    "sigmoid": (torch.sigmoid, "torch.sigmoid({0})"),
    "quick_gelu": (quick_gelu, "{0} * torch.sigmoid(1.702 * {0})"),
    "softplus": (F.softplus, "F.softplus({0})"),
}


def activation(kind: str) -> Fn:
    fn, template = ACTIVATIONS[kind]
    return Fn(fn, kind, template)


@lowers("relu", "silu", "tanh", "sigmoid")
def _pointwise(node, types):
    return activation(node.op)


@lowers("activation")
def _activation(node, types):
    return activation(node.attrs.kind)


@lowers("gelu")
def _gelu(node, types):
    return activation("gelu_tanh" if node.attrs.approximate == "tanh" else "gelu")


def _prod(*xs):
    y = xs[0] * xs[1]
    for x in xs[2:]:
        y = y * x
    return y


def softcap(x, cap: float):
    return torch.tanh(x / cap) * cap


@lowers("softcap")
def _softcap(node, types):
    cap = node.attrs.cap
    return Fn(partial(softcap, cap=cap), f"softcap({cap!r})", f"torch.tanh({{0}} / {cap!r}) * {cap!r}")


@lowers("mul")
def _mul(node, types):
    return Fn(_prod, "product", " * ".join(f"{{{i}}}" for i in range(len(node.inputs))))


@lowers("dropout")
def _dropout(node, types):
    return Dropout(node.attrs.p)


@lowers("softmax")
def _softmax(node, types):
    axis = node.attrs.axis
    return Fn(partial(F.softmax, dim=axis), f"softmax(axis={axis})", f"F.softmax({{0}}, dim={axis})")


@lowers("concat")
def _concat(node, types):
    axis = node.attrs.axis
    return Fn(partial(_cat, axis=axis), f"concat(axis={axis})", f"torch.cat(({{all}},), dim={axis})")


@lowers("pool")
def _pool(node, types):
    a = node.attrs
    if a.kind == "mean":
        return Fn(_mean_tokens, "mean over tokens", "{0}.mean(dim=1)")
    return Fn(partial(_take, index=a.index), f"token {a.index}", f"{{0}}[:, {a.index}]")


# ---------------------------------------------------------------- learned scales, element-wise constants

class LearnedScale(nn.Module):
    """x · scale (LayerScale: one factor per channel) or x · tanh(scale) (a gate), scale filled with `init`."""

    def __init__(self, width: int | None, init: float, gate: bool):
        super().__init__()
        self.scale = _param(width) if width is not None else nn.Parameter(torch.empty(()))
        self.init, self.gate = init, gate

    def init_parameters(self, generator=None) -> None:
        self.scale.fill_(self.init)

    def forward(self, x):
        return x * (torch.tanh(self.scale) if self.gate else self.scale)

    def extra_repr(self) -> str:
        width = "scalar" if self.scale.ndim == 0 else f"{self.scale.shape[0]} channels"
        return f"{width}, init={self.init!r}" + (", tanh gate" if self.gate else "")


@lowers("learned_scale")
def _learned_scale(node, types):
    a = node.attrs
    return LearnedScale(_width(types) if a.per == "channel" else None, a.init, a.act == "tanh")


def _offset(x, by: float):
    return x + by


@lowers("offset")
def _offset_fn(node, types):
    by = node.attrs.by
    return Fn(partial(_offset, by=by), f"+ {by!r}", f"{{0}} + {by!r}")


@lowers("clamp")
def _clamp(node, types):
    lo, hi = node.attrs.min, node.attrs.max
    return Fn(partial(torch.clamp, min=lo, max=hi), f"clamp({lo!r}, {hi!r})",
              f"torch.clamp({{0}}, min={lo!r}, max={hi!r})")
