"""The key/value cache of generation: plain tensors, one slot per causal attention layer (gpt-fast style).

Every slot is preallocated once, in the model's dtype and device, with the layer's kv_heads (not heads):
[B, kv_heads, size, head_dim]. `size` is the generation's whole length, or the layer's window where the
window is shorter: a sliding-window layer keeps a rolling cache in which position p lives at p % window
(attention does not care about key order, and every key already carries its rotary position).

A step is either the prompt (any length, eager) or one token (fixed shapes, so `torch.compile` traces it
once). A one-token step writes at `where[size]` (a tensor, so its value is no guard) and attends to the
whole slot with `keys[size]`, a [B, 1, 1, size] bool mask of the slots that hold a real token: unwritten
slots and left padding stay masked for the whole generation.

A slot's keys and values may differ in width (a layer's optional fourth entry, `value_dim`): an attention
with `v_head_dim` caches values [B, kv_heads, size, v_head_dim]; a latent attention (DeepSeek-V2's MLA)
caches what its reference caches, its normalised latent as the "keys" [B, 1, size, kv_rank] and its
rotated shared key as the "values" [B, 1, size, rope_dim].

An encoder–decoder's cross-attentions get a `ContextCache` instead: their keys and values depend on the
encoder output only, so they are computed at a sequence's first step and reused at every later one.

A recurrence (Mamba's selective scan and causal convolution) gets a `StateCache` slot instead: no positions
at all, just the state its op's `carry` trait declares (decoding.StateSlot), [B, *shape] per tensor, so the
memory of a recurrent model's generation does not grow with the length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...analysis import memory


FEWER = "use a shorter prompt, fewer new tokens or a smaller batch"


def widths(layer: tuple) -> tuple[int, int, int, int | None]:
    """(kv_heads, key width, value width, window) of a layer entry (kv_heads, head_dim, window[, value_dim])."""
    kv, hd, window, *value = layer
    return kv, hd, value[0] if value else hd, window


@dataclass
class Slot:
    k: torch.Tensor          # (B, kv, size, hd)
    v: torch.Tensor          # (B, kv, size, vd): vd = hd unless the layer says otherwise
    size: int


class KVCache:
    """What `Attention.attend` reads while `module.cache` is set: `update(layer, k, v, mask)` and
    `positions` (this step's positions per row, [B, n]: left padding not counted, as transformers)."""

    def __init__(self, layers: list[tuple[int, int, int | None]], batch: int, length: int,
                 dtype: torch.dtype, device: torch.device):
        """`layers`: (kv_heads, head_dim, window or None[, value_dim]) of each cached attention, in layer_id
        order; value_dim where the values are not as wide as the keys (`v_head_dim`, latent attention)."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        memory.require(self.nbytes(layers, batch, length, itemsize),
                       f"a key/value cache of {length:,} positions × batch {batch:,}", str(torch.device(device)),
                       hint=FEWER)
        self.batch, self.length = batch, length
        self.slots: list[Slot] = []
        for layer in layers:
            kv, hd, vd, window = widths(layer)
            size = self.slot_size(window, length)
            self.slots.append(Slot(torch.zeros((batch, kv, size, hd), dtype=dtype, device=device),
                                   torch.zeros((batch, kv, size, vd), dtype=dtype, device=device), size))
        sizes = sorted({s.size for s in self.slots})
        self.valid = {s: torch.zeros(batch, s, dtype=torch.bool, device=device) for s in sizes}
        self.keys = {s: m[:, None, None, :] for s, m in self.valid.items()}           # views: (B, 1, 1, size)
        self.where = {s: torch.zeros(1, dtype=torch.long, device=device) for s in sizes}
        self.seen = torch.zeros(batch, 1, dtype=torch.long, device=device)            # real tokens per row
        self.step_positions = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.positions: torch.Tensor = self.step_positions
        self.written = 0                                                              # positions filled
        self.index = torch.zeros(1, dtype=torch.long, device=device)   # `written` as a tensor (no guard)

    @staticmethod
    def slot_size(window: int | None, length: int) -> int:
        return window if window is not None and window < length else length

    @classmethod
    def nbytes(cls, layers: list[tuple], batch: int, length: int, itemsize: int) -> int:
        """Bytes the cache of `layers` allocates: keys and values per slot, and a bool mask per slot size.
        Known before anything is allocated, so a cache that cannot fit is refused, not half-built."""
        dims = [widths(layer) for layer in layers]
        sizes = [cls.slot_size(window, length) for *_, window in dims]
        kv = sum(batch * k * size * (hd + vd) * itemsize for (k, hd, vd, _), size in zip(dims, sizes))
        return kv + sum(batch * s for s in set(sizes))

    def start(self, mask: torch.Tensor) -> None:
        """Before the prompt's forward: forget everything; `mask` [B, n] bool marks its real tokens."""
        n = mask.shape[1]
        self.written = 0
        self.index.zero_()
        for s, valid in self.valid.items():
            valid.zero_()
            tail = min(n, s)
            valid[:, torch.arange(n - tail, n, device=valid.device) % s] = mask[:, n - tail:]
            self.where[s].fill_(0)
        pos = mask.long().cumsum(-1) - 1
        self.positions = pos.masked_fill_(~mask, 1)   # transformers' position_ids for left padding
        self.seen.copy_(mask.sum(-1, keepdim=True))

    def advance(self, n: int) -> None:
        """After a forward over n new positions: the next step is one real token in every row."""
        self.written += n
        self.index.fill_(self.written)
        if self.written >= self.length:
            return
        for s, valid in self.valid.items():
            valid[:, self.written % s] = True
            self.where[s].fill_(self.written % s)
        self.step_positions.copy_(self.seen)
        self.seen.add_(1)
        self.positions = self.step_positions

    def keys_values(self, layer: int, compute, ctx):
        """A self-attention's keys and values: this step's, computed (`update` then stores them)."""
        return compute(ctx)

    def query_key_positions(self, n: int):
        """Sequence indices of this step's n queries [n] and of the keys [m] that `update` returns: what a
        relative position bias needs. A one-token step sees the whole slot, where slot j holds the latest
        position ≡ j (mod size); slots not yet written get indices < 0 (they are masked anyway)."""
        if n > 1:                                         # the prompt attends to itself
            pos = torch.arange(n, device=self.index.device)
            return pos, pos
        if len(self.valid) != 1:
            raise ValueError("a relative position bias needs every cached attention to keep the same number of "
                             "positions (no sliding window shorter than the generation)")
        size = next(iter(self.valid))
        slots = torch.arange(size, device=self.index.device)
        return self.index, self.index - (self.index - slots) % size

    def update(self, layer: int, k, v, mask):
        """Store this step's k, v (B, kv, n, hd|vd); return the keys, values and key mask to attend to."""
        slot = self.slots[layer]
        n = k.shape[2]
        if n == 1:                                       # a decode step: fixed shapes, compiled once
            at = self.where[slot.size]
            slot.k.index_copy_(2, at, k)
            slot.v.index_copy_(2, at, v)
            return slot.k, slot.v, self.keys[slot.size]
        if self.written:
            raise ValueError("the key/value cache takes several tokens at once only as the prompt (first step)")
        tail = min(n, slot.size)                          # a rolling slot keeps the last `window` positions
        at = torch.arange(n - tail, n, device=k.device) % slot.size
        slot.k[:, :, at] = k[:, :, n - tail:]
        slot.v[:, :, at] = v[:, :, n - tail:]
        return k, v, mask                                 # the prompt attends to itself, as without a cache


class ContextCache:
    """The keys and values of every cross-attention over a fixed context (an encoder's output): computed
    by the first step of a sequence, reused by every later one, so the context is projected once."""

    def __init__(self, layers: int):
        self.kv: list = [None] * layers

    def start(self) -> None:
        """A new sequence (a new context): forget the keys and values."""
        self.kv = [None] * len(self.kv)

    def keys_values(self, layer: int, compute, ctx):
        if self.kv[layer] is None:
            self.kv[layer] = compute(ctx)
        return self.kv[layer]

    def update(self, layer: int, k, v, mask):
        return k, v, mask                                 # every context position, every step


class StateCache:
    """The carried states of a decoder's recurrent nodes (`DecoderPlan.states`): per slot, one preallocated
    tensor [B, *shape] per state (the model's dtype, or the state's own: a scan's float32), zero at the start
    of a sequence. While `module.cache` is set, a recurrent lowering starts from `read(layer, name)` and
    leaves its last state with `write` (in place: the tensors stay the same objects, so a compiled step keeps
    reading them)."""

    def __init__(self, slots: list, batch: int, dtype: torch.dtype, device: torch.device):
        itemsize = torch.empty((), dtype=dtype).element_size()
        memory.require(self.nbytes(slots, batch, itemsize), f"the recurrent states of batch {batch:,}",
                       str(torch.device(device)), hint=FEWER)
        self.slots = [{name: torch.zeros((batch, *st.shape), device=device,
                                         dtype=dtype if st.dtype is None else getattr(torch, st.dtype))
                       for name, st in slot.states.items()} for slot in slots]

    @staticmethod
    def nbytes(slots: list, batch: int, itemsize: int) -> int:
        return sum(slot.nbytes(batch, itemsize) for slot in slots)

    def start(self) -> None:
        """A new sequence: every state back to zero (the whole-sequence forward's start)."""
        for slot in self.slots:
            for t in slot.values():
                t.zero_()

    def read(self, layer: int, name: str) -> torch.Tensor:
        return self.slots[layer][name]

    def write(self, layer: int, name: str, value: torch.Tensor) -> None:
        self.slots[layer][name].copy_(value)
