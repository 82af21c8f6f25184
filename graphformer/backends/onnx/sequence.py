"""ONNX lowerings of the sequence-layout ops (ops/sequence.py), with the semantics of backends/torch/sequence.py."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..tables import relative_position_buckets
from .lower import ELEM_TYPES, NodeEmitter, lowers

INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------- sequence layout

@lowers("slice")
def _slice(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    stop = a.stop if a.stop is not None else INT64_MAX
    ins = [x, ctx.const([a.start], "start", np.int64), ctx.const([stop], "stop", np.int64),
           ctx.const([a.axis], "axis", np.int64)]
    ctx.op("Slice", ins, final=True)


@lowers("transpose")
def _transpose(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    rank = ctx.types["x"].rank
    i, j = (ax % rank for ax in node.attrs.axes)
    perm = list(range(rank))
    perm[i], perm[j] = perm[j], perm[i]
    ctx.op("Transpose", [x], perm=perm, final=True)


@lowers("unsqueeze")
def _unsqueeze(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    ctx.op("Unsqueeze", [x, ctx.const([node.attrs.axis], "axis", np.int64)], final=True)


@lowers("interleave")
def _interleave(ctx: NodeEmitter, node) -> None:
    rest = [d.value for d in ctx.types["xs0"].shape[2:]]       # [d], or [] for a [B, T] mask
    axis = ctx.const([2], "axis", np.int64)
    steps = [ctx.op("Unsqueeze", [x, axis], str(i)) for i, x in enumerate(ctx.inputs)]       # (B, T, 1, d) each
    y = ctx.op("Concat", steps, "steps", axis=2)                                             # (B, T, k, d)
    ctx.op("Reshape", [y, ctx.const([0, -1, *rest], "merge", np.int64)], final=True)        # (B, k·T, d)


@lowers("deinterleave")
def _deinterleave(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    d = ctx.types["x"].shape[2].value
    y = ctx.op("Reshape", [x, ctx.const([0, -1, a.streams, d], "steps", np.int64)], "steps")  # (B, T, k, d)
    ctx.op("Gather", [y, ctx.const(a.index, "index", np.int64)], axis=2, final=True)        # (B, T, d)


@lowers("table_row")
def _table_row(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    row = ctx.op("Gather", [ctx.param("weight"), ctx.const(node.attrs.index, "index", np.int64)], "row", axis=0)
    ctx.op("Add", [x, row], final=True)


@lowers("vestigial")
def _vestigial(ctx: NodeEmitter, node) -> None:
    # its parameter is never read, so it is not exported either (a runtime would drop it anyway)
    ctx.op("Identity", ctx.inputs, final=True)


@lowers("relative_position_bias")
def _relative_position_bias(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    md = a.max_distance
    if ctx.state.past is not None:   # a decoder step: queries at the new positions, keys at every cached one too
        rel = ctx.state.past.relative_positions(ctx)                                                  # [n, m]
    else:
        n1 = ctx.shape(x, 1, 2, "n")                                                                  # [1]
        n = ctx.op("Squeeze", [n1, ctx.const([0], "n_axis", np.int64)], "n")
        pos = ctx.op("Range", [ctx.const(0, "zero", np.int64), n, ctx.const(1, "one", np.int64)], "pos")  # [n]
        keys = ctx.op("Unsqueeze", [pos, ctx.const([0], "row", np.int64)], "keys")                     # [1, n]
        queries = ctx.op("Unsqueeze", [pos, ctx.const([1], "col", np.int64)], "queries")               # [n, 1]
        rel = ctx.op("Sub", [keys, queries], "distance")                                              # [n, n]
        # ONNX shape inference cannot size a Range; reshaping to x's own runtime [n, n] names the dims again
        rel = ctx.op("Reshape", [rel, ctx.op("Concat", [n1, n1], "n_n", axis=0)], "distance")
    rel = ctx.op("Clip", [rel, ctx.const(-md, "lo", np.int64), ctx.const(md, "hi", np.int64)], "distance")
    idx = ctx.op("Add", [rel, ctx.const(md, "offset", np.int64)], "index")
    table = ctx.const(relative_position_buckets(a.buckets, md, a.causal), "buckets", np.int64)
    buckets = ctx.op("Gather", [table, idx], "buckets", axis=0)                                        # [n, n]
    rows = ctx.op("Gather", [ctx.param("weight"), buckets], "rows", axis=0)                            # [n, n, h]
    heads = ctx.op("Transpose", [rows], "heads", perm=[2, 0, 1])                                       # [h, n, n]
    ctx.op("Unsqueeze", [heads, ctx.const([0], "batch", np.int64)], final=True)                        # [1, h, n, n]


@lowers("logical_not")
def _logical_not(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    if ctx.types["x"].dtype != "bool":
        x = ctx.op("Cast", [x], "bool", to=TensorProto.BOOL)
    ctx.op("Not", [x], final=True)


@lowers("apply_mask")
def _apply_mask(ctx: NodeEmitter, node) -> None:
    if len(ctx.inputs) == 1:                        # no mask fed: x as it is
        ctx.op("Identity", ctx.inputs, final=True)
        return
    x, mask = ctx.inputs
    rank = ctx.types["x"].rank
    ax = node.attrs.axis % rank
    axes = [i for i in range(rank) if i not in (0, ax)]
    mask = ctx.op("Cast", [mask], "mask", to=ELEM_TYPES[ctx.types["x"].dtype])
    mask = ctx.op("Unsqueeze", [mask, ctx.const(axes, "axes", np.int64)], "mask")
    ctx.op("Mul", [x, mask], final=True)
