"""Disentangled attention (DeBERTa, He et al. 2021; transformers' DebertaV2Model): content and relative
position as two separate vectors per token, attended to separately.

`disentangled_attention` scores query i against key j as the sum of up to three terms, each a dot product
of one head's vectors:

  content → content   q_i · k_j
  content → position  q_i · Kr[δ(i, j)]        (`c2p`: the query reads the key's relative position)
  position → content  k_j · Qr[δ'(i, j)]       (`p2c`: the key reads the query's relative position)

where Kr and Qr are the shared relative-position table `rel` projected by this layer (its own `key_proj`
and `query_proj` under `share_att_key`, else `pos_key_proj` / `pos_query_proj`), δ(i, j) the bucket of
i − j shifted into the table (exact below `position_buckets // 2`, logarithmic up to
`max_relative_positions`, clipped at both ends) and δ'(i, j) the mirrored index transformers gathers with.
All terms are divided by sqrt(d_head · (1 + number of position terms)).

Why these are ops of their own and not attributes of `attention`:
- the position terms are a *gather* over projected table rows, per head and per layer, not an additive
  bias that one node could compute for every layer (T5's `relative_position_bias`): each layer projects
  the same table through its own weights, so the bias exists only inside the layer;
- the parameters are transformers' (`query_proj`, `key_proj`, `value_proj`, no output projection: DeBERTa's
  output dense is a separate module, a `linear` in the spec), so the weight map is a plain rename;
- `attention`'s lowerings, KV cache, TP plan and memory estimate stay untouched (DeBERTa is an encoder).

The table itself is `relative_embeddings` (`[2·span, d]`, no batch axis): one node outside the repeated
layer feeds every repetition (a block input that is not carried is handed to each repetition unchanged),
so it is one parameter, read by all layers, as in the reference (`encoder.rel_embeddings`); DeBERTa-v3's
LayerNorm on it is a plain `norm` node between the two.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..base.dims import Dim
from .base import (MIXES, REPLICATE, UNPLANNED, Attrs, DimAttr, OpDef, Saved, ShapeError, TensorType, expect_dim,
                   expect_divisible, expect_float, expect_rank, keeps, positive, register)
from .core import _last, _mask_check, _proj


# ---------------------------------------------------------------- relative_embeddings

class RelativeEmbeddingsAttrs(Attrs):
    dim_fields = ("rows", "dim")
    rows: DimAttr = Field(description="rows of the table: 2 · span (`2 · position_buckets`, or "
                          "`2 · max_relative_positions` without buckets)")
    dim: DimAttr = Field(description="width of each row (the model width)")


def _table_shape(a: RelativeEmbeddingsAttrs, ins):
    expect_rank(ins["like"], "like", min_rank=1)
    positive(a.rows, "rows"), positive(a.dim, "dim")
    return TensorType((Dim.const(a.rows), Dim.const(a.dim)))


register(OpDef(
    "relative_embeddings", "relative",
    "A learned table `weight [rows, dim]` of relative-position embeddings, output as it is (`[rows, dim]`, no "
    "batch axis); `like` only orders it in the graph (its values are not read). DeBERTa's "
    "`encoder.rel_embeddings`: one node feeds the `rel` input of every layer's `disentangled_attention`.",
    RelativeEmbeddingsAttrs, ("like",), _table_shape,
    params=lambda a, ins: {"weight": (a.rows, a.dim)},
    sequence=MIXES, tp=UNPLANNED, saves=keeps(), embedding=True,
    example="rel: {op: relative_embeddings, in: x, rows: 2 * position_buckets, dim: d_model}",
))


# ---------------------------------------------------------------- disentangled_attention

class DisentangledAttentionAttrs(Attrs):
    dim_fields = ("heads", "position_buckets", "max_relative_positions")
    heads: DimAttr = Field(description="attention heads; the width of x splits evenly among them")
    position_buckets: DimAttr = Field(256, description="relative positions are bucketed into 2 · this many "
                                      "(exact below half of it, logarithmic beyond); 0 or less: no buckets, "
                                      "distances clipped at `max_relative_positions`")
    max_relative_positions: DimAttr = Field(512, description="the distance the logarithmic buckets reach (written "
                                            "out: transformers' -1 means `max_position_embeddings`)")
    pos_att_type: tuple[Literal["c2p", "p2c"], ...] = Field(
        ("c2p", "p2c"), min_length=1, description="position terms: `c2p` (query · relative-position keys), `p2c` "
        "(relative-position queries · keys), one or both")
    share_att_key: bool = Field(True, description="project the positions with this layer's `query_proj` / "
                                "`key_proj`; false: with `pos_query_proj` / `pos_key_proj` of their own")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the attention probabilities while training")
    pos_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on `rel` while training (each layer its own)")

    @field_validator("pos_att_type")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("each of c2p and p2c at most once")
        return v

    @property
    def span(self) -> int:
        """Relative positions each side of 0 the table holds (transformers' `pos_ebd_size`)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions

    @property
    def scale_factor(self) -> int:
        return 1 + len(self.pos_att_type)

    def position_projections(self) -> tuple[str, ...]:
        """The projections the position table goes through, named as their parameters."""
        if self.share_att_key:
            return tuple(p for t, p in (("p2c", "query_proj"), ("c2p", "key_proj")) if t in self.pos_att_type)
        return tuple(p for t, p in (("p2c", "pos_query_proj"), ("c2p", "pos_key_proj")) if t in self.pos_att_type)


def _buckets_check(a: DisentangledAttentionAttrs):
    if a.max_relative_positions < 1:
        raise ShapeError("GF287", f"`max_relative_positions` is {a.max_relative_positions}: write the distance out "
                         "(transformers reads -1 as `max_position_embeddings`, e.g. 512)", attr="max_relative_positions")
    b = a.position_buckets
    if b > 0 and (b < 4 or a.max_relative_positions - 1 <= b // 2):
        raise ShapeError(
            "GF287", f"{b} position buckets cannot reach `max_relative_positions` {a.max_relative_positions}: the "
            f"logarithmic buckets need at least 4 buckets and max_relative_positions − 1 > position_buckets // 2",
            attr="position_buckets",
            help="DeBERTa-v3 uses position_buckets 256 with max_relative_positions 512; 0 turns buckets off")


def _attention_shape(a: DisentangledAttentionAttrs, ins):
    x, rel = ins["x"], ins["rel"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_float(x, "x")
    d = _last(x)
    positive(a.heads, "heads")
    expect_divisible(d, a.heads, f"width {d} must split evenly into {a.heads} heads", attr="heads")
    _buckets_check(a)
    expect_rank(rel, "rel", 2, what=" ([rows, d]: the relative-position table, no batch axis)")
    expect_float(rel, "rel")
    expect_dim(rel.shape[1], x.shape[2], "rel", "dimension 1 (width)", rel)
    rows = rel.shape[0]
    if rows.is_const and rows.value < 2 * a.span:
        raise ShapeError("GF286", f"`rel` has {rows.value} rows, but {a.span} relative positions each side need "
                         f"2 · {a.span} = {2 * a.span}", "rel",
                         help="make the table `2 * position_buckets` rows (or `2 * max_relative_positions` "
                         "without buckets); extra rows are not read, as in transformers")
    _mask_check(ins, x.shape[0], x.shape[1], "n")
    return x


def _params(a: DisentangledAttentionAttrs, ins):
    d = _last(ins["x"])
    p = {**_proj(d, d, True, "query_proj"), **_proj(d, d, True, "key_proj"), **_proj(d, d, True, "value_proj")}
    if not a.share_att_key:
        p.update({k: v for name in a.position_projections() for k, v in _proj(d, d, True, name).items()})
    return p


def _flops(a: DisentangledAttentionAttrs, ins, out):
    b, n, _ = ins["x"].shape
    d = _last(ins["x"])
    r = 2 * a.span
    terms = len(a.pos_att_type)
    # q, k, v; the table through one projection per position term (once, not per batch row); content scores
    # and p·v over n × n; each position term's [n, 2·span] products per head (the gather moves, it adds nothing)
    return (2 * b * n * 3 * d * d + 2 * r * d * d * len(a.position_projections())
            + 2 * b * n * n * 2 * d + terms * 2 * b * n * r * d)


def _saves(c) -> Saved:
    """q, k, v, the projected table, each position term's [B, h, n, 2·span] products, the n × n bias and the
    attention output: an estimate in the spirit of `attention`'s."""
    a, x, s = c.attrs, c.ins["x"], c.itemsize
    b, t = x.shape[0].evaluate(c.dims), x.shape[1].evaluate(c.dims)
    d = x.shape[2].evaluate(c.dims)
    r = 2 * a.span
    terms = len(a.pos_att_type)
    return Saved(("x", "rel"), s * (4 * b * t * d + terms * r * d + terms * b * a.heads * t * r
                                    + b * a.heads * t * t))


register(OpDef(
    "disentangled_attention", "relative",
    "DeBERTa's disentangled self-attention over `x [B, n, d]` → `[B, n, d]` (the heads' contexts, before the "
    "output projection): content-to-content scores plus content-to-position (`c2p`: queries · the relative-"
    "position keys) and position-to-content (`p2c`: the relative-position queries · keys), the positions read "
    "from the shared table `rel [2·span, d]` through this layer's projections, bucketed logarithmically "
    "(`position_buckets`, `max_relative_positions`) and gathered per query/key pair; scale "
    "1/sqrt(d_head · (1 + terms)). The optional `mask [B, n]` (bool or 0/1) masks padded keys and queries as "
    "transformers does (a padded query attends to every key evenly).",
    DisentangledAttentionAttrs, ("x", "rel", "mask?"), _attention_shape, params=_params, flops=_flops,
    sequence=MIXES, tp=REPLICATE, saves=_saves, matmul=True,
    example="attn: {op: disentangled_attention, in: {x: x, rel: rel}, heads: 4, position_buckets: 8, "
            "max_relative_positions: 16}",
))
