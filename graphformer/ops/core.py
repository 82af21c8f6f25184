"""Core text-transformer ops: embeddings, linear, attention, norms, element-wise and structural ops.

FLOPs convention: a multiply-add counts 2 (linear, attention matmuls); element-wise ops count one per
output element; norms 5 per element; softmax 3 per element. Dropout, embeddings lookups: 0.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, StrictBool, StrictInt, field_validator

from ..base.dims import Dim
from .base import (
    Attrs, DimAttr, NoAttrs, OpDef, ShapeError, TensorType, register, expect_rank, expect_dim,
    expect_dtype, expect_float, expect_divisible, expect_positions, same_shape, numel, positive, INT_DTYPES,
    Saved, keeps, POSITION, AXIS, CACHE, CONTEXT, OFFSET, MIXES, THROUGH, MATMUL, HEADS, VOCAB, REPLICATE,
    UNPLANNED,
)


def concrete(d: Dim, port: str, what: str) -> int:
    if not d.is_const:
        raise ShapeError("GF124", f"{what} of `{port}` must be a concrete size to size the weights, got `{d}`", port)
    return d.value


def _last(x: TensorType, port: str = "x") -> int:
    expect_rank(x, port, min_rank=1)
    return concrete(x.shape[-1], port, "the last dimension")


# ---------------------------------------------------------------- embedding

class EmbeddingAttrs(Attrs):
    dim_fields = ("vocab", "dim", "padding_idx")
    ref_fields = ("tied",)
    tie_field = "tied"
    vocab: DimAttr = Field(description="rows of the table: the number of token ids")
    dim: DimAttr = Field(description="width of each embedding vector")
    padding_idx: DimAttr | None = Field(None, description="the pad token's row: looked up as any other, but it "
                                        "gets no gradient (torch's nn.Embedding(padding_idx=...), transformers' "
                                        "pad_token_id); an id from 0 to vocab - 1, or negative for none")
    scale: bool = Field(False, description="multiply the looked-up rows by sqrt(dim), as in Vaswani et al.")
    tied: str | None = Field(None, description="name of another embedding node whose table this one reads (one "
                                               "shared table: T5's encoder and decoder embeddings)")
    tie: bool = Field(True, description="with `tied`: false gives this node its own table instead")

    @property
    def pad_row(self) -> int | None:
        """The row that gets no gradient, or None (`padding_idx` absent or negative)."""
        return None if self.padding_idx is None or self.padding_idx < 0 else int(self.padding_idx)


def _embedding_shape(a: EmbeddingAttrs, ins):
    ids = ins["ids"]
    expect_dtype(ids, "ids", INT_DTYPES)
    positive(a.vocab, "vocab"), positive(a.dim, "dim")
    if a.pad_row is not None and a.pad_row >= a.vocab:
        raise ShapeError("GF259", f"`padding_idx` {a.pad_row} is not a row of the table (vocab {a.vocab})",
                         attr="padding_idx", help="the pad token's id is below vocab; a negative value means none")
    return TensorType(ids.shape + (Dim.const(a.dim),))


register(OpDef(
    "embedding", "core", "Look up rows of a learned table by integer id: `[*] int64 → [*, dim]`. With "
    "`tied: other` the table is another embedding node's (one parameter, counted once).",
    EmbeddingAttrs, ("ids",), _embedding_shape,
    params=lambda a, ins: {} if a.tied else {"weight": (a.vocab, a.dim)},
    sequence=POSITION, tp=VOCAB, saves=keeps("ids"), embedding=True, token_table=True,
    example="tok: {op: embedding, in: tokens, vocab: vocab, dim: d_model}",
))


# ---------------------------------------------------------------- positional

class PositionalAttrs(Attrs):
    dim_fields = ("max_len",)
    kind: Literal["sinusoidal", "learned"] = "learned"
    max_len: DimAttr = Field(description="the longest sequence the table covers")
    sinusoid: Literal["interleaved", "halves"] = Field(
        "interleaved", description="kind sinusoidal: `interleaved` is Vaswani et al. (sin at even, cos at odd "
                                   "columns, frequencies 10000^(−2i/d)); `halves` is tensor2tensor's, fairseq's and "
                                   "Whisper's ([sin | cos] halves, frequencies 10000^(−i/(d/2 − 1)))")
    stored: bool = Field(False, description="kind sinusoidal: keep the table as a parameter `weight [max_len, d]`, "
                                            "initialised to the sinusoids and frozen (not trained), so that it is in "
                                            "the state dict and the parameter count, as transformers' Whisper keeps "
                                            "its encoder positions")

    @property
    def has_table_param(self) -> bool:
        """Whether the table is a parameter (`weight`): learned, or sinusoids kept in the state dict."""
        return self.kind == "learned" or self.stored


def _positional_shape(a: PositionalAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_float(x, "x")
    positive(a.max_len, "max_len")
    n = x.shape[1]
    if n.is_const and n.value > a.max_len:
        raise ShapeError("GF120", f"sequence length {n.value} exceeds `max_len` {a.max_len}", "x")
    if a.kind == "learned":
        for name, default in (("sinusoid", "interleaved"), ("stored", False)):
            if getattr(a, name) != default:
                raise ShapeError("GF102", f"`{name}` describes sinusoidal positions; this table is learned "
                                          "(`kind: learned`)", attr=name)
    d = x.shape[2]
    if a.kind == "sinusoidal" and d.is_const and d.value % 2:
        raise ShapeError("GF123", f"sinusoidal positions need an even width, got {d.value}", "x")
    if a.kind == "sinusoidal" and a.sinusoid == "halves" and d.is_const and d.value < 4:
        raise ShapeError("GF102", f"`sinusoid: halves` spaces d/2 frequencies over d/2 − 1 steps: it needs a "
                                  f"width of at least 4, got {d.value}", "x")
    expect_positions(ins, n)
    return x


register(OpDef(
    "positional", "core",
    "Add position encodings for positions 0..n-1 to `x [B, n, d]`: a learned `[max_len, d]` table or fixed "
    "sinusoids (Vaswani et al.'s interleaved ones, or the [sin | cos] halves of tensor2tensor and Whisper), "
    "computed at build time or, with `stored`, kept as a frozen parameter as Whisper's checkpoints do. The "
    "optional `positions [B, n]` (int64) are the rows to add instead (GPT-2's `position_ids`: left-padded "
    "rows start at their first real token).",
    PositionalAttrs, ("x", "positions?"), _positional_shape,
    params=lambda a, ins: {"weight": (a.max_len, _last(ins["x"]))} if a.has_table_param else {},
    flops=lambda a, ins, out: numel(out.shape),
    sequence=OFFSET, tp=UNPLANNED, saves=keeps(), embedding=True, frozen=lambda a: a.stored,
    max_len=lambda a: a.max_len,
    example="pos: {op: positional, kind: learned, max_len: max_len}",
))


# ---------------------------------------------------------------- linear

def weight_norm_field(rank: int, shape: str, example: str):
    """The `weight_norm: AXIS` attribute of an op whose weight has `rank` axes (`linear`, `conv1d`)."""
    return Field(None, ge=0, le=rank - 1, description=(
        "store the weight as magnitude and direction (torch's weight_norm(dim=AXIS)): `weight_g` (the weight's "
        f"size on this axis, 1 elsewhere) and `weight_v` `{shape}`, the weight being g · v / ‖v‖ with the norm "
        f"over the other axes; {example}"))


def weight_norm_shape(axis: int, weight: tuple[int, ...]) -> tuple[int, ...]:
    """`weight_g`: the weight's size on the `weight_norm` axis, 1 on the others (torch's layout)."""
    return tuple(n if k == axis else 1 for k, n in enumerate(weight))


def normed_weights(axis: int | None, weight: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The parameters that hold a weight: `weight`, or under `weight_norm: AXIS` `weight_g` and `weight_v`."""
    return {"weight": weight} if axis is None else {"weight_g": weight_norm_shape(axis, weight), "weight_v": weight}


