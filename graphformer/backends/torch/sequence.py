"""Torch lowerings of the sequence-layout ops (graphformer/ops/sequence.py): slicing, axes, interleaved
token streams, table rows, relative position biases. Parameter names follow each op's `params` rule."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..tables import relative_position_buckets

from .core import Fn, _param
from .lower import lowers


# ---------------------------------------------------------------- sequence

def _slice(x, axis: int, start: int, stop: int | None):
    end = x.shape[axis] if stop is None else stop
    return x.narrow(axis, start, end - start)


def _interleave(*xs):
    return torch.stack(xs, dim=2).flatten(1, 2)          # (B, T, k, d) → (B, T·k, d): step-major


def _deinterleave(x, streams: int, index: int):
    return x.unflatten(1, (-1, streams))[:, :, index]    # (B, T, k, d) → (B, T, d)


@lowers("slice")
def _slice_op(node, types):
    a = node.attrs
    ax = a.axis % types["x"].rank
    index = ":, " * ax + f"{a.start}:{'' if a.stop is None else a.stop}"
    return Fn(partial(_slice, axis=ax, start=a.start, stop=a.stop), f"[{index}]", f"{{0}}[{index}]")


@lowers("transpose")
def _transpose(node, types):
    i, j = node.attrs.axes
    return Fn(partial(torch.transpose, dim0=i, dim1=j), f"transpose({i}, {j})", f"{{0}}.transpose({i}, {j})")


@lowers("unsqueeze")
def _unsqueeze(node, types):
    ax = node.attrs.axis
    return Fn(partial(torch.unsqueeze, dim=ax), f"unsqueeze({ax})", f"{{0}}.unsqueeze({ax})")


@lowers("interleave")
def _interleave_op(node, types):
    return Fn(_interleave, f"interleave {len(node.inputs)} streams", "torch.stack(({all},), dim=2).flatten(1, 2)")


@lowers("deinterleave")
def _deinterleave_op(node, types):
    a = node.attrs
    return Fn(partial(_deinterleave, streams=a.streams, index=a.index), f"stream {a.index} of {a.streams}",
              f"{{0}}.unflatten(1, (-1, {a.streams}))[:, :, {a.index}]")


class TableRow(nn.Module):
    def __init__(self, rows: int, dim: int, index: int):
        super().__init__()
        self.weight = _param(rows, dim)
        self.index = index

    def forward(self, x):
        return x + self.weight[self.index]

    def extra_repr(self) -> str:
        return f"row {self.index} of {self.weight.shape[0]}"


@lowers("table_row")
def _table_row(node, types):
    return TableRow(node.attrs.rows, types["x"].shape[-1].value, node.attrs.index)


class Vestigial(nn.Module):
    """Holds a parameter the forward pass never reads (see the op's doc)."""

    def __init__(self, rows: int, cols: int):
        super().__init__()
        self.weight = _param(rows, cols)

    def forward(self, x):
        return x


@lowers("vestigial")
def _vestigial(node, types):
    return Vestigial(node.attrs.rows, node.attrs.cols)


class RelativePositionBias(nn.Module):
    """T5's bias `[1, heads, n, m]` from a learned `weight [buckets, heads]` (ops/sequence.py).

    Generation sets `cache` (graphformer/backends/torch/generation.py): the queries are then this step's positions and the
    keys every position the attention's cache returns, as `cache.query_key_positions(n)` says."""

    def __init__(self, heads: int, buckets: int, max_distance: int, causal: bool):
        super().__init__()
        self.weight = _param(buckets, heads)
        self.max_distance, self.causal = max_distance, causal
        # not persistent: a function of the attributes (the bucket of each clipped distance)
        table = torch.from_numpy(relative_position_buckets(buckets, max_distance, causal))
        self.register_buffer("bucket_of", table.to(torch.get_default_device()), persistent=False)
        self.cache = None

    def forward(self, x):
        n = x.shape[1]
        if self.cache is not None:
            queries, keys = self.cache.query_key_positions(n)
        else:
            queries = keys = torch.arange(n, device=x.device)
        md = self.max_distance
        distance = (keys[None, :] - queries[:, None]).clamp(-md, md) + md                    # (n, m)
        return F.embedding(self.bucket_of[distance], self.weight).permute(2, 0, 1)[None]     # (1, h, n, m)

    def extra_repr(self) -> str:
        return (f"heads={self.weight.shape[1]}, buckets={self.weight.shape[0]}, max_distance={self.max_distance}"
                + (", causal" if self.causal else ""))


@lowers("relative_position_bias")
def _relative_position_bias(node, types):
    a = node.attrs
    return RelativePositionBias(a.heads, a.buckets, a.max_distance, a.causal)


def _logical_not(x):
    return x == 0 if x.dtype != torch.bool else ~x


@lowers("logical_not")
def _logical_not_op(node, types):
    return Fn(_logical_not, "not", "({0} == 0)")



class ApplyMask(nn.Module):
    """`x · mask` with the `[B, n]` mask lined up with axis `axis` of `x` (no mask: `x`); inlined by the plan."""

    def __init__(self, rank: int, axis: int):
        super().__init__()
        # [:, None, ..., :, None, ...]: the mask's batch on axis 0, its positions on `axis`
        self.index = (slice(None),) + (None,) * (axis - 1) + (slice(None),) + (None,) * (rank - 1 - axis)
        self.text = ", ".join(":" if i is not None else "None" for i in self.index)

    def forward(self, x, mask=None):
        return x if mask is None else x * mask.to(x.dtype)[self.index]

    def inline(self, args: list[str], training: bool) -> str:
        if len(args) == 1:   # no mask fed: the node is `x` itself
            return args[0]
        x, mask = args
        return f"({x} if {mask} is None else {x} * {mask}.to({x}.dtype)[{self.text}])"


@lowers("apply_mask")
def _apply_mask_op(node, types):
    rank = types["x"].rank
    return ApplyMask(rank, node.attrs.axis % rank)
