"""ONNX lowering of DeBERTa's disentangled attention (graphformer/ops/relative.py), with the torch lowering's
semantics (backends/torch/relative.py): the bucket index of each query/key pair is a `Gather` of the
constant index table (backends/tables.py) at the clipped distance i − j, computed from a `Range` over the
runtime length, so one export serves every sequence length; the position terms are `GatherElements` over
the projected table's products.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..tables import disentangled_position_index
from .core import _split_heads
from .lower import NodeEmitter, lowers


@lowers("relative_embeddings")
def _relative_embeddings(ctx: NodeEmitter, node) -> None:
    ctx.op("Identity", [ctx.param("weight")], final=True)                                   # (rows, d)


def _distance(ctx: NodeEmitter, x: str, far: int) -> tuple[str, str]:
    """i − j clipped to ±far and shifted to an index, [n, n]; and n as a 1-D shape."""
    n1 = ctx.shape(x, 1, 2, "n")                                                              # [1]
    n = ctx.op("Squeeze", [n1, ctx.const([0], "n_axis", np.int64)], "n")
    pos = ctx.op("Range", [ctx.const(0, "zero", np.int64), n, ctx.const(1, "one", np.int64)], "pos")   # [n]
    rows = ctx.op("Unsqueeze", [pos, ctx.const([1], "col", np.int64)], "rows")                 # [n, 1]
    cols = ctx.op("Unsqueeze", [pos, ctx.const([0], "row", np.int64)], "cols")                 # [1, n]
    rel = ctx.op("Sub", [rows, cols], "distance")                                             # [n, n]
    rel = ctx.op("Reshape", [rel, ctx.op("Concat", [n1, n1], "n_n", axis=0)], "distance")   # names n, n again
    rel = ctx.op("Clip", [rel, ctx.const(-far, "lo", np.int64), ctx.const(far, "hi", np.int64)], "distance")
    return ctx.op("Add", [rel, ctx.const(far, "offset", np.int64)], "index"), n1


@lowers("disentangled_attention")
def _disentangled_attention(ctx: NodeEmitter, node) -> None:
    a = node.attrs
    ins = dict(zip(node.inputs, ctx.inputs))
    x, rel, mask = ins["x"], ins["rel"], ins.get("mask")
    d = ctx.types["x"].shape[-1].value
    h, dh, rows = a.heads, d // a.heads, 2 * a.span
    root = np.float32(np.sqrt(np.float32(dh) * np.float32(a.scale_factor)))   # as torch's float32 sqrt

    def heads(name: str) -> str:                                                             # (B, h, n, dh)
        y = _split_heads(ctx, ctx.linear(x, f"{name}.", name, True), h, dh, name)
        return ctx.op("Transpose", [y], f"{name}_heads", perm=[0, 2, 1, 3])

    q, k, v = heads("query_proj"), heads("key_proj"), heads("value_proj")
    rel = ctx.op("Slice", [rel, ctx.const([0], "rel_start", np.int64), ctx.const([rows], "rel_stop", np.int64),
                           ctx.const([0], "rel_axis", np.int64)], "rel")                     # (2·span, d)

    def table(name: str) -> str:                                                             # (h, dh, 2·span)
        t = ctx.op("Reshape", [ctx.linear(rel, f"{name}.", f"pos_{name}", True),
                               ctx.const([rows, h, dh], f"pos_{name}_heads", np.int64)], f"pos_{name}")
        return ctx.op("Transpose", [t], f"pos_{name}", perm=[1, 2, 0])

    c2p_of, p2c_of, far = disentangled_position_index(a.position_buckets, a.max_relative_positions)
    distance, n1 = _distance(ctx, x, far)
    size = ctx.op("Concat", [ctx.shape(q, 0, 3, "bhn"), n1], "bhnn", axis=0)                 # [B, h, n, n]
    divisor = ctx.const(root, "root", np.float32)

    def term(content: str, proj: str, index_table: np.ndarray, tag: str) -> str:
        att = ctx.op("MatMul", [content, table(proj)], f"{tag}_att")                          # (B, h, n, 2·span)
        idx = ctx.op("Gather", [ctx.const(index_table, f"{tag}_of", np.int64), distance], f"{tag}_index", axis=0)
        idx = ctx.op("Expand", [idx, size], f"{tag}_index")                                  # (B, h, n, n)
        return ctx.op("GatherElements", [att, idx], tag, axis=-1)

    share = a.share_att_key
    scores = ctx.op("Div", [ctx.op("MatMul", [q, ctx.op("Transpose", [k], "k_t", perm=[0, 1, 3, 2])], "c2c"),
                            divisor], "c2c")                                                 # (B, h, n, n)
    if "c2p" in a.pos_att_type:
        c2p = term(q, "key_proj" if share else "pos_key_proj", c2p_of, "c2p")
        scores = ctx.op("Add", [scores, ctx.op("Div", [c2p, divisor], "c2p")], "scores")
    if "p2c" in a.pos_att_type:   # gathered along the key's row, then transposed, as transformers does
        p2c = ctx.op("Transpose", [term(k, "query_proj" if share else "pos_query_proj", p2c_of, "p2c")], "p2c",
                     perm=[0, 1, 3, 2])
        scores = ctx.op("Add", [scores, ctx.op("Div", [p2c, divisor], "p2c")], "scores")
    if mask is not None:   # the mask's outer product, filled with the lowest float (a padded row: uniform)
        keep = ctx.op("Cast", [mask], "keep", to=TensorProto.BOOL)
        keep = ctx.op("And", [ctx.op("Unsqueeze", [keep, ctx.const([1, 3], "query_axes", np.int64)], "keep_q"),
                              ctx.op("Unsqueeze", [keep, ctx.const([1, 2], "key_axes", np.int64)], "keep_k")],
                      "keep")                                                                # (B, 1, n, n)
        lowest = ctx.const(np.finfo(np.float32).min, "lowest", np.float32)
        scores = ctx.op("Where", [keep, scores, lowest], "masked")
    probs = ctx.op("Softmax", [scores], "probs", axis=-1)
    y = ctx.op("MatMul", [probs, v], "context")                                              # (B, h, n, dh)
    y = ctx.op("Transpose", [y], "context", perm=[0, 2, 1, 3])
    ctx.op("Reshape", [y, ctx.const([0, 0, d], "merge", np.int64)], final=True)              # (B, n, d)