def weight_norm_flops(axis: int | None, weight: tuple[int, ...]) -> int:
    """Recomputing a weight-normalised weight, once per forward: squares, sums, a division and a product per
    element."""
    return 0 if axis is None else 4 * math.prod(weight)


class LinearAttrs(Attrs):
    dim_fields = ("out",)
    ref_fields = ("tied",)
    tie_field = "tied"
    out: DimAttr = Field(description="output features: the width of the last axis after the layer")
    bias: bool = True
    tied: str | None = Field(None, description="name of an embedding node whose table is reused as this weight")
    tie: bool = Field(True, description="with `tied`: false gives this layer its own weight instead (a param can "
                                        "switch tying, like transformers' `tie_word_embeddings`)")
    weight_norm: int | None = weight_norm_field(2, "[out, d]", "0 normalises each output's row (a weight-"
                                                "normalised nn.Linear's default)")


def _linear_shape(a: LinearAttrs, ins):
    x = ins["x"]
    if a.tied and a.weight_norm is not None:
        raise ShapeError("GF318", f"`weight_norm: {a.weight_norm}` on a linear tied to `{a.tied}`: the tied weight "
                                  "is the embedding's table, not a magnitude and a direction of this layer",
                         attr="weight_norm",
                         help="drop `weight_norm`, or untie the layer (`tie: false`) so that it holds weight_g and "
                              "weight_v of its own")
    expect_float(x, "x")
    _last(x)
    positive(a.out, "out")
    return TensorType(x.shape[:-1] + (Dim.const(a.out),))


def _linear_params(a: LinearAttrs, ins):
    p = {} if a.tied else normed_weights(a.weight_norm, (a.out, _last(ins["x"])))
    if a.bias:
        p["bias"] = (a.out,)
    return p


register(OpDef(
    "linear", "core", "Affine map of the last dimension: `[*, d] → [*, out]` (weight `[out, d]`, torch layout); "
    "with `weight_norm: AXIS` the weight is `weight_g · weight_v / ‖weight_v‖` (torch's weight_norm).",
    LinearAttrs, ("x",), _linear_shape, params=_linear_params,
    flops=lambda a, ins, out: (2 * numel(ins["x"].shape) * a.out
                               + (0 if a.tied else weight_norm_flops(a.weight_norm, (a.out, _last(ins["x"]))))),
    sequence=POSITION, tp=MATMUL, saves=keeps("x"), matmul=True,
    example="up: {op: linear, out: 4 * d_model}",
))


# ---------------------------------------------------------------- attention

class ProjectionAttrs(Attrs):
    """What self- and cross-attention share: the biases of the q, k, v, o projections and the logit scale."""
    bias: bool = Field(True, description="biases of all four projections (default for the per-projection flags)")
    q_bias: bool | None = None
    k_bias: bool | None = None
    v_bias: bool | None = None
    o_bias: bool | None = None
    scale: float | None = Field(None, gt=0, description="logit scale (default 1/sqrt(head_dim)); a number or an "
                                "expression over params, e.g. `1.0` (T5) or `d_model ** -0.5`")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the attention probabilities (training)")

    def biases(self) -> dict[str, bool]:
        """Which of q, k, v, o carry a bias."""
        return {p: (self.bias if getattr(self, f"{p}_bias") is None else getattr(self, f"{p}_bias")) for p in "qkvo"}


