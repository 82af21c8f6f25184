"""ONNX lowerings of the vision ops (ops/vision.py), with the semantics of backends/torch/vision.py.

Learned tokens and latent arrays are broadcast over the runtime batch with Expand, so nothing here fixes
`B` or the token count.
"""
from __future__ import annotations

import numpy as np

from .lower import NodeEmitter, lowers


def _broadcast_batch(ctx: NodeEmitter, table: str, like: str, rows: int, width: int, tag: str,
                     final: bool = False) -> str:
    """A learned `[rows, width]` table repeated over the batch of `like`: `[B, rows, width]`."""
    batch = ctx.shape(like, 0, 1, f"{tag}_batch")                                            # [B]
    shape = ctx.op("Concat", [batch, ctx.const([rows, width], f"{tag}_rows", np.int64)], f"{tag}_shape", axis=0)
    one = ctx.op("Unsqueeze", [table, ctx.const([0], f"{tag}_axis", np.int64)], tag)         # (1, rows, width)
    return ctx.op("Expand", [one, shape], tag, final=final)                                  # (B, rows, width)


# ---------------------------------------------------------------- vision

@lowers("patch_embed")
def _patch_embed(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    if a.remainder == "pad":
        ph, pw = a.padding(ctx.types["x"].shape[2].value, ctx.types["x"].shape[3].value)
        if ph or pw:
            x = ctx.op("Pad", [x, ctx.const([0, 0, 0, 0, 0, 0, ph, pw], "pads", np.int64)], "pad")
    ins = [x, ctx.param("weight")] + ([ctx.param("bias")] if a.bias else [])
    # a strided convolution, like torch.nn.Conv2d: trailing rows/columns that fit no patch are dropped
    y = ctx.op("Conv", ins, kernel_shape=[a.patch, a.patch], strides=list(a.strides))               # (B, D, nh, nw)
    if a.grid:
        ctx.op("Transpose", [y], perm=[0, 2, 3, 1], final=True)                              # (B, nh, nw, D)
        return
    y = ctx.op("Reshape", [y, ctx.const([0, 0, -1], "flatten", np.int64)], "flatten")       # (B, D, nh·nw)
    ctx.op("Transpose", [y], perm=[0, 2, 1], final=True)                                     # (B, N, D), row-major


@lowers("prepend_tokens")
def _prepend_tokens(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    d = ctx.types["x"].shape[2].value
    tokens = _broadcast_batch(ctx, ctx.param("tokens"), x, node.attrs.count, d, "tokens")
    ctx.op("Concat", [tokens, x], axis=1, final=True)


@lowers("latents")
def _latents(ctx: NodeEmitter, node) -> None:
    (like,) = ctx.inputs
    a = node.attrs
    _broadcast_batch(ctx, ctx.param("latents"), like, a.count, a.dim, "latents", final=True)
