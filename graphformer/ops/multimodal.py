"""Multimodal ops: pooling at a position chosen by token ids, l2 normalisation, contrastive logits,
CLIP's quick-GELU activation, and LLaVA's image features placed at the image-token positions."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import (
    MIXES, OFFSET, POSITION, Saved, THROUGH, UNPLANNED, keeps, keeps_float_inputs,
    Attrs, NoAttrs, OpDef, TensorType, register, expect_rank, expect_dim, expect_dtype,
    expect_float, numel, INT_DTYPES, ShapeError,
)
from ..base.dims import Dim
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
    bias: bool = Field(False, description="add a learned scalar `logit_bias` after the scale (SigLIP's sigmoid "
                                          "loss: exp(logit_scale) · cosine + logit_bias)")
    bias_init: float = Field(-10.0, description="initial logit_bias (SigLIP's −10)")


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
    return 2 * na * nb * d + norm + numel(out.shape) * ((a.scale == "learned") + a.bias)


register(OpDef(
    "cosine_logits", "multimodal",
    "Cosine similarity of every row of `a [N_a, d]` with every row of `b [N_b, d]`, times exp(logit_scale): "
    "`[N_a, N_b]` (CLIP's logits_per_text with a = text, b = image). Parameter `logit_scale` (a scalar); with "
    "`bias`, plus a learned scalar `logit_bias` (SigLIP).",
    CosineAttrs, ("a", "b"), _cosine_shape,
    params=lambda a, ins: {**({"logit_scale": ()} if a.scale == "learned" else {}),
                           **({"logit_bias": ()} if a.bias else {})},
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
    # weight-free and element-wise: a column-split value stays split through it (GPT-OSS's sigmoid(α·g))
    sequence=POSITION, tp=THROUGH, saves=keeps(),
    example="average: {op: scale, by: 0.5}",
))


# ---------------------------------------------------------------- equal

class EqualAttrs(Attrs):
    to: int = Field(description="the constant each element is compared with (an integer or an integer param)")


def _equal_shape(a: EqualAttrs, ins):
    expect_dtype(ins["x"], "x", INT_DTYPES)
    return TensorType(ins["x"].shape, "bool")


register(OpDef(
    "equal", "multimodal",
    "Compare every element of an integer tensor with a constant: `[*]` int64 → `[*]` bool, true where equal "
    "(LLaVA's image-token positions, `input_ids == image_token_id`).",
    EqualAttrs, ("x",), _equal_shape, flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=UNPLANNED, saves=keeps(),
    example="image_positions: {op: equal, in: tokens, to: image_token}",
))


# ---------------------------------------------------------------- scatter_tokens

def _scatter_shape(a, ins):
    x, mask, feats = ins["x"], ins["mask"], ins["features"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_float(x, "x")
    expect_rank(mask, "mask", 2, what=" ([B, n])")
    expect_dtype(mask, "mask", ("bool",) + INT_DTYPES)
    expect_dim(mask.shape[0], x.shape[0], "mask", "dimension 0 (batch)", mask)
    expect_dim(mask.shape[1], x.shape[1], "mask", "dimension 1 (tokens)", mask)
    if feats.rank not in (2, 3):
        raise ShapeError("GF121", f"`features` must be [N, d] or [B, k, d], got {feats}", "features")
    expect_float(feats, "features")
    expect_dim(feats.shape[-1], x.shape[2], "features", "the last dimension (the width)", feats)
    spare = x.shape[0] * x.shape[1] - numel(feats.shape[:-1])   # positions minus features
    if _negative(spare):
        raise ShapeError("GF239", f"{numel(feats.shape[:-1])} feature vectors cannot fit in the "
                         f"{x.shape[0] * x.shape[1]} positions of `x` {x}", "features",
                         help="each feature vector replaces one marked position: the sequence must be at least "
                              "as long as the features it receives")
    return x


def _negative(d: Dim) -> bool:
    """Whether `d` is below 0 for every positive size of its symbols: a negative constant, or (say
    `8·B − 16·B`) only negative terms over plain symbols, each at least 1."""
    return (d.is_const and d.value < 0) or (not d.is_const and all(
        c < 0 and all(isinstance(a, str) for a, _ in mono) for mono, c in d._terms))


register(OpDef(
    "scatter_tokens", "multimodal",
    "Put feature vectors at the positions a mask marks: `x [B, n, d]` with, in row-major order over the "
    "true (or non-zero) positions of `mask [B, n]`, the rows of `features [N, d]` or `[B, k, d]` (flattened) — "
    "transformers' `masked_scatter` of LLaVA's image features into the token embeddings. The number of marked "
    "positions must equal the number of feature vectors (checked when the model runs; GF239 when the shapes "
    "alone rule it out). Under generation the features enter with the prompt only.",
    NoAttrs, ("x", "mask", "features"), _scatter_shape,
    flops=lambda a, ins, out: Dim.const(0),
    # OFFSET: a decoder step reads the cache's length to know the prompt (which took the features) is in
    sequence=OFFSET, tp=UNPLANNED, saves=keeps("mask"),
    example="merged: {op: scatter_tokens, in: {x: tok, mask: image_positions, features: projector}}",
))