class AttentionAttrs(ProjectionAttrs):
    dim_fields = ("heads", "kv_heads", "head_dim", "v_head_dim", "window", "rope_dims", "max_len")
    heads: DimAttr = Field(description="attention heads; the width of q, k and v splits evenly among them")
    kv_heads: DimAttr | None = Field(None, description="key/value heads: fewer than `heads` is grouped-query "
                                     "attention (1: multi-query); default `heads`")
    head_dim: DimAttr | None = Field(None, description="width of one query/key head (default: the input width // "
                                     "heads)")
    v_head_dim: DimAttr | None = Field(None, description="width of one value head, where it differs from the "
                                       "query/key heads' (default `head_dim`): v is kv_heads·v_head_dim wide, "
                                       "the output projection reads heads·v_head_dim")
    causal: bool = False
    window: DimAttr | None = Field(None, ge=0, description="sliding-window attention: query i sees key j only "
                                   "where |i − j| < window (causal: the last `window` keys, itself included, as "
                                   "Mistral and Gemma-2; bidirectional: ModernBERT's local layers, whose "
                                   "`local_attention` L is `window: L // 2 + 1`); 0 means no window (a "
                                   "global layer among windowed ones)")
    qk_norm: Literal["none", "rms", "rms_full", "layer_heads"] = Field(
        "none", description="normalise q and k: `rms` RMS over head_dim, each head (Qwen3), `rms_full` RMS over the "
                            "whole projection, heads·head_dim, before it is split into heads (OLMo-2), learned "
                            "scales `q_norm.weight`, `k_norm.weight`; `layer_heads` a LayerNorm without bias over "
                            "head_dim with a scale per head, `q_norm.weight [heads, head_dim]`, `k_norm.weight "
                            "[kv_heads, head_dim]` (Cohere's use_qk_norm)")
    qk_unit_offset: bool = Field(False, description="the q/k norms scale by 1 + weight, the weights initialised "
                                 "to 0 (Gemma-3), as `norm`'s `unit_offset`")
    eps: float = Field(1e-6, gt=0, description="epsilon of `qk_norm`")
    softcap: float | None = Field(None, description="logit soft-capping (Gemma-2): scores = tanh(s / softcap) · "
                                  "softcap after the scale and the bias, before the mask; a real > 0. SDPA cannot "
                                  "do it, so the scores are written out where it is set")
    rope: bool = Field(False, description="rotary position embedding of q and k (Su et al.), rotate-half layout "
                       "(Llama) unless `rope_interleaved`")
    rope_interleaved: bool = Field(False, description="rotate interleaved pairs (x₂ᵢ, x₂ᵢ₊₁) instead of the two "
                                   "halves (GPT-J's and CodeGen's rotate_every_two); the frequencies are the same")
    rope_theta: float = Field(10000.0, gt=0, description="rotary base")
    rope_dims: DimAttr | None = Field(None, description="rotate only the first `rope_dims` of each head "
                                      "(partial rotary, Phi); default the whole head")
    rope_scaling: Literal["none", "linear", "llama3", "yarn"] = Field(
        "none", description="frequency scaling: `linear` (every frequency divided by `rope_factor`: position "
                            "interpolation, Gemma-3's global layers), Llama 3.1's `llama3`, or `yarn` (Peng et "
                            "al.; GPT-OSS), whose cos and sin are also multiplied by its attention factor")
    rope_factor: float = Field(8.0, gt=0, description="linear, llama3 and yarn scaling: `factor`")
    rope_low_freq: float = Field(1.0, gt=0, description="llama3 scaling: `low_freq_factor`")
    rope_high_freq: float = Field(4.0, gt=0, description="llama3 scaling: `high_freq_factor`")
    rope_original_max_len: int = Field(8192, ge=1, description="llama3 and yarn scaling: "
                                       "`original_max_position_embeddings`")
    rope_beta_fast: float = Field(32.0, gt=0, description="yarn: `beta_fast`")
    rope_beta_slow: float = Field(1.0, gt=0, description="yarn: `beta_slow`")
    rope_truncate: bool = Field(True, description="yarn: `truncate` (round the correction range to whole dims; "
                                "GPT-OSS: false)")
    rope_attention_factor: float | None = Field(None, gt=0, description="yarn: `attention_factor`, the scale of "
                                                "cos and sin (default: from `factor` and the mscales, as "
                                                "transformers' `_compute_yarn_parameters`)")
    rope_mscale: float = Field(0.0, ge=0, description="yarn: `mscale` (0: not given)")
    rope_mscale_all_dim: float = Field(0.0, ge=0, description="yarn: `mscale_all_dim` (0: not given)")
    sinks: StrictBool | StrictInt = Field(False, description="attention sinks (GPT-OSS): a learned logit per head "
                                          "(`sinks [heads]`) joins every row's softmax denominator and takes no "
                                          "value; `true`, or the number of sink logits, which must equal `heads`. "
                                          "SDPA cannot do it, so the scores are written out where it is set")
    max_len: DimAttr | None = Field(None, ge=1, description="the longest sequence the model serves: a longer "
                                    "constant length is an error, and generation sizes its key/value cache by it")
    alibi: bool = Field(False, description="ALiBi (Press et al., BLOOM): add slope_h · p_j to every score, p_j the "
                        "key's position among the real (unmasked) tokens; no parameters, any length")

    @field_validator("window")
    @classmethod
    def _no_window(cls, v):
        return v or None   # `window: 0`: no window (a per-layer expression's way to say "global")

    def geometry(self, d: int) -> tuple[int, int, int]:
        """(heads, kv_heads, head_dim) for input width `d`; head_dim is the query/key width."""
        return self.heads, self.kv_heads or self.heads, self.head_dim or d // self.heads

    def value_dim(self, d: int) -> int:
        """The width of one value head (the query/key width unless `v_head_dim` says otherwise)."""
        return self.v_head_dim or self.geometry(d)[2]

    def rotary_dims(self, d: int) -> int:
        return self.rope_dims or self.geometry(d)[2]

    @property
    def rope_cos_scale(self) -> float:
        """What cos and sin are multiplied by: YaRN's attention factor (transformers' `attention_scaling`:
        `attention_factor`, or mscale(factor) = 0.1 · ln(factor) + 1), else 1."""
        if self.rope_scaling != "yarn":
            return 1.0
        if self.rope_attention_factor is not None:
            return self.rope_attention_factor

        def mscale(m: float = 1.0) -> float:   # YaRN's eq. 21: 0.1 · m · ln(factor) + 1
            return 1.0 if self.rope_factor <= 1 else 0.1 * m * math.log(self.rope_factor) + 1.0
        if self.rope_mscale and self.rope_mscale_all_dim:
            return mscale(self.rope_mscale) / mscale(self.rope_mscale_all_dim)
        return mscale()

    @property
    def written_out(self) -> bool:
        """Whether the lowerings write the scores out instead of calling a fused kernel (soft-cap, sinks)."""
        return self.softcap is not None or bool(self.sinks)

    def cache_widths(self, d: int) -> tuple[int, int, int]:
        """(kv heads, key width, value width) a causal form caches per position (a `sequence=CACHE` op's
        attrs all answer this: the decoder plan, generation and the memory plan read it)."""
        _, kv, hd = self.geometry(d)
        return kv, hd, self.value_dim(d)


