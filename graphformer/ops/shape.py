"""Shape ops: `reshape` and `permute` move axes between the batch and the token axes with symbolic dims
(`[B, N·T, D] → [B·N, T, D]`: TimeSformer's divided space–time attention, attention within each frame
of a video), and `tile` repeats a tensor along an axis. They move elements, they compute nothing: no
parameters, no FLOPs.

A reshape's target is written in dims (`[B * T, N, D]`: symbols, params, arithmetic) and checked
symbolically: its element count must equal the input's (GF263). At most one axis may be `-1`, inferred
(GF264). At run time a backend needs the target's sizes: every symbol a target size names must be
readable from the input's own shape (an axis that is the symbol, or a product of it with constants and
symbols read before: `4*T`, `B*T` once `B` is known) or from the shape of the optional input `like`
(the video the frames came from), except in one axis, which is left to infer (GF265). `reshaping` decides this once for both backends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from pydantic import Field, StrictInt, StrictStr

from ..base.dims import Dim, DimError, parse
from .base import MIXES, UNPLANNED, Attrs, DimAttr, OpDef, ShapeError, TensorType, keeps, numel, register

MAX_RANK = 8   # axes of any tensor a spec declares or a shape op makes (inputs, reshape targets)


def _too_many_axes(rank: int, what: str, attr: str | None = None) -> None:
    if rank > MAX_RANK:
        raise ShapeError("GF266", f"{what} has {rank} axes; at most {MAX_RANK} are supported", attr=attr)


def _axis(axis: int, rank: int, attr: str) -> int:
    if not -rank <= axis < rank:
        raise ShapeError("GF266", f"axis {axis} is out of range for a tensor of rank {rank}", attr=attr)
    return axis % rank


# ---------------------------------------------------------------- reshape

class ReshapeAttrs(Attrs):
    # expressions that may name symbols (`B * T`): the expander binds params and keeps the symbols
    shape_fields = ("shape",)
    shape: tuple[Union[StrictInt, StrictStr], ...] = Field(
        min_length=1, description="the target shape, one dim expression per axis over symbols and params "
                                  "(`[B * T, N, d_model]`); at most one axis `-1`, inferred from the rest")

    @property
    def target(self) -> tuple[Dim, ...]:
        """The target's dims (-1 where inferred), as the expander left them: params bound, symbols kept."""
        try:
            return tuple(Dim.const(v) if isinstance(v, int) else parse(v) for v in self.shape)
        except DimError as e:   # only when built by hand, not from a checked spec
            raise ShapeError("GF130", f"bad target dimension: {e}", attr="shape") from None


@dataclass(frozen=True)
class Reshaping:
    """How a backend computes a reshape's target at run time (both backends read this, so they agree).

    `sizes[i]` is the constant size of target axis i, -1 for the one axis the backend leaves to infer, or
    None where it computes `out[i]` from symbols read off the shapes of the inputs: `reads` lists them in
    order as (symbol, port, axis, divisor), the symbol being `port.shape[axis] // divisor` with the
    divisor a Dim over the symbols read before it."""

    out: tuple[Dim, ...]
    sizes: tuple[int | None, ...]
    reads: tuple[tuple[str, str, int, Dim], ...]


def readable_symbols(shapes: dict[str, TensorType]) -> dict[str, tuple[str, int, Dim]]:
    """Symbols recoverable at run time from the shapes of these ports (the first port first): an axis
    that is divisor · symbol, the divisor a Dim over constants and symbols found before it."""
    found: dict[str, tuple[str, int, Dim]] = {}
    for port, t in shapes.items():
        grew = True
        while grew:
            grew = False
            for i, d in enumerate(t.shape):
                free = [s for s in d.symbols if s not in found]
                if len(free) != 1:
                    continue
                q = d.quotient(Dim.sym(free[0]))
                if q is None or not q.symbols <= set(found) or q.is_const and q.value < 1:
                    continue
                found[free[0]] = (port, i, q)
                grew = True
    return found


def reshaping(a: ReshapeAttrs, x: TensorType, like: TensorType | None = None) -> Reshaping:
    """The output shape of reshaping x to `a.shape`, and how to compute it at run time (or a ShapeError)."""
    target = a.target
    _too_many_axes(len(target), "the target shape", "shape")
    inferred = [i for i, d in enumerate(target) if d.is_const and d.value == -1]
    if len(inferred) > 1:
        raise ShapeError("GF264", f"{len(inferred)} axes are -1; at most one axis can be inferred", attr="shape")
    for i, d in enumerate(target):
        if d.is_const and d.value < 1 and i not in inferred:
            raise ShapeError("GF264", f"axis {i} of the target has size {d.value}; sizes are at least 1 "
                             "(or -1: inferred)", attr="shape")
    total = numel(x.shape)
    if inferred:
        (k,) = inferred
        rest = numel(d for i, d in enumerate(target) if i != k)
        size = total.quotient(rest)
        if size is None or size.is_const and size.value < 1:
            raise ShapeError("GF264", f"the -1 axis can't be inferred: the input's {total} elements ({x}) are "
                             f"not a multiple of the other axes' {rest}", "x", attr="shape",
                             help="write the size of every axis, or make the input's dims multiples of these")
        out = target[:k] + (size,) + target[k + 1:]
    else:
        out = target
        if numel(out) != total:
            raise ShapeError("GF263", f"reshaping {x} ({total} elements) to [{', '.join(map(str, out))}] "
                             f"({numel(out)} elements): the element counts differ", "x", attr="shape",
                             help="the target's dims must multiply to the input's; write one axis as -1 to "
                                  "infer it")
    shapes = {"x": x} if like is None else {"x": x, "like": like}
    return Reshaping(out, *_sizes(out, inferred, shapes))


