"""ONNX lowerings of the sequence-layout ops (ops/sequence.py), with the semantics of backends/torch/sequence.py."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .lower import NodeEmitter, lowers

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


@lowers("logical_not")
def _logical_not(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    if ctx.types["x"].dtype != "bool":
        x = ctx.op("Cast", [x], "bool", to=TensorProto.BOOL)
    ctx.op("Not", [x], final=True)