def _softcap_check(cap: float | None, attr: str) -> None:
    """A soft-cap C computes tanh(x / C) · C: only a finite C > 0 means anything."""
    if cap is not None and not (0 < cap < float("inf")):
        raise ShapeError("GF220", f"`{attr}` must be a real number > 0, got {cap}", attr=attr,
                         help="tanh(x / C) · C caps x to (−C, C); leave the attribute out for no cap")


def _mask_check(ins, b: Dim, n: Dim, what: str):
    m = ins.get("mask")
    if m is None:
        return
    expect_rank(m, "mask", 2, what=f" ([B, {what}])")
    expect_dtype(m, "mask", ("bool", "int64"))
    expect_dim(m.shape[0], b, "mask", "dimension 0 (batch)", m)
    expect_dim(m.shape[1], n, "mask", "dimension 1 (keys)", m)


def _bias_check(ins, b: Dim, heads: int, n: Dim, m: Dim, what: str):
    """The optional additive logit bias: [1|B, 1|heads, n, m] (T5's relative positions, Swin's windows)."""
    t = ins.get("bias")
    if t is None:
        return
    expect_rank(t, "bias", 4, what=f" ([1 or B, 1 or heads, n, {what}])")
    expect_float(t, "bias")
    if t.shape[0] != Dim.const(1):
        expect_dim(t.shape[0], b, "bias", "dimension 0 (batch, or 1)", t)
    if t.shape[1] not in (Dim.const(1), Dim.const(heads)):
        raise ShapeError("GF120", f"dimension 1 (heads, or 1) of `bias` is `{t.shape[1]}`, expected `{heads}` "
                         f"(shape {t})", "bias", help=f"the bias holds one table per head: its producer needs "
                         f"this attention's `heads` ({heads})")
    expect_dim(t.shape[2], n, "bias", "dimension 2 (queries)", t)
    expect_dim(t.shape[3], m, "bias", "dimension 3 (keys)", t)


def _prefix_check(a: AttentionAttrs, ins, b: Dim, n: Dim) -> None:
    """The optional prefix-LM mask `prefix [B, n]` (bool or 0/1 int: 1 = in the bidirectional prefix). It
    only widens a causal mask (both query and key in the prefix: visible), so it needs `causal`."""
    p = ins.get("prefix")
    if p is None:
        return
    if not a.causal:
        raise ShapeError("GF288", "`prefix` marks the bidirectional part of a causal mask, but this attention is "
                         "not causal: every key is visible already", "prefix",
                         help="set `causal: true` (a prefix LM: bidirectional over the prefix, causal after it), "
                              "or feed nothing to `prefix`")
    expect_rank(p, "prefix", 2, what=" ([B, n])")
    expect_dtype(p, "prefix", ("bool", "int64"))
    expect_dim(p.shape[0], b, "prefix", "dimension 0 (batch)", p)
    expect_dim(p.shape[1], n, "prefix", "dimension 1 (positions)", p)


def _blocks_check(a: AttentionAttrs, ins, b: Dim, n: Dim) -> None:
    """The optional `blocks [B, n]` (bool or int): each run of consecutive equal non-zero values is one block
    whose positions see each other both ways (Gemma-3's images). It only widens a causal mask, so it needs
    `causal`."""
    t = ins.get("blocks")
    if t is None:
        return
    if not a.causal:
        raise ShapeError("GF322", "`blocks` marks bidirectional runs inside a causal mask, but this attention is "
                         "not causal: every key is visible already", "blocks",
                         help="set `causal: true` (causal, with each block seeing itself both ways), or feed "
                              "nothing to `blocks`")
    expect_rank(t, "blocks", 2, what=" ([B, n])")
    expect_dtype(t, "blocks", ("bool",) + INT_DTYPES)
    expect_dim(t.shape[0], b, "blocks", "dimension 0 (batch)", t)
    expect_dim(t.shape[1], n, "blocks", "dimension 1 (positions)", t)