def _sizes(out: tuple[Dim, ...], inferred: list[int], shapes: dict[str, TensorType]):
    readable = readable_symbols(shapes)
    unknown = [i for i, d in enumerate(out) if not d.is_const and not d.symbols <= set(readable)]
    symbolic = [i for i, d in enumerate(out) if not d.is_const]
    left = inferred or unknown[:1] or symbolic[:1]   # the one axis the backend infers (-1)
    stuck = [i for i in unknown if i not in left]
    if stuck:
        i = stuck[0]
        names = ", ".join(f"`{s}`" for s in sorted(out[i].symbols - set(readable)))
        where = " or ".join(str(t) for t in shapes.values())
        raise ShapeError("GF265", f"the size `{out[i]}` of target axis {i} can't be computed at run time: "
                         f"{names} can't be read from the shape {where}", "x", attr="shape",
                         help="write that axis as -1 (one axis can be inferred), or name a tensor whose shape "
                              "has it as the reshape's `like` input: `in: {x: ..., like: video}`")
    needed = set().union(*(out[i].symbols for i in symbolic if i not in left))
    for s in reversed(list(readable)):   # and the symbols their divisors read (found before them)
        if s in needed:
            needed |= readable[s][2].symbols
    reads = tuple((s, *readable[s]) for s in readable if s in needed)
    sizes = tuple(-1 if i in left else (d.value if d.is_const else None) for i, d in enumerate(out))
    return sizes, reads


def _reshape_shape(a: ReshapeAttrs, ins):
    x = ins["x"]
    return TensorType(reshaping(a, x, ins.get("like")).out, x.dtype)


register(OpDef(
    "reshape", "shape",
    "Give `x` another shape with the same elements in the same (row-major) order: `[B, T·N, D] → [B·T, N, "
    "D]` moves the frames of a video onto the batch axis. The target is written in dims over symbols and "
    "params, at most one axis `-1` (inferred), and its element count must equal the input's. Every symbol "
    "of a target size must be readable from the shape of `x`, or of the optional `like` (whose values are "
    "not read), except in one axis, which is inferred.",
    ReshapeAttrs, ("x", "like?"), _reshape_shape, sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="split_heads: {op: reshape, shape: [B, n, 4, 16]}",
))


# ---------------------------------------------------------------- permute

class PermuteAttrs(Attrs):
    order: tuple[int, ...] = Field(min_length=1, description="the input's axes in their new order "
                                                             "(output axis i is input axis `order[i]`)")


def _permute_shape(a: PermuteAttrs, ins):
    x = ins["x"]
    if len(a.order) != x.rank:
        raise ShapeError("GF266", f"`order` names {len(a.order)} axes but `x` has {x.rank} ({x})", "x", attr="order")
    order = [_axis(v, x.rank, "order") for v in a.order]
    if sorted(order) != list(range(x.rank)):
        raise ShapeError("GF266", f"`order` {list(a.order)} is not a permutation of the {x.rank} axes of `x` ({x})",
                         attr="order", help=f"name each of the axes 0..{x.rank - 1} once")
    return TensorType(tuple(x.shape[i] for i in order), x.dtype)


register(OpDef(
    "permute", "shape",
    "Reorder the axes of `x`: output axis i is input axis `order[i]` (`[B, T, N, D]` with order [0, 2, 1, 3] "
    "→ `[B, N, T, D]`). `transpose` swaps two.",
    PermuteAttrs, ("x",), _permute_shape, sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="frames_last: {op: permute, order: [0, 2, 1, 3]}",
))


# ---------------------------------------------------------------- tile

class TileAttrs(Attrs):
    dim_fields = ("times",)
    axis: int = Field(1, description="the axis repeated")
    times: DimAttr = Field(description="how many copies, one after another (torch's `repeat`)")


def _tile_shape(a: TileAttrs, ins):
    x = ins["x"]
    ax = _axis(a.axis, x.rank, "axis")
    if a.times < 1:
        raise ShapeError("GF102", f"`times` must be positive, got {a.times}", attr="times")
    return TensorType(x.shape[:ax] + (x.shape[ax] * a.times,) + x.shape[ax + 1:], x.dtype)


register(OpDef(
    "tile", "shape",
    "Repeat `x` `times` times along `axis`, copy after copy (torch's `x.repeat`): `[B, 1, D]` tiled 8 times "
    "on axis 1 → `[B, 8, D]` (TimeSformer's [CLS] token, one per frame).",
    TileAttrs, ("x",), _tile_shape, sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="per_frame: {op: tile, axis: 1, times: 3}",
))
