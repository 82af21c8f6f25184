"""Multi-head latent attention (DeepSeek-V2, Liu et al. 2024): keys and values through one compressed latent.

Per token, `kv_a` maps x to a `kv_rank`-wide latent (RMS-normalised) and one `rope_dim`-wide rotary key
shared by every head; `kv_b` expands the latent into each head's non-rotary key (`nope_dim`) and its
value (`v_dim`). Queries are one projection (`q_rank: 0`, V2-Lite) or a low-rank pair through a
`q_rank`-wide RMS-normalised latent (`q_a`, `q_norm`, `q_b`); each head's query is `nope_dim + rope_dim`
wide, its rotary part rotated in interleaved pairs (x₂ᵢ, x₂ᵢ₊₁), as transformers' `apply_rotary_emb`.

A decoder caches what the reference caches: the normalised latent and the rotated shared key,
`kv_rank + rope_dim` numbers per token and layer instead of `heads · (nope_dim + rope_dim + v_dim)`.

A separate op rather than attributes on `attention`: its parameters, head widths (queries and keys wider
than values), rotary layout and cache share nothing with the q/k/v/o projections of `attention`, so
folding it in would add a second code path to every lowering of that op (docs/spec-language.md).
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from .base import (CACHE, HEADS, Attrs, DimAttr, OpDef, Saved, ShapeError, expect_positions,
                   expect_float, expect_rank, positive, register)
from .core import _last, _mask_check, _proj

class LatentAttentionAttrs(Attrs):
    dim_fields = ("heads", "kv_rank", "q_rank", "nope_dim", "rope_dim", "v_dim", "max_len")
    heads: DimAttr = Field(description="attention heads; the width of q, k and v splits evenly among them")
    kv_rank: DimAttr = Field(description="width of the compressed key/value latent (`kv_lora_rank`)")
    q_rank: DimAttr = Field(0, ge=0, description="width of the query latent (`q_lora_rank`); 0: one full-rank "
                            "query projection `q` (DeepSeek-V2-Lite)")
    nope_dim: DimAttr = Field(description="per-head query/key width without rotary (`qk_nope_head_dim`)")
    rope_dim: DimAttr = Field(description="per-head rotary width; the rotary key is shared by all heads "
                              "(`qk_rope_head_dim`), rotated in interleaved pairs")
    v_dim: DimAttr = Field(description="per-head value width (`v_head_dim`)")
    causal: bool = True
    bias: bool = Field(False, description="biases of `q_a`, `kv_a` and `o` (`attention_bias`); `q`, `q_b` and "
                       "`kv_b` have none, as in the reference")
    eps: float = Field(1e-6, gt=0, description="epsilon of the two latent RMSNorms")
    scale: float | None = Field(None, gt=0, description="logit scale; default 1/sqrt(nope_dim + rope_dim), "
                                "times YaRN's mscale(factor, mscale_all_dim)² under `rope_scaling: yarn`")
    rope_theta: float = Field(10000.0, gt=0, description="rotary base")
    rope_scaling: Literal["none", "yarn"] = Field("none", description="frequency scaling (YaRN, as DeepSeek-V2)")
    rope_factor: float = Field(1.0, gt=0, description="yarn: `factor`")
    rope_original_max_len: int = Field(4096, ge=1, description="yarn: `original_max_position_embeddings`")
    rope_beta_fast: float = Field(32.0, gt=0, description="yarn: `beta_fast`")
    rope_beta_slow: float = Field(1.0, gt=0, description="yarn: `beta_slow`")
    rope_mscale: float = Field(0.0, ge=0, description="yarn: `mscale` (0: not given)")
    rope_mscale_all_dim: float = Field(0.0, ge=0, description="yarn: `mscale_all_dim` (0: not given)")
    max_len: DimAttr | None = Field(None, ge=1, description="the longest sequence the model serves (generation "
                                    "sizes its cache by it)")

    # what generation, the memory plan and the decoder plan read, named as on `attention`
    window: ClassVar[None] = None
    rope: ClassVar[bool] = True

    @property
    def qk_dim(self) -> int:
        return self.nope_dim + self.rope_dim

    @property
    def rope_attention_factor(self) -> float:
        """YaRN's factor on cos and sin of the rotary part (transformers' `attention_factor`); 1 without."""
        if self.rope_scaling != "yarn":
            return 1.0
        if self.rope_mscale and self.rope_mscale_all_dim:
            return _mscale(self.rope_factor, self.rope_mscale) / _mscale(self.rope_factor, self.rope_mscale_all_dim)
        return _mscale(self.rope_factor, 1.0)

    @property
    def softmax_scale(self) -> float:
        if self.scale is not None:
            return self.scale
        s = self.qk_dim ** -0.5
        if self.rope_scaling == "yarn" and self.rope_mscale_all_dim:
            s *= _mscale(self.rope_factor, self.rope_mscale_all_dim) ** 2
        return s

    def cache_widths(self, d: int | None = None) -> tuple[int, int, int]:
        """(heads, key width, value width) of a cache slot: one latent and one shared rotary key."""
        return 1, self.kv_rank, self.rope_dim

    def latent_shards(self) -> list[tuple[str, str, str]]:
        """(parameter, style, why) under tensor parallelism: the heads' projections split, the latent ones
        whole (tp_plan.py reads this for an op whose `tp` is HEADS)."""
        q = "q_b" if self.q_rank else "q"
        per = f"heads split across ranks ({self.heads} in all)"
        return ([(q, "colwise", per), ("kv_b", "colwise", per), ("o", "rowwise", "partial sums all-reduced")]
                + [(p, "replicate", "latent projection: every head reads all of it")
                   for p in (("q_a", "kv_a") if self.q_rank else ("kv_a",))])


def _mscale(factor: float, mscale: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _shape(a: LatentAttentionAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_float(x, "x")
    _last(x)
    for f in ("heads", "kv_rank", "nope_dim", "rope_dim", "v_dim"):
        positive(getattr(a, f), f)
    if a.rope_dim % 2:
        raise ShapeError("GF240", f"`rope_dim` {a.rope_dim} is odd: the rotary part turns in pairs", attr="rope_dim",
                         help="DeepSeek-V2 rotates 64 dims per head; any even width works")
    n = x.shape[1]
    if a.max_len is not None and n.is_const and n.value > a.max_len:
        raise ShapeError("GF120", f"sequence length {n.value} exceeds `max_len` {a.max_len}", "x")
    _mask_check(ins, x.shape[0], n, "n")
    expect_positions(ins, n)
    return x


def _params(a: LatentAttentionAttrs, ins):
    d = _last(ins["x"])
    h = a.heads
    if a.q_rank:
        q = {**_proj(d, a.q_rank, a.bias, "q_a"), "q_norm.weight": (a.q_rank,), **_proj(a.q_rank, h * a.qk_dim,
                                                                                         False, "q_b")}
    else:
        q = _proj(d, h * a.qk_dim, False, "q")
    return {**q, **_proj(d, a.kv_rank + a.rope_dim, a.bias, "kv_a"), "kv_norm.weight": (a.kv_rank,),
            **_proj(a.kv_rank, h * (a.nope_dim + a.v_dim), False, "kv_b"), **_proj(h * a.v_dim, d, a.bias, "o")}


def _flops(a: LatentAttentionAttrs, ins, out):
    b, n, _ = ins["x"].shape
    d = _last(ins["x"])
    h = a.heads
    q = d * a.q_rank + a.q_rank * h * a.qk_dim if a.q_rank else d * h * a.qk_dim
    proj = q + d * (a.kv_rank + a.rope_dim) + a.kv_rank * h * (a.nope_dim + a.v_dim) + h * a.v_dim * d
    # projections (the keys and values expanded from the latent), then q·kᵀ and p·v over the full n × n
    return 2 * b * n * proj + 2 * b * n * n * h * (a.qk_dim + a.v_dim)


def _saves(c) -> Saved:
    """The latents, the expanded per-head keys and values and queries, and the attention output (SDPA keeps
    q, k, v and its output, plus the log-sum-exp per row): an estimate in the spirit of `attention`'s."""
    a, x, s = c.attrs, c.ins["x"], c.itemsize
    b, t = x.shape[0].evaluate(c.dims), x.shape[1].evaluate(c.dims)
    qk = a.nope_dim + a.rope_dim
    per_token = a.kv_rank + a.rope_dim + a.q_rank + a.heads * (2 * qk + 2 * a.v_dim)
    return Saved(("x",), s * b * t * per_token + 4 * b * a.heads * t)


register(OpDef(
    "latent_attention", "mla",
    "Multi-head latent attention (DeepSeek-V2) over `x [B, n, d]`: keys and values expanded from a "
    "`kv_rank`-wide normalised latent, one `rope_dim`-wide rotary key shared by all heads (interleaved "
    "pairs, optional YaRN scaling), queries full-rank (`q_rank: 0`) or through a normalised `q_rank` latent, "
    "values `v_dim` wide. Generation caches the latent and the rotary key only. `causal` masks the future; the "
    "optional `mask [B, n]` marks real keys; the optional `positions [B, n]` are the rotary positions.",
    LatentAttentionAttrs, ("x", "mask?", "positions?"), _shape, params=_params, flops=_flops,
    sequence=CACHE, tp=HEADS, saves=_saves, matmul=True, max_len=lambda a: a.max_len,
    example="attn: {op: latent_attention, heads: 4, kv_rank: 16, nope_dim: 8, rope_dim: 4, v_dim: 8}",
))