def _attention_shape(a: AttentionAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    expect_float(x, "x")
    d = _last(x)
    positive(a.heads, "heads")
    if a.head_dim is None:
        expect_divisible(d, a.heads, f"width {d} must split evenly into {a.heads} heads",
                         help="choose `heads` so that d_model % heads == 0, or set `head_dim`", attr="heads")
    else:
        positive(a.head_dim, "head_dim")
    if a.v_head_dim is not None and a.v_head_dim <= 0:
        raise ShapeError("GF272", f"`v_head_dim` must be a positive width, got {a.v_head_dim}", attr="v_head_dim",
                         help="leave `v_head_dim` out for values as wide as the query/key heads")
    if a.kv_heads is not None:
        positive(a.kv_heads, "kv_heads")
        expect_divisible(a.heads, a.kv_heads, f"{a.heads} query heads must share {a.kv_heads} key/value heads "
                         "evenly", help="grouped-query attention needs heads % kv_heads == 0", attr="kv_heads")
    _softcap_check(a.softcap, "softcap")
    if not isinstance(a.sinks, bool) and a.sinks != a.heads:
        raise ShapeError("GF245", f"{a.sinks} sink logits for {a.heads} heads: attention sinks are one logit per "
                         "head", attr="sinks", help="write `sinks: true` (one per head), or `sinks: heads`")
    hd = a.geometry(d)[2]
    if a.alibi and a.window is not None:  # a rolling cache's slots are not in position order
        raise ShapeError("GF228", "`alibi` with a sliding `window` is not supported", attr="alibi",
                         help="ALiBi counts key positions over the cache, which a rolling window reorders")
    for attr in ("rope_dims", "rope_interleaved"):
        if getattr(a, attr) and not a.rope:
            raise ShapeError("GF102", f"`{attr}` is set but `rope` is off", attr=attr)
    if a.qk_unit_offset and a.qk_norm == "none":
        raise ShapeError("GF102", "`qk_unit_offset` is set but `qk_norm` is none", attr="qk_unit_offset",
                         help="set `qk_norm: rms` (per head, Gemma-3) or `rms_full`")
    if a.qk_unit_offset and a.qk_norm == "layer_heads":
        raise ShapeError("GF324", "`qk_unit_offset` with `qk_norm: layer_heads`: the per-head LayerNorms scale by "
                                  "their weight", attr="qk_unit_offset",
                         help="drop `qk_unit_offset`; a 1 + weight scale is for the RMS q/k norms (Gemma-3)")
    if a.rope:
        r = a.rotary_dims(d)
        if a.rope_interleaved and r % 2:
            raise ShapeError("GF273", f"interleaved rotary turns pairs of dims (x₂ᵢ, x₂ᵢ₊₁), so it needs an even "
                             f"number of rotary dims; got {r}",
                             attr="rope_dims" if a.rope_dims is not None else "heads",
                             help="GPT-J rotates `rotary_dim` 64 of each 256-wide head: set `rope_dims` to an even "
                                  "number no wider than the head")
        if r <= 0 or r % 2 or r > hd:
            raise ShapeError("GF102", f"rotary dims must be even and between 2 and the head width {hd}, got {r}",
                             attr="rope_dims" if a.rope_dims is not None else "heads")
    n = x.shape[1]
    if a.max_len is not None and n.is_const and n.value > a.max_len:
        raise ShapeError("GF120", f"sequence length {n.value} exceeds `max_len` {a.max_len}", "x")
    _mask_check(ins, x.shape[0], x.shape[1], "n")
    _prefix_check(a, ins, x.shape[0], n)
    _blocks_check(a, ins, x.shape[0], n)
    _bias_check(ins, x.shape[0], a.heads, n, n, "n")
    if "positions" in ins and not a.rope:
        raise ShapeError("GF106", "`positions` are read by rotary embeddings only: set `rope: true`", "positions")
    expect_positions(ins, x.shape[1])
    return x


def _proj(d_in: int, d_out: int, bias: bool, name: str) -> dict:
    p = {f"{name}.weight": (d_out, d_in)}
    if bias:
        p[f"{name}.bias"] = (d_out,)
    return p


def _attention_params(a: AttentionAttrs, ins):
    d = _last(ins["x"])
    h, kv, hd = a.geometry(d)
    vd = a.value_dim(d)
    b = a.biases()
    p = {**_proj(d, h * hd, b["q"], "q"), **_proj(d, kv * hd, b["k"], "k"), **_proj(d, kv * vd, b["v"], "v"),
         **_proj(h * vd, d, b["o"], "o")}
    if a.qk_norm == "rms":
        p.update({"q_norm.weight": (hd,), "k_norm.weight": (hd,)})
    elif a.qk_norm == "rms_full":   # over the whole projection (OLMo-2)
        p.update({"q_norm.weight": (h * hd,), "k_norm.weight": (kv * hd,)})
    elif a.qk_norm == "layer_heads":   # a scale per head (Cohere)
        p.update({"q_norm.weight": (h, hd), "k_norm.weight": (kv, hd)})
    if a.sinks:
        p["sinks"] = (h,)
    return p


def _attention_flops(a: AttentionAttrs, ins, out):
    b, n, _ = ins["x"].shape
    d = _last(ins["x"])
    h, kv, hd = a.geometry(d)
    vd = a.value_dim(d)
    # projections (q, k, v, o), then q·kᵀ and p·v over the full n × n (causal and windowed masks are not
    # discounted)
    return 2 * b * n * d * (h * hd + kv * hd + kv * vd + h * vd) + 2 * b * n * n * h * (hd + vd)


def _attention_saves(c) -> Saved:
    """SDPA keeps q, k, v (after rotary), its output (which the output projection reads as a view) and the
    log-sum-exp per row; rotary keeps its cos and sin tables; a materialised mask is kept too."""
    a, x, s = c.attrs, c.ins["x"], c.itemsize
    b, t = x.shape[0].evaluate(c.dims), x.shape[1].evaluate(c.dims)
    h, kv, hd = a.geometry(x.shape[-1].value)
    vd = a.value_dim(x.shape[-1].value)
    total = s * b * t * (hd * (h + kv) + vd * (h + kv)) + 4 * b * h * t
    if a.dropout:   # dropout on the probabilities runs SDPA's math kernel: it keeps them, the keep-mask and
        total += 3 * s * b * h * t * t - 4 * b * h * t    # the dropped ones [B, h, n, n], no log-sum-exp
    if a.rope:
        total += 2 * s * t * a.rotary_dims(x.shape[-1].value)
    if "mask" in c.ins or "prefix" in c.ins or "blocks" in c.ins or (a.window and t > a.window):
        total += 4 * b * t * t
    if a.written_out:   # written-out scores (soft-capped, or with sinks) and the probabilities [B, h, n, n]
        total += 2 * s * b * h * t * t
    return Saved(("x",), total)


register(OpDef(
    "attention", "core",
    "Multi-head self-attention over `x [B, n, d]` with q, k, v and output projections: grouped-query "
    "(`kv_heads`), value heads of their own width (`v_head_dim`), rotary positions (`rope`, partial "
    "`rope_dims`, interleaved pairs `rope_interleaved`, Llama-3 scaling), sliding windows "
    "(`window`, causal or bidirectional), ALiBi position biases (`alibi`), per-projection biases, q/k norm (per head "
    "or over the whole projection), logit soft-capping (`softcap`), attention sinks (`sinks`), YaRN rotary "
    "scaling and an explicit `scale`. `causal` masks the future; the "
    "optional `mask [B, n]` (bool or 0/1 int) marks the keys that may be attended to; the optional "
    "`positions [B, n]` (int64) are the rotary positions (default 0..n-1); the optional `bias "
    "[1|B, 1|heads, n, n]` (float) is added to the scaled logits (relative-position biases); the optional "
    "`prefix [B, n]` (bool or 0/1 int, with `causal`) marks a prefix-LM's prefix: query i sees key j where "
    "j ≤ i or both are in the prefix (PaliGemma's image and prompt, transformers' `token_type_ids == 0`); the "
    "optional `blocks [B, n]` (bool or int, with `causal`) marks bidirectional blocks: each run of consecutive "
    "equal non-zero values is one block, and query i sees key j where (j ≤ i or both are in one block) and j is "
    "within the `window` (Gemma-3's images, transformers' `token_type_ids == 1`). A decoder step's cached keys "
    "are outside its blocks: a block is bidirectional within one call (the prompt).",
    AttentionAttrs, ("x", "mask?", "positions?", "bias?", "prefix?", "blocks?"), _attention_shape, params=_attention_params,
    flops=_attention_flops,
    sequence=CACHE, tp=HEADS, saves=_attention_saves, matmul=True, max_len=lambda a: a.max_len,
    example="attn: {op: attention, heads: heads, kv_heads: 2, causal: true, rope: true}",
))


# ---------------------------------------------------------------- cross attention

class CrossAttendAttrs(ProjectionAttrs):
    dim_fields = ("heads", "dim", "out")
    heads: DimAttr = Field(description="attention heads; the width of q, k and v splits evenly among them")
    dim: DimAttr | None = Field(None, description="inner width of q, k, v (default: the query width)")
    out: DimAttr | None = Field(None, description="output width (default: the query width)")


def _cross_widths(a: CrossAttendAttrs, ins) -> tuple[int, int, int, int]:
    dq, dc = _last(ins["query"], "query"), _last(ins["context"], "context")
    return dq, dc, a.dim or dq, a.out or dq


def _cross_shape(a: CrossAttendAttrs, ins):
    q, c = ins["query"], ins["context"]
    expect_rank(q, "query", 3, what=" ([B, n, d_q])")
    expect_rank(c, "context", 3, what=" ([B, m, d_c])")
    expect_float(q, "query"), expect_float(c, "context")
    expect_dim(c.shape[0], q.shape[0], "context", "dimension 0 (batch)", c)
    dq, dc, inner, out = _cross_widths(a, ins)
    positive(a.heads, "heads")
    expect_divisible(inner, a.heads, f"inner width {inner} must split evenly into {a.heads} heads")
    _mask_check(ins, q.shape[0], c.shape[1], "m")
    _bias_check(ins, q.shape[0], a.heads, q.shape[1], c.shape[1], "m")
    return TensorType(q.shape[:2] + (Dim.const(out),))


def _cross_params(a: CrossAttendAttrs, ins):
    dq, dc, inner, out = _cross_widths(a, ins)
    b = a.biases()
    return {**_proj(dq, inner, b["q"], "q"), **_proj(dc, inner, b["k"], "k"),
            **_proj(dc, inner, b["v"], "v"), **_proj(inner, out, b["o"], "o")}


def _cross_flops(a: CrossAttendAttrs, ins, out):
    dq, dc, inner, o = _cross_widths(a, ins)
    b, n, _ = ins["query"].shape
    m = ins["context"].shape[1]
    return 2 * b * (n * dq * inner + 2 * m * dc * inner + n * inner * o) + 2 * 2 * b * n * m * inner


def _cross_saves(c) -> Saved:
    """q, k, v and the output (SDPA), and the log-sum-exp per query row."""
    x, ctx, s = c.ins["query"], c.ins["context"], c.itemsize
    b, q_len, m = x.shape[0].evaluate(c.dims), x.shape[1].evaluate(c.dims), ctx.shape[1].evaluate(c.dims)
    inner = c.attrs.dim or x.shape[-1].value
    return Saved(("query", "context"), s * b * inner * (2 * q_len + 2 * m) + 4 * b * c.attrs.heads * q_len)


register(OpDef(
    "cross_attend", "core",
    "Multi-head attention of `query [B, n, d_q]` over `context [B, m, d_c]` (different lengths and widths); "
    "the optional `mask [B, m]` marks the context positions that may be attended to; the optional `bias "
    "[1|B, 1|heads, n, m]` (float) is added to the scaled logits. Projection biases and `scale` as `attention`.",
    CrossAttendAttrs, ("query", "context", "mask?", "bias?"), _cross_shape, params=_cross_params, flops=_cross_flops,
    sequence=CONTEXT, tp=REPLICATE, saves=_cross_saves, matmul=True,
    example="cross: {op: cross_attend, in: {query: x, context: memory}, heads: heads}",
))


# ---------------------------------------------------------------- norm

class NormAttrs(Attrs):
    dim_fields = ("groups",)
    kind: Literal["layer", "rms"] = "layer"
    eps: float = Field(1e-5, gt=0)
    bias: bool = Field(True, description="layer norm only: learn a shift as well as a scale")
    unit_offset: bool = Field(False, description="scale by (1 + weight) instead of weight, the weight initialised "
                                                 "to 0 (Gemma's RMSNorm): checkpoints store w, the norm uses 1 + w")
    groups: DimAttr = Field(1, description="RMS norm only: normalise each of `groups` equal slices of the last "
                                           "dimension on its own (Mamba-2's gated norm over n_groups); the scale "
                                           "stays one per channel")


def _norm_params(a: NormAttrs, ins):
    d = _last(ins["x"])
    return {"weight": (d,), "bias": (d,)} if a.kind == "layer" and a.bias else {"weight": (d,)}


def _float_same(ins):
    expect_float(ins["x"], "x")
    return ins["x"]


def _norm_shape(a: NormAttrs, ins):
    d = _last(ins["x"])
    positive(a.groups, "groups")
    if a.groups != 1 and (a.kind != "rms" or a.unit_offset):
        raise ShapeError("GF299", f"`groups: {a.groups}` is for `kind: rms` without `unit_offset`", attr="groups",
                         help="group-wise normalisation is Mamba-2's RMS norm; drop `groups` from this norm")
    if d % a.groups:
        raise ShapeError("GF299", f"`groups: {a.groups}` does not divide the {d} channels of `x` {ins['x']}", "x",
                         attr="groups", help="each group normalises d / groups channels (Mamba-2: "
                                             "intermediate_size / n_groups)")
    return _float_same(ins)


def _norm_saves(c) -> Saved:
    x = c.ins["x"]
    rows = c.numel(x) // x.shape[-1].value
    if c.attrs.kind == "layer":
        return Saved(("x",), rows * 4 * 2)                        # fused kernel: mean and rstd (fp32)
    return Saved(("x",), rows * 4 + c.numel(x) * c.itemsize)     # composite: rstd and x · rstd


register(OpDef(
    "norm", "core", "Layer norm or RMS norm over the last dimension, with a learned scale (and shift); "
    "`unit_offset` scales by 1 + weight (Gemma); `groups` (RMS) normalises equal slices of the last "
    "dimension apart (Mamba-2).",
    NormAttrs, ("x",), _norm_shape, params=_norm_params,
    flops=lambda a, ins, out: 5 * numel(out.shape),
    sequence=POSITION, tp=UNPLANNED, saves=_norm_saves,
    example="ln1: {op: norm, eps: 1e-12}",
))


# ---------------------------------------------------------------- element-wise

def _variadic_same(a, ins):
    ports = list(ins)
    for p in ports:
        expect_float(ins[p], p)
    return same_shape(ins, ports)


register(OpDef(
    "residual", "core", "Element-wise sum of two or more tensors of the same shape (a skip connection).",
    NoAttrs, ("*xs",), _variadic_same,
    flops=lambda a, ins, out: (len(ins) - 1) * numel(out.shape),
    sequence=POSITION, tp=UNPLANNED, saves=keeps(),
    example="res1: {op: residual, in: [x, attn]}",
))


class GeluAttrs(Attrs):
    approximate: Literal["none", "tanh"] = "none"


class DropoutAttrs(Attrs):
    p: float = Field(0.1, ge=0.0, lt=1.0)


class SoftmaxAttrs(Attrs):
    axis: int = -1


_ELEMENTWISE = {   # name: attrs, doc, what backward keeps (its output where the derivative is a function of it)
    "relu": (NoAttrs, "max(x, 0)", keeps("out")),
    "gelu": (GeluAttrs, "Gaussian error linear unit; `approximate: tanh` is GPT-2's `gelu_new`", keeps("x")),
    "silu": (NoAttrs, "x · sigmoid(x)", keeps("x")),
    "tanh": (NoAttrs, "hyperbolic tangent", keeps("out")),
    "sigmoid": (NoAttrs, "logistic sigmoid", keeps("out")),
}
for _name, (_attrs, _doc, _saves) in _ELEMENTWISE.items():
    register(OpDef(_name, "activation", f"Element-wise {_doc}.", _attrs, ("x",),
                   lambda a, ins: _float_same(ins), flops=lambda a, ins, out: numel(out.shape),
                   sequence=POSITION, tp=THROUGH, saves=_saves,
                   example=f"act: {{op: {_name}}}"))

class ActivationAttrs(Attrs):
    kind: Literal["relu", "gelu", "gelu_tanh", "silu", "tanh", "sigmoid", "quick_gelu", "softplus"] = Field(
        description="gelu: exact (erf); gelu_tanh: the tanh approximation (GPT-2's gelu_new); silu: x·σ(x) "
                    "(swish); quick_gelu: x·σ(1.702x) (CLIP); softplus: log(1 + eˣ) (Mamba's step sizes)")


def _activation_saves(c) -> Saved:
    kind = c.attrs.kind
    extra = c.bytes(c.out) if kind == "quick_gelu" else 0     # x and sigmoid(1.702 x)
    return Saved(("out",) if kind in ("relu", "tanh", "sigmoid") else ("x",), extra)


register(OpDef(
    "activation", "activation",
    "An element-wise activation chosen by name, so that a param can choose it (`kind: act`).",
    ActivationAttrs, ("x",), lambda a, ins: _float_same(ins), flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=THROUGH, saves=_activation_saves,
    example="act: {op: activation, kind: silu}",
))

class SoftcapAttrs(Attrs):
    cap: float = Field(description="the cap C > 0: tanh(x / C) · C lies in (−C, C)")


def _softcap_shape(a: SoftcapAttrs, ins):
    _softcap_check(a.cap, "cap")
    return _float_same(ins)


register(OpDef(
    "softcap", "activation",
    "Soft-capping, element-wise: tanh(x / cap) · cap (Gemma-2's final logits, `final_logit_softcapping`). "
    "Attention logits take the `softcap` attribute of `attention` instead.",
    SoftcapAttrs, ("x",), _softcap_shape, flops=lambda a, ins, out: 3 * numel(out.shape),
    sequence=POSITION, tp=THROUGH, saves=keeps("out"),
    example="capped: {op: softcap, cap: 30.0}",
))

register(OpDef(
    "mul", "core", "Element-wise product of two or more tensors of the same shape (gated MLPs: SwiGLU, GeGLU).",
    NoAttrs, ("*xs",), _variadic_same,
    flops=lambda a, ins, out: (len(ins) - 1) * numel(out.shape),
    sequence=POSITION, tp=THROUGH, saves=lambda c: Saved(tuple(c.ins)),
    example="glu: {op: mul, in: [act, up]}",
))

register(OpDef(
    "dropout", "activation", "Zero elements with probability `p` while training; identity in eval mode.",
    DropoutAttrs, ("x",), lambda a, ins: ins["x"],
    sequence=POSITION, tp=THROUGH, saves=lambda c: Saved((), c.bytes(c.out) if c.attrs.p else 0),  # keep-mask
    example="drop: {op: dropout, p: 0.1}",
))


def _axis(axis: int, x: TensorType, port: str) -> int:
    if not -x.rank <= axis < x.rank:
        raise ShapeError("GF102", f"axis {axis} is out of range for `{port}` of rank {x.rank} ({x})", port)
    return axis % x.rank


def _softmax_shape(a: SoftmaxAttrs, ins):
    _axis(a.axis, ins["x"], "x")
    return _float_same(ins)


register(OpDef(
    "softmax", "activation", "Softmax along `axis` (default the last).",
    SoftmaxAttrs, ("x",), _softmax_shape,
    flops=lambda a, ins, out: 3 * numel(out.shape), sequence=AXIS, tp=UNPLANNED, saves=keeps("out"),
    example="probs: {op: softmax}",
))


# ---------------------------------------------------------------- structural

class ConcatAttrs(Attrs):
    axis: int = -1


def _concat_shape(a: ConcatAttrs, ins):
    ports = list(ins)
    first = ins[ports[0]]
    ax = _axis(a.axis, first, ports[0])
    total = Dim.const(0)
    for p in ports:
        x = ins[p]
        if x.rank != first.rank:
            raise ShapeError("GF121", f"`{p}` has rank {x.rank} but `{ports[0]}` has {first.rank}", p)
        if x.dtype != first.dtype:
            raise ShapeError("GF122", f"`{p}` has dtype {x.dtype} but `{ports[0]}` has {first.dtype}", p)
        for i, (u, v) in enumerate(zip(first.shape, x.shape)):
            if i != ax and u != v:
                raise ShapeError("GF120", f"dimension {i} of `{p}` is `{v}` but `{ports[0]}` has `{u}` "
                                 f"(only axis {ax} may differ)", p).with_conflict(v, u, i)
        total = total + x.shape[ax]
    return TensorType(first.shape[:ax] + (total,) + first.shape[ax + 1:], first.dtype)


register(OpDef(
    "concat", "structural", "Concatenate tensors along `axis`; every other dimension must agree.",
    ConcatAttrs, ("*xs",), _concat_shape, sequence=AXIS, tp=UNPLANNED, saves=keeps(),
    example="both: {op: concat, in: [a, b], axis: 1}",
))


class PoolAttrs(Attrs):
    kind: Literal["cls", "mean"] = "cls"
    index: int = Field(0, description="kind cls: which token to take (0 = the first)")


def _pool_shape(a: PoolAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, n, d])")
    n = x.shape[1]
    if a.kind == "cls" and n.is_const and not -n.value <= a.index < n.value:
        raise ShapeError("GF102", f"token index {a.index} is out of range for {n.value} tokens", "x")
    return TensorType((x.shape[0], x.shape[2]), x.dtype)


