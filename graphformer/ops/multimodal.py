"""Multimodal ops: pooling at a position chosen by token ids, l2 normalisation, contrastive logits,
and CLIP's quick-GELU activation."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import (
    MIXES, POSITION, Saved, THROUGH, UNPLANNED, keeps, keeps_float_inputs,
    Attrs, NoAttrs, OpDef, TensorType, register, expect_rank, expect_dim, expect_dtype,
    expect_float, numel, INT_DTYPES,
)
from .core import concrete


# ---------------------------------------------------------------- token_at

class TokenAtAttrs(Attrs):
    select: Literal["argmax", "first"] = Field(
        "argmax", description="`argmax`: where the id is largest (CLIP's end-of-text token, the largest id in "
                              "its vocabulary); `first`: the first position whose id equals `token`")
    token: int | None = Field(None, ge=0, description="the id to look for (select: first; unused by argmax)")

    @model_validator(mode="after")
    def _token_given(self):
        if self.select == "first" and self.token is None:
            raise ValueError("`select: first` needs `token: ID`")
        return self   # `token` with argmax is unused: a param can then switch the rule alone (CLIP's pooling)


def _token_at_shape(a: TokenAtAttrs, ins):
    x, ids = ins["x"], ins["ids"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_rank(ids, "ids", 2, what=" ([B, n])")
    expect_dtype(ids, "ids", INT_DTYPES)
    expect_dim(ids.shape[0], x.shape[0], "ids", "dimension 0 (batch)", ids)
    expect_dim(ids.shape[1], x.shape[1], "ids", "dimension 1 (tokens)", ids)
    return TensorType((x.shape[0], x.shape[2]), x.dtype)


register(OpDef(
    "token_at", "multimodal",
    "Pool `x [B, n, d]` to `[B, d]` by taking, in each row, the token at a position chosen by the ids "
    "`[B, n]`: the argmax of the ids (CLIP's end-of-text pooling) or the first occurrence of `token`.",
    TokenAtAttrs, ("x", "ids"), _token_at_shape,
    sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="pooled: {op: token_at, in: {x: final_norm, ids: input_ids}, select: argmax}",
))


# ---------------------------------------------------------------- l2_normalize

class L2Attrs(Attrs):
    eps: float = Field(1e-12, ge=0.0, description="lower bound on the norm (keeps a zero vector finite)")


def _l2_shape(a: L2Attrs, ins):
    x = ins["x"]
    expect_float(x, "x")
    expect_rank(x, "x", min_rank=1)
    return x


register(OpDef(
    "l2_normalize", "multimodal", "Scale each vector along the last axis to unit Euclidean length.",
    L2Attrs, ("x",), _l2_shape, flops=lambda a, ins, out: 3 * numel(out.shape),
    sequence=POSITION, tp=UNPLANNED, saves=keeps_float_inputs,
    example="image_embeds: {op: l2_normalize}",
))


# ---------------------------------------------------------------- cosine_logits

class CosineAttrs(Attrs):
    normalize: bool = Field(True, description="l2-normalise both inputs first; false if they already are")
    scale: Literal["learned", "none"] = Field(
        "learned", description="`learned`: multiply by exp(logit_scale), a learned scalar (CLIP)")
    init: float = Field(2.6592, description="initial logit_scale: ln(1 / 0.07), CLIP's temperature")


def _cosine_shape(a: CosineAttrs, ins):
    x, y = ins["a"], ins["b"]
    expect_rank(x, "a", 2, what=" ([N_a, d])")
    expect_rank(y, "b", 2, what=" ([N_b, d])")
    expect_float(x, "a"), expect_float(y, "b")
    concrete(x.shape[1], "a", "the embedding width")
    expect_dim(y.shape[1], x.shape[1], "b", "the embedding width", y)
    return TensorType((x.shape[0], y.shape[0]))


def _cosine_flops(a: CosineAttrs, ins, out):
    na, d = ins["a"].shape
    nb = ins["b"].shape[0]
    norm = 3 * (na + nb) * d if a.normalize else 0
    return 2 * na * nb * d + norm + (numel(out.shape) if a.scale == "learned" else 0)


register(OpDef(
    "cosine_logits", "multimodal",
    "Cosine similarity of every row of `a [N_a, d]` with every row of `b [N_b, d]`, times exp(logit_scale): "
    "`[N_a, N_b]` (CLIP's logits_per_text with a = text, b = image). Parameter `logit_scale` (a scalar).",
    CosineAttrs, ("a", "b"), _cosine_shape,
    params=lambda a, ins: {"logit_scale": ()} if a.scale == "learned" else {},
    flops=_cosine_flops,
    sequence=MIXES, tp=UNPLANNED, saves=keeps_float_inputs, matmul=True,
    example="logits_per_text: {op: cosine_logits, in: {a: text_embeds, b: image_embeds}}",
))


# ---------------------------------------------------------------- quick_gelu

def _float_same(a, ins):
    expect_float(ins["x"], "x")
    return ins["x"]


register(OpDef(
    "quick_gelu", "multimodal", "CLIP's activation x · sigmoid(1.702 x), a cheap approximation of GELU.",
    NoAttrs, ("x",), _float_same, flops=lambda a, ins, out: 3 * numel(out.shape),
    sequence=POSITION, tp=THROUGH, saves=lambda c: Saved(("x",), c.bytes(c.out)),  # x, σ(1.702x)
    example="act: {op: quick_gelu}",
))


# ---------------------------------------------------------------- scale

class ScaleAttrs(Attrs):
    by: float = Field(description="the constant factor")


register(OpDef(
    "scale", "multimodal", "Multiply by a constant (LXMERT averages its two visual embeddings: sum, then × 0.5).",
    ScaleAttrs, ("x",), _float_same, flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=UNPLANNED, saves=keeps(),
    example="average: {op: scale, by: 0.5}",
))
