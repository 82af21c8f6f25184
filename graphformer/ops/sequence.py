"""Sequence and tensor-layout ops: slicing, axis moves, interleaving token streams, table rows, and
turning a padding mask into a keep mask.

Decision Transformer is the main client: three streams (R, s, a) are interleaved into one causal
sequence R1 s1 a1 R2 s2 a2 ..., and predictions are read back from every third token.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from ..base.dims import Dim
from .base import (
    AXIS, MIXES, MOVES, OFFSET, POSITION, UNPLANNED, keeps, keeps_float_inputs,
    Attrs, DimAttr, NoAttrs, OpDef, ShapeError, TensorType, register, expect_rank, expect_float, positive,
    same_shape, numel, expect_dtype, expect_dim, THROUGH,
)
from .core import concrete


def _axis(axis: int, x: TensorType, port: str = "x") -> int:
    if not -x.rank <= axis < x.rank:
        raise ShapeError("GF102", f"axis {axis} is out of range for `{port}` of rank {x.rank} ({x})", port)
    return axis % x.rank


# ---------------------------------------------------------------- slice

class SliceAttrs(Attrs):
    dim_fields = ("start", "stop")
    axis: int = 1
    start: DimAttr = Field(0, ge=0)
    stop: DimAttr | None = Field(None, ge=1, description="one past the last index kept (default: to the end)")

    @model_validator(mode="after")
    def _ordered(self):
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"`stop` ({self.stop}) must be greater than `start` ({self.start})")
        return self


def _slice_shape(a: SliceAttrs, ins):
    x = ins["x"]
    ax = _axis(a.axis, x)
    size = x.shape[ax]
    end = Dim.const(a.stop) if a.stop is not None else size
    if size.is_const and end.value > size.value:
        raise ShapeError("GF120", f"slice [{a.start}:{a.stop}] of axis {ax} runs past its size {size.value} ({x})", "x")
    if size.is_const and a.start >= size.value:
        raise ShapeError("GF120", f"slice start {a.start} is past the end of axis {ax} of size {size.value} ({x})", "x")
    return TensorType(x.shape[:ax] + (end - a.start,) + x.shape[ax + 1:], x.dtype)


register(OpDef(
    "slice", "sequence", "Keep indices `start ≤ i < stop` of one axis (default the token axis 1).",
    SliceAttrs, ("x",), _slice_shape, sequence=AXIS, tp=UNPLANNED, saves=keeps(),
    example="first_two: {op: slice, axis: 1, start: 0, stop: 2}",
))


# ---------------------------------------------------------------- transpose, unsqueeze

class TransposeAttrs(Attrs):
    axes: tuple[int, int] = Field((-2, -1), description="the two axes to swap")

    def moved_axis(self, axis: int, rank: int) -> int:
        """Where axis `axis` of a rank-`rank` input ends up (the `MOVES` trait: the decoder plan follows
        the token axis through it)."""
        i, j = (a % rank for a in self.axes)
        return j if axis == i else i if axis == j else axis


def _transpose_shape(a: TransposeAttrs, ins):
    x = ins["x"]
    i, j = (_axis(v, x) for v in a.axes)
    dims = list(x.shape)
    dims[i], dims[j] = dims[j], dims[i]
    return TensorType(tuple(dims), x.dtype)


register(OpDef(
    "transpose", "sequence", "Swap two axes (default the last two): `[*, m, n] → [*, n, m]`.",
    TransposeAttrs, ("x",), _transpose_shape, sequence=MOVES, tp=UNPLANNED, saves=keeps(),
    example="t: {op: transpose, axes: [1, 2]}",
))


class UnsqueezeAttrs(Attrs):
    axis: int = 1


def _unsqueeze_shape(a: UnsqueezeAttrs, ins):
    x = ins["x"]
    if not -x.rank - 1 <= a.axis <= x.rank:
        raise ShapeError("GF102", f"axis {a.axis} is out of range for inserting into `x` of rank {x.rank} ({x})", "x")
    ax = a.axis % (x.rank + 1)
    return TensorType(x.shape[:ax] + (Dim.const(1),) + x.shape[ax:], x.dtype)


register(OpDef(
    "unsqueeze", "sequence", "Insert an axis of size 1 (e.g. the channel axis of a one-channel image).",
    UnsqueezeAttrs, ("x",), _unsqueeze_shape, sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="channel: {op: unsqueeze, axis: 1}",
))


# ---------------------------------------------------------------- interleave / deinterleave

def _interleave_shape(a, ins):
    ports = list(ins)
    first = ins[ports[0]]
    expect_rank(first, ports[0], min_rank=2, what=" ([B, T, ...])")
    for p in ports:
        if ins[p].dtype != first.dtype:
            raise ShapeError("GF122", f"`{p}` has dtype {ins[p].dtype} but `{ports[0]}` has {first.dtype}", p)
    same_shape(ins, ports)
    b, t, *rest = first.shape
    return TensorType((b, len(ports) * t, *rest), first.dtype)


register(OpDef(
    "interleave", "sequence",
    "Merge k token streams `[B, T, d]` into one `[B, k·T, d]`, step by step: x1₁ x2₁ … xk₁ x1₂ x2₂ … "
    "(Decision Transformer's R₁ s₁ a₁ R₂ s₂ a₂ …). Any rank from 2 and any dtype: a `[B, T]` padding mask "
    "interleaved with itself k times masks the merged sequence.",
    NoAttrs, ("*xs",), _interleave_shape, sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="tokens: {op: interleave, in: [ret, state, action]}",
))


class DeinterleaveAttrs(Attrs):
    dim_fields = ("streams", "index")
    streams: DimAttr = Field(description="how many streams were interleaved (k)")
    index: DimAttr = Field(description="which stream to take back (0-based)")


def _deinterleave_shape(a: DeinterleaveAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    positive(a.streams, "streams")
    if not 0 <= a.index < a.streams:
        raise ShapeError("GF102", f"stream index {a.index} is out of range for {a.streams} streams")
    n = x.shape[1]
    t = n // a.streams
    if t * a.streams != n:
        shown = f"{n.value} tokens" if n.is_const else f"`{n}` tokens"
        raise ShapeError("GF123", f"{shown} do not split into {a.streams} interleaved streams", "x",
                         help=None if n.is_const else f"declare the length as a multiple, e.g. `{a.streams} * T`")
    return TensorType((x.shape[0], t, x.shape[2]), x.dtype)


register(OpDef(
    "deinterleave", "sequence",
    "Take one stream back out of an interleaved sequence: tokens `index`, `index + k`, `index + 2k`, … "
    "`[B, k·T, d] → [B, T, d]`.",
    DeinterleaveAttrs, ("x",), _deinterleave_shape,
    sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="state_tokens: {op: deinterleave, in: hidden, streams: 3, index: 1}",
))


# ---------------------------------------------------------------- table_row, vestigial

class TableRowAttrs(Attrs):
    dim_fields = ("rows", "index")
    rows: DimAttr = Field(description="rows of the learned table")
    index: DimAttr = Field(0, description="the row added to every position")


def _table_row_shape(a: TableRowAttrs, ins):
    x = ins["x"]
    expect_float(x, "x")
    expect_rank(x, "x", min_rank=1)
    concrete(x.shape[-1], "x", "the last dimension")
    positive(a.rows, "rows")
    if not 0 <= a.index < a.rows:
        raise ShapeError("GF102", f"row {a.index} is out of range for a table of {a.rows} rows")
    return x


register(OpDef(
    "table_row", "sequence",
    "Add one row of a learned table `weight [rows, d]` to every position of `x [*, d]`. A position "
    "table read at a constant position: Decision Transformer calls its GPT-2 body with all position "
    "ids 0, so every token gets row 0 of `wpe`.",
    TableRowAttrs, ("x",), _table_row_shape,
    params=lambda a, ins: {"weight": (a.rows, concrete(ins["x"].shape[-1], "x", "the last dimension"))},
    flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=UNPLANNED, saves=keeps(), embedding=True,
    example="wpe: {op: table_row, rows: max_positions, index: 0}",
))


class VestigialAttrs(Attrs):
    dim_fields = ("rows", "cols")
    rows: DimAttr = Field(description="rows of the unused table")
    cols: DimAttr = Field(description="columns of the unused table")


def _vestigial_shape(a: VestigialAttrs, ins):
    positive(a.rows, "rows"), positive(a.cols, "cols")
    return ins["x"]


register(OpDef(
    "vestigial", "sequence",
    "The identity on `x`, owning a parameter `weight [rows, cols]` that nothing reads. For references that "
    "carry a tensor their forward pass never uses (Decision Transformer's GPT-2 body keeps a token table "
    "`wte` but is always fed embeddings), so that their state dicts load and parameter counts agree.",
    VestigialAttrs, ("x",), _vestigial_shape,
    params=lambda a, ins: {"weight": (a.rows, a.cols)},
    sequence=POSITION, tp=UNPLANNED, saves=keeps(),
    example="wte: {op: vestigial, rows: 1, cols: d_model}",
))


# ---------------------------------------------------------------- relative_position_bias

class RelativePositionBiasAttrs(Attrs):
    dim_fields = ("heads", "buckets", "max_distance")
    heads: DimAttr = Field(description="heads of the attentions it feeds: one learned bias per bucket and head")
    buckets: DimAttr = Field(32, description="learned rows of the table (`relative_attention_num_buckets`)")
    max_distance: DimAttr = Field(128, description="distances from here on share the last bucket "
                                  "(`relative_attention_max_distance`)")
    causal: bool = Field(False, description="decoder: buckets for keys behind the query only (T5's "
                         "`bidirectional=False`); default both directions, as T5's encoder")

    @property
    def per_side(self) -> int:
        """Buckets for one direction of distance: all of them when causal, half otherwise."""
        return self.buckets if self.causal else self.buckets // 2


def _relative_bias_shape(a: RelativePositionBiasAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", min_rank=2, what=" ([B, n, ...]: the positions are those of axis 1)")
    positive(a.heads, "heads"), positive(a.buckets, "buckets")
    exact = a.per_side // 2
    if exact < 1:
        raise ShapeError("GF102", f"{a.buckets} buckets leave no exact-distance bucket "
                         f"({'' if a.causal else 'half of them per direction, '}half of those exact)",
                         attr="buckets", help=f"use at least {2 if a.causal else 4} buckets")
    if a.max_distance <= exact:
        raise ShapeError("GF102", f"`max_distance` {a.max_distance} must pass the {exact} exact distances "
                         "(the logarithmic buckets span exact..max_distance)", attr="max_distance")
    n = x.shape[1]
    return TensorType((Dim.const(1), Dim.const(a.heads), n, n))


register(OpDef(
    "relative_position_bias", "sequence",
    "T5's bucketed relative position bias `[1, heads, n, n]` for the n positions of `x [B, n, ...]`: the "
    "distance key − query picks a bucket (exact below a few positions, logarithmic up to `max_distance`), "
    "and a learned table `weight [buckets, heads]` gives each head's additive logit bias. Computed once and "
    "fed to every layer's attention `bias`. Under generation the queries are the new positions and the keys "
    "every cached one.",
    RelativePositionBiasAttrs, ("x",), _relative_bias_shape,
    params=lambda a, ins: {"weight": (a.buckets, a.heads)},
    flops=lambda a, ins, out: Dim.const(0),
    sequence=OFFSET, tp=UNPLANNED, saves=keeps_float_inputs,
    example="position_bias: {op: relative_position_bias, in: x, heads: heads, buckets: 32, max_distance: 128}",
))


def _not_shape(a, ins):
    expect_dtype(ins["x"], "x", ("bool", "int64"))
    return TensorType(ins["x"].shape, "bool")


register(OpDef(
    "logical_not", "sequence",
    "Invert a mask: `[*]` bool or 0/1 int64 → `[*]` bool, true where the input is false or 0. Turns "
    "torch.nn's `*_key_padding_mask` (true = padding) into the keep mask attention reads (true = a token).",
    NoAttrs, ("x",), _not_shape, flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=UNPLANNED, saves=keeps_float_inputs,
    example="keep: {op: logical_not, in: src_key_padding_mask}",
))


# ---------------------------------------------------------------- apply_mask

class ApplyMaskAttrs(Attrs):
    axis: int = Field(1, description="the axis of `x` that the mask's positions run along (default 1, the "
                                     "tokens of `[B, n, d]`; -1 for a channels-first `[B, C, n]`)")


def _apply_mask_shape(a: ApplyMaskAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", min_rank=2)
    expect_float(x, "x")
    ax = _axis(a.axis, x)
    if ax == 0:
        raise ShapeError("GF102", "`axis` 0 is the batch: the mask's positions run along another axis of `x`",
                         None, "the token axis of `[B, n, d]` is 1; of a channels-first `[B, C, n]`, -1", "axis")
    m = ins.get("mask")
    if m is not None:
        expect_rank(m, "mask", 2, what=" ([B, n])")
        expect_dtype(m, "mask", ("bool", "int64"))
        expect_dim(m.shape[0], x.shape[0], "mask", "dimension 0 (batch)", m)
        expect_dim(m.shape[1], x.shape[ax], "mask", f"dimension 1 (positions: axis {ax} of `x`)", m)
    return x


register(OpDef(
    "apply_mask", "sequence",
    "Zero the positions of `x` that the optional padding `mask [B, n]` (bool, or 0/1 int64: 1 = a token) "
    "leaves out: `x · mask` along `axis` (default 1, the tokens), as references multiply hidden states by "
    "their attention mask (DeBERTa's embeddings, Mamba's mixer). Without a mask, `x` unchanged.",
    ApplyMaskAttrs, ("x", "mask?"), _apply_mask_shape, flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=THROUGH, saves=keeps("mask"),
    example="emb_masked: {op: apply_mask, in: {x: emb_ln, mask: attention_mask}}",
))