register(OpDef(
    "pool", "structural", "Reduce the token axis: `[B, n, d] → [B, d]` by taking one token (`cls`) or the mean.",
    PoolAttrs, ("x",), _pool_shape,
    flops=lambda a, ins, out: numel(ins["x"].shape) if a.kind == "mean" else Dim.const(0),
    sequence=MIXES, tp=UNPLANNED, saves=keeps(),
    example="first: {op: pool, kind: cls}",
))


# ---------------------------------------------------------------- learned scales, element-wise constants
# (LayerScale, tanh gates; add / clamp / soft-cap by constants. Multiplying by a constant is `scale`.)

class LearnedScaleAttrs(Attrs):
    dim_fields = ("dim",)
    per: Literal["channel", "scalar"] = Field(
        "channel", description="`channel`: one factor per channel of the last dimension, `scale [d]` "
                               "(LayerScale: DINOv2, BEiT, CaiT); `scalar`: one factor, `scale []` (a gate)")
    init: float = Field(1.0, description="initial value of every factor (transformers' `layerscale_value`; "
                                         "0 for a tanh gate that starts closed)")
    act: Literal["none", "tanh"] = Field(
        "none", description="`tanh`: multiply by tanh(scale) instead, a gate in (−1, 1) (Flamingo's "
                            "`attn_gate`, Llama 3.2 Vision's cross-attention gates)")
    dim: DimAttr | None = Field(None, description="`per: channel`: the width of the scale, stated to be checked "
                                                  "against the input's last dimension (default: that dimension)")


def _learned_scale_shape(a: LearnedScaleAttrs, ins):
    x = ins["x"]
    expect_float(x, "x")
    if a.dim is not None:
        if a.per == "scalar":
            raise ShapeError("GF230", "`dim` is the width of a per-channel scale; this one is a scalar "
                                      "(`per: scalar`)", attr="dim", help="drop `dim`, or use `per: channel`")
        d = _last(x)
        if a.dim != d:
            raise ShapeError("GF230", f"the learned scale is {a.dim} wide but the last dimension of `x` is {d} "
                                      f"({x})", "x", help=f"a per-channel scale multiplies each of the {d} "
                                      f"channels: make `dim` {d}, or leave it out", attr="dim")
    elif a.per == "channel":
        _last(x)
    return x


def _learned_scale_params(a: LearnedScaleAttrs, ins):
    return {"scale": (_last(ins["x"]),) if a.per == "channel" else ()}


register(OpDef(
    "learned_scale", "core",
    "Multiply `x [*, d]` by learned factors: one per channel, `scale [d]` (LayerScale, initialised to "
    "`init`), or one scalar, `scale []`; with `act: tanh`, by tanh(scale) (a gate, initialised closed with "
    "`init: 0`). DINOv2's `layer_scale1.lambda1` is a per-channel scale.",
    LearnedScaleAttrs, ("x",), _learned_scale_shape, params=_learned_scale_params,
    flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=UNPLANNED, saves=keeps("x"),
    example="ls1: {op: learned_scale, init: 1.0e-5}",
))


class OffsetAttrs(Attrs):
    by: float = Field(description="the constant added (a number or an expression over params)")


class ClampAttrs(Attrs):
    min: float | None = Field(None, description="lower bound (none: unbounded below)")
    max: float | None = Field(None, description="upper bound (none: unbounded above)")




def _clamp_shape(a: ClampAttrs, ins):
    if a.min is None and a.max is None:
        raise ShapeError("GF231", "`clamp` needs `min`, `max` or both", help="a clamp without bounds is the "
                                  "identity: give a bound or drop the node")
    if a.min is not None and a.max is not None and a.min > a.max:
        raise ShapeError("GF231", f"`min` {a.min!r} is above `max` {a.max!r}: no value lies between them",
                         attr="min", help="swap the bounds")
    return _float_same(ins)



register(OpDef(
    "offset", "activation", "Add a constant to every element: `x + by`.",
    OffsetAttrs, ("x",), lambda a, ins: _float_same(ins), flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=THROUGH, saves=keeps(),
    example="shifted: {op: offset, by: 1.0}",
))

register(OpDef(
    "clamp", "activation", "Limit every element to [min, max] (either bound may be left out), as torch.clamp.",
    ClampAttrs, ("x",), _clamp_shape, flops=lambda a, ins, out: numel(out.shape),
    sequence=POSITION, tp=THROUGH, saves=keeps("x"),
    example="clamped: {op: clamp, min: -7.0, max: 7.0}",
))

