"""Hugging Face on-ramp: a transformers `config.json` → the bundled spec of its family, params set.

One table per family says, for every config field graphformer reads, which param it sets (with a
converter where the two differ) or which value it must have because the spec fixes that part of the
architecture. A field the table names as refused, or a value the spec can't express, is an
`HFImportError` naming the field — never a silent approximation. Fields that don't change the
function at inference (dropout, token ids, caching, dtype, labels, ...) are listed as ignored; a field
in neither list is reported as unread, so nothing is dropped without saying so. No torch here.

A field config.json leaves out is read as transformers reads it: at its config class's default, not the
bundled spec's (save_pretrained writes only the values that differ from the class's defaults, and
hand-written and older hub configs omit more, so the spec's default would silently build another model
than the reference). Each class's defaults are a literal table here (DEFAULTS, by model_type), because
this module reads configs as data and imports no transformers; `with_defaults` fills them in before any
table or derive function reads the config, so those read one complete config and hold no fallbacks of
their own. Defaults the class computes in __post_init__ (head_dim = hidden // heads, key/value heads =
heads, T5's decoder depth) are `Derived` and computed the same way; the classes' other names for fields
(attribute_map) are ALIASES; a composite config's absent sub-config gets the composite's own defaults
(LLaVA's 336-pixel CLIP tower), a sub-config object its class's. Only a field without a usable default
(REQUIRED) keeps the spec's default, with a warning. The test suite checks every table against
`AutoConfig.for_model(model_type)` and imports sparse configs against transformers' `from_dict`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .bundled import SPEC_DIR as SPECS_DIR


class HFImportError(Exception):
    """A config graphformer can't turn into a spec; `code` is the exit status (1: refused, 2: usage)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# Fields that never change what a model computes at inference (or only its Python-side behaviour).
IGNORED_EVERYWHERE = frozenset({
    "_name_or_path", "transformers_version", "architectures", "model_type", "dtype", "torch_dtype",
    "output_hidden_states", "output_attentions", "return_dict", "use_return_dict", "use_cache",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
    "initializer_range", "initializer_factor", "pad_token_id", "bos_token_id", "eos_token_id",
    "attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop",
    "attn_pdrop", "classifier_dropout", "tie_encoder_decoder", "torchscript", "pruned_heads",
    "tokenizer_class", "prefix", "task_specific_params", "finetuning_task", "quantization_config",
    "_attn_implementation", "attn_implementation", "_commit_hash", "transformers.js_config",
    "output_router_logits", "router_aux_loss_coef", "router_jitter_noise", "pretraining_tp",
    "add_cross_attention", "is_decoder", "cross_attention_hidden_size", "decoder_start_token_id",
    "sep_token_id", "max_length", "min_length", "do_sample", "num_beams", "temperature", "top_k", "top_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "early_stopping", "num_return_sequences",
})
# A family's own table is consulted first: `max_length` is AST's frame count, `add_cross_attention`
# and `is_decoder` are refused where the spec lacks them; elsewhere they are generation/training knobs.

# transformers' `hidden_act` names → the `activation` op's kinds (`gelu_fast` is the tanh approximation
# written as x·0.7978845608·(1 + 0.044715x²): the same function as gelu_new, equal to fp32 rounding)
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "relu": "relu", "tanh": "tanh",
               "sigmoid": "sigmoid", "quick_gelu": "quick_gelu"}


def act(value, name):
    kind = ACTIVATIONS.get(value)
    if kind is None:
        known = ", ".join(k for k, v in ACTIVATIONS.items() if v)
        raise HFImportError(f"`{name}: {value}`: the `activation` op has no such function (supported: {known})")
    return kind


# ---------------------------------------------------------------- the types of the fields read

def show(value) -> str:
    """A config value for a message: JSON, cut at 80 characters (a value can be a 4 MB list, or nest
    deeper than the printer recurses)."""
    try:
        text = json.dumps(value)
    except (RecursionError, ValueError, TypeError):
        text = f"a deeply nested {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "…"


@dataclass(frozen=True)
class Int:
    lo: int
    hi: int
    null: bool = False

    def ok(self, v) -> bool:
        return (v is None and self.null) or (type(v) is int and self.lo <= v <= self.hi)

    def __str__(self):
        return f"an integer from {self.lo:,} to {self.hi:,}" + (" (or null)" if self.null else "")


@dataclass(frozen=True)
class Num:
    lo: float
    hi: float
    lo_open: bool = False   # the lower bound itself is refused (a rope theta of 0)
    null: bool = True

    def ok(self, v) -> bool:
        if v is None:
            return self.null
        if type(v) is float and not math.isfinite(v) or type(v) not in (int, float):
            return False    # (an int is compared as it is: float() of a 400-digit one would overflow)
        return (self.lo < v if self.lo_open else self.lo <= v) and v <= self.hi

    def __str__(self):
        return (f"a finite number {'>' if self.lo_open else '≥'} {self.lo:g} and ≤ {self.hi:g}"
                + (" (or null)" if self.null else ""))


@dataclass(frozen=True)
class Infinity:
    """JSON's `Infinity`: json reads it as a float; transformers ≥ 5 writes {"__float__": "Infinity"}."""

    def ok(self, v) -> bool:
        return _is_inf(v)

    def __str__(self):
        return "Infinity"


@dataclass(frozen=True)
class Kind:
    """A JSON type: `bool`, `str` (at most 200 characters) or `dict` (an object); null is accepted."""
    type: type

    def ok(self, v) -> bool:
        return v is None or (type(v) is self.type and not (self.type is str and len(v) > 200))

    def __str__(self):
        return {bool: "true or false", str: "a string", dict: "an object"}[self.type] + " (or null)"


@dataclass(frozen=True)
class ListOf:
    item: Any
    most: int
    null: bool = True

    def ok(self, v) -> bool:
        if v is None:
            return self.null
        return type(v) is list and len(v) <= self.most and all(self.item.ok(x) for x in v)

    def __str__(self):
        return f"a list of at most {self.most} items, each {self.item}" + (" (or null)" if self.null else "")


@dataclass(frozen=True)
class AnyOf:
    options: tuple

    def ok(self, v) -> bool:
        return any(o.ok(v) for o in self.options)

    def __str__(self):
        return ", or ".join(str(o) for o in self.options)


# Sane limits, far above every published model (Llama-4's 10M positions, Gemma's 256K vocabulary,
# 128 layers, 128 heads) and far below what a tiny config could make graphformer allocate or loop over.
VOCAB, WIDTH, LAYERS, HEADS, POSITIONS, SIDE = 1 << 24, 1 << 20, 1 << 12, 1 << 16, 1 << 24, 1 << 16
RATE = Num(0.0, 1.0)              # dropout
EPS = Num(0.0, 1.0, lo_open=True)
FACTOR = Num(0.0, 1e6, lo_open=True, null=False)
THETA = Num(0.0, 1e12, lo_open=True, null=False)
ROTARY_SHARE = Num(0.0, 1.0, lo_open=True, null=False)
FLAG, TEXT = Kind(bool), Kind(str)
PIXELS = AnyOf((Int(1, SIDE), ListOf(Int(1, SIDE), 2, null=False)))
TOKEN_IDS = AnyOf((Int(-VOCAB, VOCAB, null=True), ListOf(Int(-VOCAB, VOCAB), 1024)))
ROPE = {   # rope_parameters / rope_scaling: an object of these
    "rope_type": TEXT, "type": TEXT, "rope_theta": THETA, "factor": FACTOR,
    "low_freq_factor": FACTOR, "high_freq_factor": FACTOR, "partial_rotary_factor": ROTARY_SHARE,
    "original_max_position_embeddings": Int(1, POSITIONS),
}

# Every config field some family reads, with the type and range it must have. Checked for the whole
# config (and CLIP's text_config / vision_config) before any field is used, so a wrong type is an
# HFImportError naming the field and value, never a TypeError deep in a computation.
FIELD_TYPES = {
    "vocab_size": Int(1, VOCAB),
    **dict.fromkeys(["hidden_size", "n_embd", "d_model", "embed_dim", "projection_dim", "intermediate_size",
                     "encoder_ffn_dim", "decoder_ffn_dim", "state_dim", "act_dim"], Int(1, WIDTH)),
    **dict.fromkeys(["n_inner", "head_dim", "pooler_output_size", "rotary_dim"], Int(1, WIDTH, null=True)),
    **dict.fromkeys(["num_hidden_layers", "n_layer", "encoder_layers", "decoder_layers"], Int(1, LAYERS)),
    **dict.fromkeys(["num_attention_heads", "n_head", "encoder_attention_heads", "decoder_attention_heads"],
                    Int(1, HEADS)),
    "num_key_value_heads": Int(1, HEADS, null=True),
    **dict.fromkeys(["max_position_embeddings", "n_positions", "max_source_positions", "max_target_positions",
                     "max_ep_len"], Int(1, POSITIONS)),
    "max_length": Int(1, POSITIONS, null=True),
    "sliding_window": Int(1, POSITIONS, null=True),
    "type_vocab_size": Int(0, HEADS), "num_labels": Int(1, VOCAB), "num_channels": Int(1, 4096),
    "image_size": PIXELS, "patch_size": PIXELS, "window_size": Int(1, SIDE),
    "frequency_stride": Int(1, SIDE), "time_stride": Int(1, SIDE), "num_mel_bins": Int(1, SIDE),
    "num_local_experts": Int(1, LAYERS), "num_experts_per_tok": Int(1, LAYERS),
    "depths": ListOf(Int(1, LAYERS), 64, null=False),
    "num_heads": AnyOf((Int(1, HEADS), ListOf(Int(1, HEADS), 64, null=False))),   # T5's count, Swin's per stage
    "layer_types": ListOf(TEXT, LAYERS), "eos_token_id": TOKEN_IDS, "id2label": Kind(dict),
    **dict.fromkeys(["rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"], EPS),
    "rope_theta": Num(0.0, 1e12, lo_open=True), "partial_rotary_factor": ROTARY_SHARE,
    "mlp_ratio": Num(0.0, 1024.0, lo_open=True, null=False),
    **dict.fromkeys(["attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout_prob",
                     "attention_probs_dropout_prob", "attention_dropout"], RATE),
    **dict.fromkeys(["model_type", "hidden_act", "activation_function", "pooler_act",
                     "position_embedding_type"], TEXT),
    **dict.fromkeys(["attention_bias", "mlp_bias", "tie_word_embeddings", "qkv_bias", "qk_layernorm",
                     "use_sliding_window", "scale_attn_by_inverse_layer_idx", "scale_attn_weights",
                     "add_cross_attention", "reorder_and_upcast_attn", "is_decoder", "use_absolute_embeddings",
                     "action_tanh"], FLAG),
    **dict.fromkeys(["rope_scaling", "rope_parameters"], Kind(dict)),
    **dict.fromkeys(["text_config", "vision_config"], Kind(dict)),
    # dinov2, dinov2_with_registers
    "layerscale_value": Num(-1e6, 1e6, null=False), "num_register_tokens": Int(0, LAYERS),
    **dict.fromkeys(["use_swiglu_ffn", "use_mask_token"], FLAG),
    **dict.fromkeys(["image_token_index", "image_token_id"], Int(0, VOCAB)),   # llava
    "projector_hidden_act": TEXT, "multimodal_projector_bias": FLAG, "vision_feature_select_strategy": TEXT,
    "vision_feature_layer": AnyOf((Int(-LAYERS, LAYERS), ListOf(Int(-LAYERS, LAYERS), 64))),
    # t5
    **dict.fromkeys(["d_kv", "d_ff"], Int(1, WIDTH)),
    **dict.fromkeys(["num_layers", "num_decoder_layers"], Int(1, LAYERS)),
    "relative_attention_num_buckets": Int(1, POSITIONS), "relative_attention_max_distance": Int(1, POSITIONS),
    "dropout_rate": RATE, "feed_forward_proj": TEXT, "scale_decoder_outputs": FLAG,
    # wav2vec2
    **dict.fromkeys(["conv_dim", "conv_stride"], ListOf(Int(1, WIDTH), 64, null=False)),
    "conv_kernel": AnyOf((ListOf(Int(1, WIDTH), 64, null=False), Int(1, WIDTH))),   # wav2vec2's list, mamba's int
    "num_feat_extract_layers": Int(1, 64), "num_conv_pos_embeddings": Int(1, POSITIONS),
    "num_conv_pos_embedding_groups": Int(1, WIDTH), "feat_extract_norm": TEXT, "feat_extract_activation": TEXT,
    **dict.fromkeys(["conv_bias", "do_stable_layer_norm", "apply_spec_augment", "add_adapter"], FLAG),
    **dict.fromkeys(["mask_time_prob", "mask_feature_prob"], RATE),
    # mamba; mamba2's (min, max) clamp of the step sizes
    "time_step_limit": ListOf(AnyOf((Num(-1e30, 1e30, null=False), Infinity())), 2),
    "state_size": Int(1, WIDTH), "expand": Int(1, 1024),
    "time_step_rank": AnyOf((Int(1, WIDTH), Kind(str))), **dict.fromkeys(["use_bias", "use_conv_bias"], FLAG),
}
FAMILY_TYPES: dict[str, dict] = {}   # model_type → its own types of shared field names (they win)
NESTED = {"rope_scaling": ROPE, "rope_parameters": ROPE, "text_config": FIELD_TYPES, "vision_config": FIELD_TYPES}


def check_types(cfg: dict, prefix: str = "") -> None:
    """HFImportError (exit 1) for the first field of FIELD_TYPES whose value has the wrong type or is out
    of range, naming the field and the value; one level into the objects of NESTED."""
    table = FIELD_TYPES if not prefix else NESTED[prefix[:-1].rsplit(".", 1)[-1]]
    if not prefix:   # a family whose field of a shared name holds another type (SegFormer's per-stage heads)
        table = {**table, **FAMILY_TYPES.get(cfg.get("model_type"), {})}
    for name, rule in table.items():
        if name not in cfg:
            continue
        value = cfg[name]
        if not rule.ok(value):
            raise HFImportError(f"config field `{prefix}{name}` is {show(value)}; expected {rule}")
        if prefix == "" and name in NESTED and value:
            check_types(value, f"{name}.")


@dataclass(frozen=True)
class P:
    """Config field → param, through `convert(value, field_name)` when given."""
    param: str
    convert: Callable[[Any, str], Any] | None = None


@dataclass(frozen=True)
class Fixed:
    """The spec hard-wires this part: the field must satisfy `ok(value)`; `why` says what the spec does."""
    ok: Callable[[Any], bool]
    why: str


@dataclass
class Family:
    model_type: str
    spec: str                                   # file in specs/
    fields: dict[str, P | Fixed]
    ignored: frozenset = frozenset()            # family-specific fields that don't change the function
    derive: Callable[[dict], dict] | None = None  # params computed from several fields (after the table)
    reference: str = ""


def _is(*values):
    return lambda v: v in values


def _absent_or(*values):
    return lambda v: v is None or v in values


# ---------------------------------------------------------------- the decoder LLMs

def _rope_params(cfg: dict, theta_field: str = "rope_theta") -> dict:
    """The rotary parameters as transformers reads them: the `rope_scaling` object where one is set (older
    configs; it replaces `rope_parameters` whole), else `rope_parameters` (transformers ≥ 5); theta from
    that object, else from the top-level `theta_field` (with_defaults fills the class's default_theta);
    the type `default` where none is named."""
    rp = dict(cfg.get("rope_scaling") or cfg.get("rope_parameters") or {})
    if "rope_theta" not in rp and cfg.get(theta_field) is not None:
        rp["rope_theta"] = cfg[theta_field]
    rp["rope_type"] = rp.get("rope_type") or rp.get("type") or "default"
    return rp


def _rope_field(cfg: dict) -> str:
    return "rope_scaling" if cfg.get("rope_scaling") else "rope_parameters"


def _derive_rope(cfg: dict, scaling_ok: bool) -> dict:
    rp = _rope_params(cfg)
    out = {}
    if "rope_theta" in rp:
        out["rope_theta"] = float(rp["rope_theta"])
    kind = rp["rope_type"]
    if kind == "default":
        if scaling_ok:
            out["rope_scaling"] = "none"
    elif kind == "llama3" and scaling_ok:
        out.update(rope_scaling="llama3", rope_factor=float(rp["factor"]),
                   rope_low_freq=float(rp["low_freq_factor"]), rope_high_freq=float(rp["high_freq_factor"]),
                   rope_original_max_len=int(rp.get("original_max_position_embeddings",
                                                     cfg["max_position_embeddings"])))
    else:
        allowed = "default or llama3" if scaling_ok else "default (this spec has no rope scaling)"
        raise HFImportError(f"`{_rope_field(cfg)}` rope_type `{kind}`: not supported (supported: {allowed}); "
                            f"a different rotary schedule changes every attention score")
    return out


def _head_dim_ok(cfg: dict) -> None:
    hd = cfg.get("head_dim")
    if hd is not None and hd * cfg["num_attention_heads"] != cfg["hidden_size"]:
        raise HFImportError(f"`head_dim: {hd}` ≠ hidden_size / num_attention_heads = "
                            f"{cfg['hidden_size']} / {cfg['num_attention_heads']}: the spec's heads are "
                            f"d_model / heads wide")


def _llama_derive(scaling_ok: bool):
    def derive(cfg: dict) -> dict:
        _head_dim_ok(cfg)
        out = _derive_rope(cfg, scaling_ok)
        if cfg.get("num_key_value_heads") is None:
            out["kv_heads"] = cfg["num_attention_heads"]
        return out
    return derive


LLAMA_FIELDS = {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "num_attention_heads": P("heads"), "num_key_value_heads": P("kv_heads"), "intermediate_size": P("d_ff"),
    "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"), "hidden_act": P("act", act),
    "attention_bias": P("attn_bias"), "mlp_bias": P("mlp_bias"), "tie_word_embeddings": P("tie_embeddings"),
}
ROPE_READ = frozenset({"rope_theta", "rope_scaling", "rope_parameters", "head_dim"})  # read by derive


def _mistral_window(cfg: dict) -> dict:
    out = _llama_derive(False)(cfg)
    w = cfg.get("sliding_window")
    # no window = attend to everything: a window as long as the positions the model has is the same
    out["window"] = cfg["max_position_embeddings"] if w is None else w
    return out


def _no_window(cfg: dict) -> dict:
    w = cfg.get("sliding_window")
    if w is not None and w < cfg["max_position_embeddings"]:
        raise HFImportError(f"`sliding_window: {w}`: the mixtral spec attends to every position (no window)")
    return _llama_derive(False)(cfg)


def _qwen2(cfg: dict) -> dict:
    if cfg.get("use_sliding_window"):
        raise HFImportError("`use_sliding_window: true`: the qwen2 spec has full attention in every layer")
    kinds = set(cfg.get("layer_types") or ["full_attention"])
    if kinds != {"full_attention"}:
        raise HFImportError(f"`layer_types` {sorted(kinds)}: the qwen2 spec has full attention in every layer")
    return _llama_derive(False)(cfg)


def _gemma2(cfg: dict) -> dict:
    """Gemma-2: rope, the alternating layers transformers defaults to, both soft-caps, the window."""
    out = _derive_rope(cfg, False)
    layers = cfg["num_hidden_layers"]
    default = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    if cfg.get("layer_types") not in (None, default):
        raise HFImportError(f"`layer_types` {cfg['layer_types']}: the gemma2 spec alternates sliding "
                            "(even layers) and full attention (odd layers), transformers' default")
    for name in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.get(name) is None:
            raise HFImportError(f"`{name}: null`: the gemma2 spec soft-caps with a positive cap")
    w = cfg.get("sliding_window")
    # no window = attend to everything: a window as long as the positions the model has is the same
    out["sliding_window"] = cfg["max_position_embeddings"] if w is None else w
    if cfg.get("num_key_value_heads") is None:
        out["kv_heads"] = cfg["num_attention_heads"]
    return out


def _gemma3_rope(cfg: dict, kind: str, theta_field: str) -> dict:
    """One layer type's rotary parameters as transformers 5's Gemma3TextConfig builds them: rope_parameters[kind]
    (rope_scaling, older configs' spelling, updates the full-attention layers' only), theta from there, else
    the top-level `rope_theta` / `rope_local_base_freq`, else the class's default_theta."""
    rp = cfg.get("rope_parameters") or {}
    sub = dict(rp.get(kind) or {}) if isinstance(rp.get(kind) or {}, dict) else None
    if sub is None:
        raise HFImportError(f"config field `rope_parameters.{kind}` is {show(rp.get(kind))}; expected an object")
    if kind == "full_attention" and cfg.get("rope_scaling"):
        sub.update(cfg["rope_scaling"])
    sub.setdefault("rope_theta", cfg.get(theta_field) if cfg.get(theta_field) is not None else
                   cfg["global_rope_theta" if kind == "full_attention" else "local_rope_theta"])
    for name, rule in ROPE.items():
        if name in sub and not rule.ok(sub[name]):
            raise HFImportError(f"config field `rope_parameters.{kind}.{name}` is {show(sub[name])}; expected {rule}")
    return sub


def _gemma3(cfg: dict) -> dict:
    """Gemma-3's text model: the layer pattern (global where (i + 1) % k == 0), both rotary bases, the global
    layers' linear scaling (the sliding layers' must be plain), the window."""
    layers = cfg["num_hidden_layers"]
    every = cfg.get("sliding_window_pattern") or 6

    def pattern(k):
        return ["full_attention" if (i + 1) % k == 0 else "sliding_attention" for i in range(layers)]
    types = cfg.get("layer_types") or pattern(every)
    found = next((k for k in [every] + list(range(1, layers + 2)) if list(types) == pattern(k)), None)
    if found is None:
        raise HFImportError(f"`layer_types` {show(types)}: the gemma3 spec attends globally at every k-th layer "
                            f"(full_attention where (i + 1) % k == 0) and in a sliding window elsewhere")
    out = {"sliding_window_pattern": found}
    full = _gemma3_rope(cfg, "full_attention", "rope_theta")
    local = _gemma3_rope(cfg, "sliding_attention", "rope_local_base_freq")
    for kind, sub, ok in (("full_attention", full, ("default", "linear")), ("sliding_attention", local, ("default",))):
        rope_type = sub.get("rope_type") or sub.get("type") or "default"
        if rope_type not in ok:
            raise HFImportError(f"`rope_parameters.{kind}` rope_type {show(rope_type)}: not supported (supported: "
                                f"{' or '.join(ok)}); a different rotary schedule changes every attention score")
    linear = (full.get("rope_type") or full.get("type")) == "linear"
    out.update(rope_theta=float(full["rope_theta"]), rope_local_theta=float(local["rope_theta"]),
               rope_scaling="linear" if linear else "none")
    if linear:
        out["rope_factor"] = float(full["factor"])
    w = cfg.get("sliding_window")
    # no window = attend to everything: a window as long as the positions the model has is the same
    out["sliding_window"] = cfg["max_position_embeddings"] if w is None else w
    if cfg.get("num_key_value_heads") is None:
        out["kv_heads"] = cfg["num_attention_heads"]
    return out


FAMILY_TYPES["gemma3_text"] = {"sliding_window_pattern": Int(1, LAYERS, null=True), "rope_local_base_freq": THETA}


def _olmo2(cfg: dict) -> dict:
    return _llama_derive(False)(cfg)


def _phi(cfg: dict) -> dict:
    rp = _rope_params(cfg)
    if rp["rope_type"] != "default":
        raise HFImportError(f"`{_rope_field(cfg)}` rope_type `{rp['rope_type']}`: the phi spec has plain rotary")
    heads, d = cfg["num_attention_heads"], cfg["hidden_size"]
    kv = cfg.get("num_key_value_heads")
    if kv not in (None, heads):
        raise HFImportError(f"`num_key_value_heads: {kv}`: the phi spec has as many key/value heads as heads")
    factor = rp.get("partial_rotary_factor", cfg["partial_rotary_factor"])
    rope_dims = int(factor * (d // heads))
    if rope_dims % 2:
        raise HFImportError(f"`partial_rotary_factor: {factor}` gives {rope_dims} rotary dims; rotary needs an "
                            f"even count")
    return {"rope_theta": float(rp["rope_theta"]), "rope_dims": rope_dims}


# ---------------------------------------------------------------- GPT-NeoX and BLOOM (fused per-head qkv)

def _neox(cfg: dict) -> dict:
    """Rotary from `rope_parameters` (transformers 5) or the hub's `rotary_pct` / `rotary_emb_base` (GPTNeoXConfig
    reads no top-level `rope_theta` or `partial_rotary_factor`)."""
    rp = _rope_params(cfg, "rotary_emb_base")
    if rp["rope_type"] != "default":
        raise HFImportError(f"`{_rope_field(cfg)}` rope_type `{rp['rope_type']}`: the gpt-neox spec has plain rotary")
    theta = rp["rope_theta"]
    factor = rp.get("partial_rotary_factor", cfg["rotary_pct"])
    rope_dims = int(cfg["hidden_size"] // cfg["num_attention_heads"] * factor)
    if rope_dims < 2 or rope_dims % 2:
        raise HFImportError(f"`rotary_pct: {factor}` gives {rope_dims} rotary dims per head; rotary needs an even "
                            f"count of at least 2")
    return {"rope_theta": float(theta), "rope_dims": rope_dims}


def _gptj(cfg: dict) -> dict:
    """GPT-J's `rotary_dim` dims of each head turn in interleaved pairs. transformers sizes its rotary
    table `rotary_dim or n_embd` wide, so a null rotary_dim only works with one head (the whole head)."""
    heads, d, r = cfg["n_head"], cfg["n_embd"], cfg["rotary_dim"]
    if r is None:
        if heads != 1:
            raise HFImportError(f"`rotary_dim: null` with {heads} heads: transformers' GPT-J rotates n_embd "
                                f"dims then, which fits only a single head")
        r = d
    if r % 2 or r > d // heads:
        raise HFImportError(f"`rotary_dim: {r}`: interleaved rotary turns pairs of dims, so it needs an even "
                            f"number no wider than the head ({d // heads})")
    return {"rope_dims": r}


def _parallel_layer(value, name):
    return "parallel_layer" if value else "sequential_layer"


def _bloom(cfg: dict) -> dict:
    # BloomConfig takes the hub's `n_embed` over hidden_size (num_attention_heads, num_hidden_layers: ALIASES)
    width = cfg["hidden_size"] if cfg.get("n_embed") is None else cfg["n_embed"]
    return {"d_model": width, "heads": cfg["n_head"], "layers": cfg["n_layer"]}


BLOOM_IGNORED = frozenset({
    "hidden_size", "n_embed", "n_head", "num_attention_heads", "n_layer", "num_hidden_layers",  # read by _bloom
    "hidden_dropout", "slow_but_exact", "n_inner",  # the MLP is 4 × hidden_size wide whatever n_inner says
    # Megatron-DeepSpeed training switches the hub configs still carry
    "masked_softmax_fusion", "bias_dropout_fusion", "offset_alibi", "seq_length", "skip_bias_add",
    "skip_bias_add_qkv", "attention_softmax_in_fp32", "unk_token_id",
})


# ---------------------------------------------------------------- GPT-2 and the encoders

def _wav2vec2(cfg: dict) -> dict:
    """The feature encoder's lists: the first convolution's kernel and stride apart, the others as per-layer
    lists; samples per frame (the strides' product) and per receptive field, which size the input."""
    dims, kernels, strides = cfg["conv_dim"], cfg["conv_kernel"], cfg["conv_stride"]
    if not len(dims) == len(kernels) == len(strides) == cfg.get("num_feat_extract_layers", len(dims)) > 1:
        raise HFImportError(f"`conv_dim`, `conv_kernel`, `conv_stride` (and `num_feat_extract_layers`) must give "
                            f"one entry per convolution, at least 2: got {show(dims)}, {show(kernels)}, "
                            f"{show(strides)}")
    if len(set(dims)) > 1:
        raise HFImportError(f"`conv_dim: {show(dims)}`: not supported: the wav2vec2 spec's convolutions all have "
                            f"one width")
    if not (cfg["mask_time_prob"] or cfg["mask_feature_prob"]):
        raise HFImportError("`mask_time_prob` and `mask_feature_prob` are both 0: not supported: the reference then "
                            "has no `masked_spec_embed`, which the wav2vec2 spec always has")
    hop, receptive = 1, 1
    for k, st in zip(kernels, strides):
        receptive += (k - 1) * hop
        hop *= st
    return {"conv_dim": dims[0], "kernel0": kernels[0], "stride0": strides[0], "conv_kernels": kernels[1:],
            "conv_strides": strides[1:], "conv_layers": len(kernels) - 1, "hop": hop, "receptive": receptive}


WAV2VEC2 = Family("wav2vec2", "wav2vec2.yaml", {
    "hidden_size": P("d_model"), "num_hidden_layers": P("layers"), "num_attention_heads": P("heads"),
    "intermediate_size": P("d_ff"), "layer_norm_eps": P("eps"), "hidden_act": P("act", act),
    "feat_extract_activation": P("feat_act", act), "conv_bias": P("conv_bias"),
    "num_conv_pos_embeddings": P("pos_kernel"), "num_conv_pos_embedding_groups": P("pos_groups"),
    "feat_extract_norm": Fixed(_is("group", None), "the wav2vec2 spec is wav2vec2-base's: one group norm after "
                                                   "the first convolution, not a layer norm after each"),
    "do_stable_layer_norm": Fixed(_is(False, None), "the wav2vec2 spec's encoder layers are post-norm"),
    "add_adapter": Fixed(_is(False, None), "the wav2vec2 spec has no adapter"),
    "apply_spec_augment": Fixed(_is(True, None), "the wav2vec2 spec replaces the frames `mask_time_indices` "
                                                 "marks, as the reference does only with SpecAugment on"),
}, frozenset({
    # read by the derive function
    "conv_dim", "conv_kernel", "conv_stride", "num_feat_extract_layers", "mask_time_prob", "mask_feature_prob",
    # training only: dropouts, layer drop, SpecAugment's span lengths
    "hidden_dropout", "activation_dropout", "feat_proj_dropout", "feat_quantizer_dropout", "final_dropout",
    "layerdrop", "mask_time_length", "mask_time_min_masks", "mask_feature_length", "mask_feature_min_masks",
    "gradient_checkpointing", "feat_extract_dropout",
    # heads on top of Wav2Vec2Model (pre-training quantizer, CTC, classification, x-vector), and the adapter's
    "vocab_size", "num_codevectors_per_group", "num_codevector_groups", "contrastive_logits_temperature",
    "num_negatives", "codevector_dim", "proj_codevector_dim", "diversity_loss_weight", "ctc_loss_reduction",
    "ctc_zero_infinity", "use_weighted_layer_sum", "classifier_proj_size", "tdnn_dim", "tdnn_kernel",
    "tdnn_dilation", "xvector_output_dim", "num_adapter_layers", "adapter_kernel_size", "adapter_stride",
    "output_hidden_size", "adapter_attn_dim", "hidden_dropout_prob",
}), _wav2vec2, "Wav2Vec2Model")


def _clip(cfg: dict) -> dict:
    text, vision = cfg["text_config"], cfg["vision_config"]
    out = {}
    for prefix, sub, table in (("text_config", text, CLIP_TEXT), ("vision_config", vision, CLIP_VISION)):
        out.update(apply_table(table, sub, prefix + ".", cfg.setdefault(MISSING, [])))
    # transformers pools the text at the first `eos_token_id`; configs with the legacy id 2 at the largest id
    eos = text["eos_token_id"]
    if not isinstance(eos, int) or isinstance(eos, bool):
        raise HFImportError(f"`text_config.eos_token_id: {show(eos)}`: the clip spec pools at one "
                            f"end-of-text id")
    out.update({"text_pool": "argmax"} if eos == 2 else {"text_pool": "first", "eos_token": eos})
    return out


def _clip_tower(prefix: str) -> dict:
    return {"hidden_act": P(f"{prefix}_act", act), "layer_norm_eps": P(f"{prefix}_eps"),
            "attention_dropout": P(f"{prefix}_attn_dropout")}


CLIP_TEXT = {
    "vocab_size": P("vocab"), "max_position_embeddings": P("text_len"), "hidden_size": P("text_width"),
    "num_attention_heads": P("text_heads"), "intermediate_size": P("text_ff"), "num_hidden_layers": P("text_layers"),
    **_clip_tower("text"),
}
CLIP_VISION = {
    "image_size": P("image"), "patch_size": P("patch"), "num_channels": P("channels"),
    "hidden_size": P("vision_width"), "num_attention_heads": P("vision_heads"),
    "intermediate_size": P("vision_ff"), "num_hidden_layers": P("vision_layers"),
    **_clip_tower("vision"),
}
LLAVA_TEXT = {k: v for k, v in LLAMA_FIELDS.items() if k != "tie_word_embeddings"}   # the top level's ties


def _towers(cfg: dict, kind: str, spec: str, text_kind: str, vision_kind: str, parts: str = "") -> tuple[dict, dict]:
    """A two-tower config's text_config and vision_config, each of the model_type the spec has there (absent:
    that one)."""
    text, vision = cfg["text_config"], cfg["vision_config"]
    for sub, want in ((text, text_kind), (vision, vision_kind)):
        if sub.get("model_type", want) != want:
            raise HFImportError(f"a {kind} config with a `{sub['model_type']}` sub-config: the {spec} spec has a "
                                f"{want} there{parts}")
    return text, vision


def _llava(cfg: dict) -> dict:
    """LLaVA: the text_config a Llama's (llama's table and rope rules), the vision_config a CLIP vision
    tower's (clip's), read at the second-to-last hidden state without [CLS]."""
    text, vision = _towers(cfg, "llava", "llava", "llama", "clip_vision_model",
                           " (CLIP vision tower, Llama text model)")
    missing = cfg.setdefault(MISSING, [])
    out = apply_table(LLAVA_TEXT, text, "text_config.", missing)
    out.update(_llama_derive(True)(text))
    out.update(apply_table(CLIP_VISION, vision, "vision_config.", missing))
    # LlavaConfig ties the head where either the top level or the text model says so
    out["tie_embeddings"] = bool(cfg["tie_word_embeddings"] or text["tie_word_embeddings"])
    return out


GEMMA_TEXT = {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "num_attention_heads": P("heads"), "num_key_value_heads": P("kv_heads"), "head_dim": P("head_dim"),
    "intermediate_size": P("d_ff"), "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"),
    "hidden_act": P("act", act), "attention_bias": P("attn_bias"),
}
SIGLIP_VISION = {**CLIP_VISION, "vision_use_head": P("vision_use_head")}   # PaliGemma: weights no logit reads
# Gemma-3's projector pools the patch tokens themselves: its vision tower has no pooling head
GEMMA3_VISION = {**CLIP_VISION, "vision_use_head": Fixed(_is(False, None), "the gemma3-vision spec's vision tower "
                                                         "has no pooling head (its projector pools the patches)")}


def _paligemma(cfg: dict) -> dict:
    """PaliGemma: the text_config a Gemma's (rope rules as gemma2's), the vision_config a SigLIP vision
    tower's (clip's fields), the projector into the text width. The pad row is the text model's."""
    text, vision = _towers(cfg, "paligemma", "paligemma", "gemma", "siglip_vision_model",
                           " (SigLIP vision tower, Gemma text model; PaliGemma-2's Gemma-2 is not written)")
    missing = cfg.setdefault(MISSING, [])
    out = apply_table(GEMMA_TEXT, text, "text_config.", missing)
    if text["hidden_act"] == "gelu":   # GemmaConfig reads the legacy `gelu` as the tanh approximation
        out["act"] = "gelu_tanh"
    out.update(_derive_rope(text, False))
    out.update(apply_table(SIGLIP_VISION, vision, "vision_config.", missing))
    width = text["hidden_size"]
    if cfg["projection_dim"] != width:
        raise HFImportError(f"`projection_dim: {cfg['projection_dim']}` ≠ text_config.hidden_size {width}: the "
                            "image features take the place of token embeddings, so they are as wide")
    token, vocab = cfg["image_token_index"], text["vocab_size"]
    if token >= vocab:   # the reference looks up id 0 there instead; the spec's table has no such row
        raise HFImportError(f"`image_token_index: {token}` is not below text_config.vocab_size {vocab}: the "
                            "paligemma spec looks the image token up in the token table")
    cfg["pad_token_id"] = text["pad_token_id"]   # the pad row is the text model's
    return out


SIGLIP_TEXT = {**CLIP_TEXT, "projection_size": P("embed")}
SIGLIP_TOWER = {**CLIP_VISION, "vision_use_head": Fixed(_is(True, None), "SiglipModel's image embedding is the "
                                                        "attention-pooling head's output (its pooler_output)")}


def _siglip(cfg: dict) -> dict:
    """SigLIP: CLIP's two tables (the text's with its head's width), the vision tower with its pooling head."""
    text, vision = _towers(cfg, "siglip", "siglip", "siglip_text_model", "siglip_vision_model")
    missing = cfg.setdefault(MISSING, [])
    out = apply_table(SIGLIP_TEXT, text, "text_config.", missing)
    out.update(apply_table(SIGLIP_TOWER, vision, "vision_config.", missing))
    if text["projection_size"] != vision["hidden_size"]:   # the reference's cosine fails on it too
        raise HFImportError(f"`text_config.projection_size: {text['projection_size']}` ≠ vision_config.hidden_size "
                            f"{vision['hidden_size']}: the text and image embeddings are compared, so they are as wide")
    return out


def _gemma3_vision(cfg: dict) -> dict:
    """Gemma-3 with images: the text_config a Gemma-3 text model's (gemma3_text's table and `_gemma3`), the
    vision_config a SigLIP vision tower's without a head, the projector's pooling: each image's patch grid
    pooled to sqrt(mm_tokens_per_image) per side, which must divide it (transformers' AvgPool2d would drop a
    remainder and give fewer tokens than the prompt has places for)."""
    text, vision = _towers(cfg, "gemma3", "gemma3-vision", "gemma3_text", "siglip_vision_model",
                           " (SigLIP vision tower, Gemma-3 text model)")
    missing = cfg.setdefault(MISSING, [])
    out = apply_table({k: v for k, v in FAMILIES["gemma3_text"].fields.items() if k != "tie_word_embeddings"},
                      text, "text_config.", missing)
    out.update(_gemma3(text))
    out.update(apply_table(GEMMA3_VISION, vision, "vision_config.", missing))
    tokens, side = cfg["mm_tokens_per_image"], math.isqrt(max(cfg["mm_tokens_per_image"], 0))
    patches = vision["image_size"] // vision["patch_size"] if isinstance(vision["image_size"], int) else 0
    if tokens < 1 or side * side != tokens or patches % side:
        raise HFImportError(f"`mm_tokens_per_image: {tokens}`: the gemma3-vision spec pools each image's "
                            f"{patches} × {patches} patch grid to a square of side dividing it")
    out["mm_side"] = side
    token, vocab = cfg["image_token_index"], text["vocab_size"]
    if token >= vocab:   # the reference looks up id 0 there instead; the spec's table has no such row
        raise HFImportError(f"`image_token_index: {token}` is not below text_config.vocab_size {vocab}: the "
                            "gemma3-vision spec looks the image token up in the token table")
    cfg["pad_token_id"] = text["pad_token_id"]   # the pad row is the text model's
    return out


GPT2_DROPOUT = {"attn_pdrop": P("attn_pdrop"), "resid_pdrop": P("resid_pdrop"), "embd_pdrop": P("embd_pdrop")}
ENCODER_DROPOUT = {"hidden_dropout_prob": P("hidden_dropout"), "attention_probs_dropout_prob": P("attn_dropout")}


def _square_in(spec: str):
    """A converter of an image or patch size: an int, or a [height, width] pair that is square."""
    def convert(value, name):
        if isinstance(value, (list, tuple)):
            if len(value) != 2 or value[0] != value[1]:
                raise HFImportError(f"`{name}: {list(value)}`: the {spec} spec takes square images and patches")
            value = value[0]
        return value
    return convert


_square = _square_in("swin-t")


def _swin(cfg: dict) -> dict:
    out = {**_vit(cfg), "head": _names(cfg, "SwinForImageClassification")}
    for field, param in (("depths", "depth"), ("num_heads", "heads")):
        values = cfg[field]
        if not isinstance(values, list | tuple) or len(values) != 4:
            raise HFImportError(f"`{field}: {values}`: the swin-t spec has four stages")
        out.update({f"{param}{i + 1}": int(v) for i, v in enumerate(values)})
    ratio = cfg["mlp_ratio"]
    if ratio != int(ratio):
        raise HFImportError(f"`mlp_ratio: {ratio}`: the swin-t spec's MLP width is an integer multiple")
    out["mlp_ratio"] = int(ratio)
    return out


def _labels(cfg: dict) -> int:
    """num_labels, or the length of id2label (transformers' config writes that), or the classes' default 2."""
    return int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2)


def _names(cfg: dict, *classes: str) -> bool:
    """Whether `architectures` names one of `classes`: a head class's checkpoint (without architectures, the
    bare model that AutoModel builds)."""
    return any(str(a) in classes for a in cfg.get("architectures") or ())


def _with_head(derive: Callable[[dict], dict], bare: str) -> Callable[[dict], dict]:
    """`derive`, plus the spec's `head` switched off where `architectures` names the bare model `bare` (a
    checkpoint without the LM head; `build --save-map hf` writes that name for `head: false`)."""
    def with_head(cfg: dict) -> dict:
        return {**derive(cfg), "head": not _names(cfg, bare)}
    return with_head


def _vit(cfg: dict) -> dict:
    size = cfg.get("pooler_output_size")
    if size is not None and size != cfg.get("hidden_size"):
        raise HFImportError(f"`pooler_output_size: {size}`: the vit spec's pooler is d_model wide")
    return {"classes": _labels(cfg)}


def _vit_heads(cfg: dict) -> dict:
    # ViTForImageClassification: the classifier on [CLS], no pooler; ViTModel: the pooler (add_pooling_layer)
    head = _names(cfg, "ViTForImageClassification")
    return {**_vit(cfg), "head": head, "pooler": not head}


def _dinov2(cfg: dict) -> dict:
    # transformers' Dinov2MLP: int(hidden_size · mlp_ratio) wide; the registers model resizes its
    # positions with antialiasing, Dinov2 without
    return {"d_ff": int(cfg["hidden_size"] * cfg["mlp_ratio"]),
            "antialias": cfg["model_type"] == "dinov2_with_registers", "classes": _labels(cfg),
            "head": _names(cfg, "Dinov2ForImageClassification", "Dinov2WithRegistersForImageClassification")}


def _dinov2_family(model_type: str, reference: str, extra: dict) -> Family:
    square = _square_in("dinov2")
    return Family(model_type, "dinov2.yaml", {
        "image_size": P("image", square), "patch_size": P("patch", square), "num_channels": P("channels"),
        "hidden_size": P("d_model"), "num_attention_heads": P("heads"), "num_hidden_layers": P("layers"),
        "layer_norm_eps": P("eps"), "hidden_act": P("act", act), "qkv_bias": P("qkv_bias"),
        "layerscale_value": P("layerscale"), **ENCODER_DROPOUT, **extra,
        "use_swiglu_ffn": Fixed(_is(False, None), "the dinov2 spec's MLP is fc1 → act → fc2, not SwiGLU "
                                                  "(dinov2-giant's)"),
    }, frozenset({"mlp_ratio", "drop_path_rate", "num_labels", "apply_layernorm", "reshape_hidden_states",
                  "out_features", "out_indices", "stage_names"}), _dinov2, reference)


# ---------------------------------------------------------------- TimeSformer (divided space–time attention)

FIELD_TYPES.update({"num_frames": Int(1, POSITIONS), "attention_type": TEXT, "drop_path_rate": RATE})


def _ast(cfg: dict) -> dict:
    # ASTForAudioClassification: a layer norm and a linear layer on the pooled output
    return {"head": _names(cfg, "ASTForAudioClassification"), "classes": _labels(cfg)}


def _timesformer(cfg: dict) -> dict:
    # the classifier on [CLS] where the checkpoint is TimesformerForVideoClassification's
    head = any(str(a).endswith("ForVideoClassification") for a in cfg.get("architectures") or ())
    labels = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2
    return {"head": head, "classes": int(labels)}


TIMESFORMER = Family("timesformer", "timesformer.yaml", {
    "image_size": P("image", _square_in("timesformer")), "patch_size": P("patch", _square_in("timesformer")),
    "num_channels": P("channels"), "num_frames": P("frames"), "hidden_size": P("d_model"),
    "num_attention_heads": P("heads"), "num_hidden_layers": P("layers"), "intermediate_size": P("d_ff"),
    "layer_norm_eps": P("eps"), "hidden_act": P("act", act), "qkv_bias": P("qkv_bias"), **ENCODER_DROPOUT,
    "attention_type": Fixed(_is("divided_space_time", None), "the timesformer spec's layers are divided "
                                                             "space–time attention"),
}, frozenset({"num_labels", "drop_path_rate"}), _timesformer, "TimesformerModel")


# ---------------------------------------------------------------- ViViT (tubelet embedding: a 3-D convolution)

FIELD_TYPES.update({"tubelet_size": ListOf(Int(1, SIDE), 3, null=False)})


def _vivit(cfg: dict) -> dict:
    # tubelet_size is [frames, height, width] of the Conv3d kernel; the spec's patch is square
    out = _vit(cfg)
    tubelet = cfg.get("tubelet_size")
    if tubelet is not None:
        if len(tubelet) != 3 or tubelet[1] != tubelet[2]:
            raise HFImportError(f"`tubelet_size: {list(tubelet)}`: the vivit spec takes [frames, P, P] "
                                f"(square patches)")
        out.update(tubelet=int(tubelet[0]), patch=int(tubelet[1]))
    # VivitForVideoClassification: the classifier on [CLS], no pooler; VivitModel: the pooler
    head = any(str(a).endswith("ForVideoClassification") for a in cfg.get("architectures") or ())
    return {**out, "head": head, "pooler": not head}


VIVIT = Family("vivit", "vivit.yaml", {
    "image_size": P("image", _square_in("vivit")), "num_channels": P("channels"), "num_frames": P("frames"),
    "hidden_size": P("d_model"), "num_attention_heads": P("heads"), "num_hidden_layers": P("layers"),
    "intermediate_size": P("d_ff"), "layer_norm_eps": P("eps"), "hidden_act": P("act", act),
    "qkv_bias": P("qkv_bias"), "pooler_act": P("pooler_act", act), **ENCODER_DROPOUT,
}, frozenset({"num_labels", "tubelet_size", "pooler_output_size"}), _vivit, "VivitModel")


# ---------------------------------------------------------------- Mamba (selective state spaces)

def _mamba(cfg: dict) -> dict:
    # MambaConfig derives these: inner = expand · hidden_size, dt_rank "auto" = ceil(hidden_size / 16)
    width = cfg["hidden_size"]
    rank = cfg["time_step_rank"]
    if rank == "auto":
        rank = -(-width // 16)
    elif not isinstance(rank, int):
        raise HFImportError(f"`time_step_rank: {show(rank)}`: expected an integer or \"auto\"")
    inner = cfg.get("intermediate_size") or int(cfg["expand"] * width)   # a given intermediate_size wins
    head = not any(str(a) == "MambaModel" for a in cfg.get("architectures") or ())
    return {"inner": inner, "dt_rank": rank, "head": head}


MAMBA = Family("mamba", "mamba.yaml", {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "state_size": P("state"), "conv_kernel": P("conv_kernel"), "layer_norm_epsilon": P("eps"),
    "hidden_act": P("act", act), "use_bias": P("bias"), "use_conv_bias": P("conv_bias"),
    "tie_word_embeddings": P("tie_embeddings"),
}, frozenset({"expand", "intermediate_size", "time_step_rank", "time_step_scale", "time_step_min",
              "time_step_max", "time_step_init_scheme", "time_step_floor", "rescale_prenorm_residual",
              "residual_in_fp32", "use_mambapy", "use_associative_scan", "layer_types"}), _mamba,
    "MambaForCausalLM")


# ---------------------------------------------------------------- Jamba (Mamba and attention layers, experts)

FIELD_TYPES.update({
    **dict.fromkeys(["attn_layer_period", "expert_layer_period"], Int(1, LAYERS)),
    **dict.fromkeys(["attn_layer_offset", "expert_layer_offset"], Int(0, LAYERS)),
    "num_experts": Int(1, LAYERS), **dict.fromkeys(["mamba_d_state", "mamba_d_conv"], Int(1, WIDTH)),
    "mamba_expand": Int(1, 1024), "mamba_dt_rank": AnyOf((Int(1, WIDTH), Kind(str))),
    **dict.fromkeys(["mamba_conv_bias", "mamba_proj_bias"], FLAG),
})


def _jamba(cfg: dict) -> dict:
    # JambaConfig: dt_rank "auto" = ceil(hidden_size / 16); each offset below its period (validate_architecture)
    for kind in ("attn", "expert"):
        period, offset = cfg[f"{kind}_layer_period"], cfg[f"{kind}_layer_offset"]
        if offset >= period:
            raise HFImportError(f"`{kind}_layer_offset: {offset}` is not below `{kind}_layer_period: {period}`, "
                                "which transformers' JambaConfig refuses")
    rank = cfg["mamba_dt_rank"]
    if rank == "auto":
        rank = -(-cfg["hidden_size"] // 16)
    elif not isinstance(rank, int):
        raise HFImportError(f"`mamba_dt_rank: {show(rank)}`: expected an integer or \"auto\"")
    out = {"dt_rank": rank}
    if cfg.get("num_key_value_heads") is None:   # null: as many as heads (JambaConfig.__post_init__)
        out["kv_heads"] = cfg["num_attention_heads"]
    return out


JAMBA = Family("jamba", "jamba.yaml", {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "intermediate_size": P("d_ff"),
    "num_hidden_layers": P("layers"), "num_attention_heads": P("heads"), "num_key_value_heads": P("kv_heads"),
    "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"), "hidden_act": P("act", act),
    "tie_word_embeddings": P("tie_embeddings"), "num_experts": P("experts"), "num_experts_per_tok": P("top_k"),
    "attn_layer_period": P("attn_period"), "attn_layer_offset": P("attn_offset"),
    "expert_layer_period": P("expert_period"), "expert_layer_offset": P("expert_offset"),
    "mamba_d_state": P("state"), "mamba_d_conv": P("conv_kernel"), "mamba_expand": P("expand"),
    "mamba_conv_bias": P("conv_bias"), "mamba_proj_bias": P("proj_bias"),
    # transformers 5 attends to every position; Jamba-v0.1's config says null
    "sliding_window": Fixed(_absent_or(None), "the jamba spec's attention layers attend to every position"),
}, frozenset({"mamba_dt_rank", "use_mamba_kernels", "use_mambapy", "use_associative_scan",
              "num_logits_to_keep", "calc_logits_for_entire_prompt"}), _jamba, "JambaForCausalLM")


# ---------------------------------------------------------------- Mamba-2 (multi-head selective state spaces)

FIELD_TYPES.update({"n_groups": Int(1, HEADS), "chunk_size": Int(1, POSITIONS)})


def _is_inf(v) -> bool:
    # json reads a bare `Infinity` as a float; transformers ≥ 5 writes {"__float__": "Infinity"}
    return (type(v) is float and v == math.inf) or v == {"__float__": "Infinity"}


def _no_dt_limit(v) -> bool:
    """time_step_limit that leaves softplus(Δ) unchanged: absent, or (≤ 0, ∞), transformers' default."""
    return v is None or (type(v) is list and len(v) == 2 and type(v[0]) in (int, float) and v[0] <= 0
                         and _is_inf(v[1]))


def _mamba2(cfg: dict) -> dict:
    # Mamba2Config: intermediate_size = expand · hidden_size, which num_heads · head_dim must equal
    heads, head_dim = cfg["num_heads"], cfg["head_dim"]
    inner = int(cfg["expand"] * cfg["hidden_size"])
    if type(heads) is not int or type(head_dim) is not int or heads * head_dim != inner:
        raise HFImportError(f"`num_heads: {show(heads)}` × `head_dim: {show(head_dim)}` is not expand · "
                            f"hidden_size = {inner}: Mamba-2's heads split the inner width exactly")
    head = not any(str(a) == "Mamba2Model" for a in cfg.get("architectures") or ())
    return {"inner": inner, "head": head}


MAMBA2 = Family("mamba2", "mamba2.yaml", {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "state_size": P("state"), "num_heads": P("heads"), "n_groups": P("groups"), "conv_kernel": P("conv_kernel"),
    "layer_norm_epsilon": P("eps"), "hidden_act": P("act", act), "use_bias": P("bias"),
    "use_conv_bias": P("conv_bias"), "tie_word_embeddings": P("tie_embeddings"),
    "time_step_limit": Fixed(_no_dt_limit, "the mamba2 spec does not clamp the step sizes (transformers' "
                                           "default (0, inf) leaves softplus's output unchanged)"),
}, frozenset({"expand", "head_dim", "chunk_size", "time_step_rank", "time_step_min", "time_step_max",
              "time_step_floor", "rescale_prenorm_residual", "residual_in_fp32", "layer_types"}), _mamba2,
    "Mamba2ForCausalLM")
# ---------------------------------------------------------------- RWKV-4 (token shift, WKV recurrence)

FIELD_TYPES.update({"attention_hidden_size": Int(1, WIDTH, null=True), "rescale_every": Int(-LAYERS, LAYERS),
                    "context_length": Int(1, POSITIONS)})


def _rwkv(cfg: dict) -> dict:
    # RwkvModel's eval mode rescales only when rescale_every > 0 (a negative one never); RwkvModel alone:
    # the backbone, without the head
    head = not any(str(a) == "RwkvModel" for a in cfg.get("architectures") or ())
    return {"rescale_every": max(cfg["rescale_every"], 0), "head": head}


RWKV = Family("rwkv", "rwkv.yaml", {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "attention_hidden_size": P("attn_width"), "intermediate_size": P("ffn"), "layer_norm_epsilon": P("eps"),
    "tie_word_embeddings": P("tie_embeddings"),
}, frozenset({"rescale_every", "context_length"}), _rwkv, "RwkvForCausalLM")


# ---------------------------------------------------------------- DeBERTa-v2/v3 (disentangled attention)

FIELD_TYPES.update({
    "relative_attention": FLAG, "position_biased_input": FLAG, "share_att_key": FLAG,
    "position_buckets": Int(-1, POSITIONS), "max_relative_positions": Int(-1, POSITIONS),
    **dict.fromkeys(["norm_rel_ebd", "conv_act"], TEXT), "pos_att_type": AnyOf((TEXT, ListOf(TEXT, 8))),
    "conv_kernel_size": Int(0, SIDE), "conv_groups": Int(1, WIDTH), "embedding_size": Int(1, WIDTH, null=True),
    "attention_head_size": Int(1, WIDTH, null=True),
})


def _deberta_v2(cfg: dict) -> dict:
    """What transformers reads with getattr defaults (absent: relative_attention, share_att_key off,
    norm_rel_ebd none, position_biased_input on, conv_kernel_size 0, conv_act tanh, conv_groups 1): the spec's
    attention is DeBERTa-v2/v3's, so the config must say relative attention with both position terms and
    buckets; absolute positions, token types, embed_proj and the convolution after the first layer are params."""
    def need(ok: bool, field_: str, why: str):
        if not ok:
            raise HFImportError(f"`{field_}: {show(cfg.get(field_))}`: not supported: {why}")
    need(cfg.get("relative_attention") is True, "relative_attention", "the deberta-v2 spec's attention is relative")
    terms = cfg.get("pos_att_type")
    terms = [t.strip() for t in terms.lower().split("|")] if isinstance(terms, str) else list(terms or [])
    need(sorted(terms) == ["c2p", "p2c"], "pos_att_type", "the deberta-v2 spec writes both terms, p2c and c2p")
    buckets = cfg.get("position_buckets", -1)
    need(buckets > 0, "position_buckets", "the deberta-v2 spec's table has 2 · position_buckets rows")
    need(cfg.get("attention_head_size") in (None, cfg["hidden_size"] // cfg["num_attention_heads"]),
         "attention_head_size", "the deberta-v2 spec's heads split the width evenly")
    far = cfg.get("max_relative_positions", -1)
    norm = [x.strip() for x in str(cfg.get("norm_rel_ebd", "none")).lower().split("|")]
    params = {"position_buckets": buckets, "share_att_key": cfg.get("share_att_key", False) is True,
              "max_relative_positions": far if far >= 1 else cfg.get("max_position_embeddings", 512),
              "norm_rel": "layer_norm" in norm, "position_biased": cfg.get("position_biased_input", True) is not False,
              "type_vocab": cfg.get("type_vocab_size", 0)}   # > 0: token-type embeddings
    if cfg.get("embedding_size") is not None:
        params["embedding_size"] = cfg["embedding_size"]
    kernel = cfg.get("conv_kernel_size", 0)
    if kernel > 0:   # ConvLayer reads these only then
        need(kernel % 2 == 1, "conv_kernel_size", "ConvLayer pads (k − 1) // 2 frames at each end, which keeps "
             "the length (and the reference runs) only for an odd kernel")
        groups = cfg.get("conv_groups", 1)
        need(cfg["hidden_size"] % groups == 0, "conv_groups", "the groups must divide hidden_size")
        params.update(conv_kernel=kernel, conv_groups=groups, conv_act=act(cfg.get("conv_act", "tanh"), "conv_act"))
    return params


DEBERTA_V2 = Family("deberta-v2", "deberta-v2.yaml", {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_attention_heads": P("heads"),
    "intermediate_size": P("d_ff"), "num_hidden_layers": P("layers"), "layer_norm_eps": P("eps"),
    "hidden_act": P("act", act), "max_position_embeddings": P("max_len"), **ENCODER_DROPOUT,
}, frozenset({"relative_attention", "position_biased_input", "pos_att_type", "position_buckets",
              "max_relative_positions", "share_att_key", "norm_rel_ebd", "type_vocab_size", "conv_kernel_size",
              "conv_act", "conv_groups", "embedding_size", "attention_head_size",
              # DebertaV2For* heads and the legacy LM head: not part of the encoder
              "pooler_dropout", "pooler_hidden_act", "pooler_hidden_size", "legacy", "tie_word_embeddings"}),
    _deberta_v2, "DebertaV2Model")


FIELD_TYPES.update({"num_hidden_groups": Int(1, LAYERS), "inner_group_num": Int(1, LAYERS)})   # ALBERT

GPT2_FIXED = {
    "scale_attn_by_inverse_layer_idx": Fixed(_is(False, None), "the spec scales attention by 1/√head_dim in "
                                                                  "every layer, not also by 1/layer"),
    "scale_attn_weights": Fixed(_is(True, None), "the spec scales attention scores by 1/√head_dim"),
    "add_cross_attention": Fixed(_is(False, None), "the spec has no cross-attention"),
    "reorder_and_upcast_attn": Fixed(_is(False, None), "the spec computes attention in the model's dtype"),
}

# ---------------------------------------------------------------- DeepSeek-V2 (latent attention, shared + routed experts)

FIELD_TYPES.update({
    **dict.fromkeys(["kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "moe_intermediate_size"],
                    Int(1, WIDTH)),
    "q_lora_rank": Int(1, WIDTH, null=True), "first_k_dense_replace": Int(0, LAYERS),
    "n_routed_experts": Int(1, LAYERS), "n_shared_experts": Int(1, LAYERS),
    **dict.fromkeys(["n_group", "topk_group"], Int(1, LAYERS, null=True)),
    "routed_scaling_factor": Num(0.0, 1e6, lo_open=True, null=False), "topk_method": TEXT,
    "scoring_func": TEXT, "norm_topk_prob": FLAG, "moe_layer_freq": Int(1, LAYERS, null=True),
})
ROPE.update({**dict.fromkeys(["beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor"],
                             Num(0.0, 1e6)), "truncate": FLAG})


def _t5(cfg: dict) -> dict:
    """T5's feed-forward from `feed_forward_proj` (`relu`, `gated-gelu`: transformers' own parsing), and
    v1.1 from the head: transformers 5 saves `scale_decoder_outputs` (and always ties in memory); older
    configs say v1.1 by `tie_word_embeddings: false`, which also means a head of its own."""
    proj = cfg["feed_forward_proj"]
    parts = proj.split("-") if isinstance(proj, str) else []
    if not 1 <= len(parts) <= 2 or len(parts) == 2 and parts[0] != "gated":
        raise HFImportError(f"`feed_forward_proj: {show(proj)}`: expected `ACT` or `gated-ACT`")
    fn = "gelu_new" if proj == "gated-gelu" else parts[-1]
    scale = cfg.get("scale_decoder_outputs", cfg.get("tie_word_embeddings") is not False)
    if not isinstance(scale, bool):
        raise HFImportError(f"`scale_decoder_outputs: {show(scale)}`: expected true or false")
    heads = cfg["num_heads"]
    if not isinstance(heads, int):   # the type allows Swin's per-stage list
        raise HFImportError(f"`num_heads: {show(heads)}`: expected an integer")
    # transformers 5 says both apart (a v1.1 config it writes has no scaling and a tied head, and its
    # checkpoint no lm_head); before it, `tie_word_embeddings: false` meant v1.1: no scaling, a head of its own
    tied = cfg.get("tie_word_embeddings") is not False and ("scale_decoder_outputs" in cfg or bool(scale))
    return {"ffn": "gated_ffn" if len(parts) == 2 else "dense_ffn", "act": act(fn, "feed_forward_proj"),
            "scale_decoder_outputs": int(scale), "heads": heads, "tie_embeddings": tied}


def _deepseek_v2(cfg: dict) -> dict:
    """The split into dense and MoE layers, the routing method and the rotary schedule."""
    layers, dense = cfg["num_hidden_layers"], cfg["first_k_dense_replace"]
    if not 1 <= dense < layers:
        raise HFImportError(f"`first_k_dense_replace: {dense}` with {layers} layers: the deepseek-v2 spec has at "
                            "least one dense layer and one mixture-of-experts layer (two `repeat`s, neither empty)")
    out = {"q_rank": cfg.get("q_lora_rank") or 0}
    method = cfg.get("topk_method") or "greedy"
    if method == "greedy":
        out.update(groups=1, top_groups=1)
    elif method == "group_limited_greedy":
        out.update(groups=cfg["n_group"], top_groups=cfg["topk_group"])
    else:
        raise HFImportError(f"`topk_method: {show(method)}`: transformers' DeepseekV2 routes by `greedy` or "
                            "`group_limited_greedy` only (DeepSeek-V3's `noaux_tc` is model_type deepseek_v3: "
                            "specs/deepseek-v3.yaml)")
    out.update(_latent_rope(cfg, "DeepSeek-V2"))
    return out


def _latent_rope(cfg: dict, model: str) -> dict:
    """DeepSeek's rotary params: plain, or YaRN with the attention factor and truncation derived as `model`
    derives them (an explicit one is refused)."""
    rp = _rope_params(cfg)
    out = {"rope_theta": float(rp["rope_theta"])}
    if rp["rope_type"] == "default":
        out["rope_scaling"] = "none"
    elif rp["rope_type"] == "yarn":
        if rp.get("attention_factor") is not None or rp.get("truncate") is False:
            raise HFImportError(f"`{_rope_field(cfg)}`: yarn with an explicit `attention_factor` or `truncate: "
                                f"false` is not supported (the spec derives both as {model} does)")
        out.update(_yarn(cfg, rp), rope_scaling="yarn")
    else:
        raise HFImportError(f"`{_rope_field(cfg)}` rope_type `{rp['rope_type']}`: not supported (supported: "
                            "default or yarn)")
    return out



def _yarn(cfg: dict, rp: dict) -> dict:
    """A YaRN `rope_scaling`'s numbers as the specs' params (transformers' defaults where a field is absent)."""
    return dict(rope_factor=float(rp["factor"]), rope_mscale=float(rp.get("mscale") or 0.0),
                rope_mscale_all_dim=float(rp.get("mscale_all_dim") or 0.0),
                rope_original_max_len=int(rp.get("original_max_position_embeddings") or cfg["max_position_embeddings"]),
                rope_beta_fast=float(rp.get("beta_fast") or 32), rope_beta_slow=float(rp.get("beta_slow") or 1))

DEEPSEEK_V2_FIELDS = {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "first_k_dense_replace": P("dense_layers"), "num_attention_heads": P("heads"), "kv_lora_rank": P("kv_rank"),
    "qk_nope_head_dim": P("nope_dim"), "qk_rope_head_dim": P("rope_dim"), "v_head_dim": P("v_dim"),
    "intermediate_size": P("d_ff"), "moe_intermediate_size": P("moe_d_ff"), "n_routed_experts": P("experts"),
    "n_shared_experts": P("shared_experts"), "num_experts_per_tok": P("top_k"),
    "routed_scaling_factor": P("routed_scale"), "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"),
    "hidden_act": P("act", act), "attention_bias": P("attn_bias"), "tie_word_embeddings": P("tie_embeddings"),
    "mlp_bias": Fixed(_is(False, None), "the deepseek-v2 spec's feed-forward layers have no biases"),
    "scoring_func": Fixed(_is("softmax", None), "the router scores experts by a softmax"),
    "moe_layer_freq": Fixed(_is(1, None), "every layer after the dense ones is a mixture of experts"),
}
DEEPSEEK_V2_READ = frozenset({
    "q_lora_rank", "topk_method", "n_group", "topk_group", "rope_theta", "rope_scaling", "rope_parameters",
    # transformers sets head_dim to qk_rope_head_dim itself; it reads num_key_value_heads only to repeat the
    # keys of a grouped-query attention, which latent attention is not (the deepseek-v2 hub configs set it
    # equal to the heads); it does not read norm_topk_prob (the kept weights are never renormalised)
    "head_dim", "num_key_value_heads", "norm_topk_prob", "qk_head_dim",   # qk_head_dim: nope + rope, derived
    "aux_loss_alpha", "seq_aux", "ep_size",                         # training and expert-parallel knobs
})


# ---------------------------------------------------------------- DeepSeek-V3 / Kimi-K2 (V2's layers, V3's router)

FIELD_TYPES.update({"num_mtp_layers": Int(0, LAYERS), "num_nextn_predict_layers": Int(0, LAYERS),
                    "rope_interleave": FLAG})


def _deepseek_v3(cfg: dict) -> dict:
    """V2's layer split and rotary schedule; V3 always routes by sigmoid scores with the selection bias and
    groups ranked by their best two (transformers reads neither `topk_method` nor `scoring_func`: the table
    holds them to the only values that say so)."""
    layers, dense = cfg["num_hidden_layers"], cfg["first_k_dense_replace"]
    if not 1 <= dense < layers:
        raise HFImportError(f"`first_k_dense_replace: {dense}` with {layers} layers: the deepseek-v3 spec has at "
                            "least one dense layer and one mixture-of-experts layer (two `repeat`s, neither empty)")
    groups, kept, experts = cfg["n_group"], cfg["topk_group"], cfg["n_routed_experts"]
    if groups is None or kept is None:
        raise HFImportError("`n_group` and `topk_group` must be set: DeepseekV3's router always ranks groups")
    if experts % groups or experts // groups < 2:
        raise HFImportError(f"`n_group: {groups}` with {experts} experts: DeepseekV3 ranks groups of equal size by "
                            "their best two experts (at least two per group)")
    if cfg.get("rope_interleave") is False:
        raise HFImportError("`rope_interleave: false` (rotary on halves, not on interleaved pairs): the "
                            "deepseek-v3 spec's latent attention rotates interleaved pairs only")
    return {"q_rank": cfg.get("q_lora_rank") or 0, "groups": groups, "top_groups": kept,
            **_latent_rope(cfg, "DeepSeek-V3")}


DEEPSEEK_V3_FIELDS = {
    **{k: v for k, v in DEEPSEEK_V2_FIELDS.items() if k not in ("mlp_bias", "scoring_func")},
    "norm_topk_prob": P("normalize"),
    "scoring_func": Fixed(_is("sigmoid", None), "DeepseekV3 scores experts by a sigmoid whatever this says"),
    "topk_method": Fixed(_is("noaux_tc", None), "DeepseekV3 routes by biased sigmoid scores in ranked groups "
                                                "(noaux_tc) whatever this says"),
}
DEEPSEEK_V3_READ = frozenset({
    "q_lora_rank", "n_group", "topk_group", "rope_theta", "rope_scaling", "rope_parameters", "rope_interleave",
    "head_dim", "num_key_value_heads", "qk_head_dim",   # as DeepSeek-V2 (above)
    # the multi-token-prediction layers: not part of transformers' model (nor of its parameter count)
    "num_mtp_layers", "num_nextn_predict_layers",
    "aux_loss_alpha", "seq_aux", "ep_size",                         # training and expert-parallel knobs
})

# ---------------------------------------------------------------- Gemma-2, GPT-NeoX, BLOOM: fields of their own

FIELD_TYPES.update({
    **dict.fromkeys(["attn_logit_softcapping", "final_logit_softcapping"], Num(0.0, 1e6, lo_open=True)),
    "query_pre_attn_scalar": Num(0.0, 1e9, lo_open=True, null=False),
    **dict.fromkeys(["use_bidirectional_attention", "use_parallel_residual",
                     "apply_residual_connection_post_layernorm"], FLAG),
})


# ---------------------------------------------------------------- ModernBERT (alternating global/local layers)

FIELD_TYPES.update({
    "norm_eps": EPS, "local_attention": Int(1, POSITIONS), "global_attn_every_n_layers": Int(1, LAYERS),
    **dict.fromkeys(["global_rope_theta", "local_rope_theta"], THETA),
    **dict.fromkeys(["norm_bias", "decoder_bias", "classifier_bias"], FLAG),
    **dict.fromkeys(["hidden_activation", "classifier_activation"], TEXT),
    **dict.fromkeys(["embedding_dropout", "mlp_dropout"], RATE),
})


def _modernbert_every(cfg: dict) -> int:
    """The spec's `global_every` k: layer i is global where i % k == 0. transformers takes `layer_types`
    when given, else builds it from global_attn_every_n_layers (default 3); any other pattern is refused."""
    every = cfg["global_attn_every_n_layers"] or 3
    types = cfg.get("layer_types")
    if types is None:
        return every
    layers = cfg["num_hidden_layers"]

    def pattern(k):
        return ["full_attention" if i % k == 0 else "sliding_attention" for i in range(layers)]
    for k in [every] + list(range(1, layers + 1)):
        if list(types) == pattern(k):
            return k
    raise HFImportError(f"`layer_types` {show(types)}: the modernbert spec attends globally at every k-th layer "
                        f"from layer 0 (full_attention where i % k == 0) and locally elsewhere")


def _modernbert_theta(cfg: dict, kind: str, old: str) -> float:
    """One layer type's rotary base: transformers 5's rope_parameters[kind], or the hub's `global_rope_theta`
    / `local_rope_theta`; only the default (unscaled) rotary."""
    rp = cfg.get("rope_parameters") or {}
    sub = rp.get(kind) if isinstance(rp.get(kind), dict) else {}
    kind_of = sub.get("rope_type") or sub.get("type") or (cfg.get("rope_scaling") or {}).get("rope_type") or "default"
    if kind_of != "default":
        raise HFImportError(f"`rope_parameters.{kind}` rope_type {show(kind_of)}: the modernbert spec has plain "
                            f"rotary (default)")
    theta = sub.get("rope_theta", cfg[old])
    if not THETA.ok(theta):
        raise HFImportError(f"config field `rope_parameters.{kind}.rope_theta` is {show(theta)}; expected {THETA}")
    return float(theta)


def _modernbert(cfg: dict) -> dict:
    return {"global_every": _modernbert_every(cfg),
            "global_rope_theta": _modernbert_theta(cfg, "full_attention", "global_rope_theta"),
            "local_rope_theta": _modernbert_theta(cfg, "sliding_attention", "local_rope_theta")}


MODERNBERT = Family("modernbert", "modernbert.yaml", {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "num_attention_heads": P("heads"), "intermediate_size": P("d_ff"), "max_position_embeddings": P("max_len"),
    "local_attention": P("local_attention"), "norm_eps": P("eps"), "hidden_activation": P("act", act),
    "classifier_activation": P("head_act", act), "norm_bias": P("norm_bias"), "attention_bias": P("attn_bias"),
    "mlp_bias": P("mlp_bias"), "classifier_bias": P("head_bias"), "decoder_bias": P("decoder_bias"),
    "tie_word_embeddings": P("tie_embeddings"),
}, frozenset({
    "layer_types", "global_attn_every_n_layers", "rope_parameters", "rope_scaling", "global_rope_theta",
    "local_rope_theta",                                          # read by _modernbert
    "embedding_dropout", "mlp_dropout", "initializer_cutoff_factor", "cls_token_id",
    # the sequence-classification head's pooling; sparse prediction only drops rows when labels are given;
    # flash attention's determinism; torch.compile and unpadding switches of the hub configs (4.x)
    "classifier_pooling", "sparse_prediction", "sparse_pred_ignore_index", "deterministic_flash_attn",
    "reference_compile", "repad_logits_with_grad", "gradient_checkpointing",
    # hub configs carry BERT's field, which ModernBERT never reads (it has no position table)
    "position_embedding_type",
}), _with_head(_modernbert, "ModernBertModel"), "ModernBertForMaskedLM")


# ---------------------------------------------------------------- GPT-OSS (sinks, YaRN, clamped SwiGLU experts)

FIELD_TYPES.update({"swiglu_alpha": Num(0.0, 1e6, lo_open=True, null=False),
                    "swiglu_limit": Num(0.0, 1e12, lo_open=True, null=False)})


def _gpt_oss(cfg: dict) -> dict:
    """GPT-OSS: the alternating layers transformers defaults to, the window, and the rotary schedule
    (YaRN with or without `truncate`, or none)."""
    layers = cfg["num_hidden_layers"]
    default = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    if cfg.get("layer_types") not in (None, default):
        raise HFImportError(f"`layer_types` {cfg['layer_types']}: the gpt-oss spec alternates sliding "
                            "(even layers) and full attention (odd layers), transformers' default")
    w = cfg.get("sliding_window")
    # no window = attend to everything: a window as long as the positions the model has is the same
    out = {"sliding_window": cfg["max_position_embeddings"] if w is None else w}
    if cfg.get("num_key_value_heads") is None:
        out["kv_heads"] = cfg["num_attention_heads"]
    rp = _rope_params(cfg)
    out["rope_theta"] = float(rp["rope_theta"])
    if rp["rope_type"] == "default":
        out["rope_factor"] = 1.0   # YaRN at factor 1 is the plain schedule, its attention factor 1
    elif rp["rope_type"] == "yarn":
        if rp.get("attention_factor") is not None or rp.get("factor") is None:
            raise HFImportError(f"`{_rope_field(cfg)}`: the gpt-oss spec's yarn has a `factor` and the attention "
                                "factor derived from it and the mscales (no explicit `attention_factor`)")
        out.update(_yarn(cfg, rp), rope_truncate=rp.get("truncate", True) is not False)
    else:
        raise HFImportError(f"`{_rope_field(cfg)}` rope_type `{rp['rope_type']}`: not supported (supported: "
                            "default or yarn)")
    return out


GPT_OSS_FIELDS = {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "num_attention_heads": P("heads"), "num_key_value_heads": P("kv_heads"), "head_dim": P("head_dim"),
    "intermediate_size": P("d_ff"), "num_local_experts": P("experts"), "num_experts_per_tok": P("top_k"),
    "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"), "swiglu_alpha": P("swiglu_alpha"),
    "swiglu_limit": P("swiglu_limit"), "attention_bias": P("attn_bias"), "tie_word_embeddings": P("tie_embeddings"),
}
GPT_OSS_READ = frozenset({
    "rope_theta", "rope_scaling", "rope_parameters", "sliding_window", "layer_types",
    # the experts' clamped SwiGLU is written out in transformers, whatever hidden_act says; the hub configs
    # repeat num_experts_per_tok and the original context under these names
    "hidden_act", "experts_per_token", "initial_context_length",
})


# ---------------------------------------------------------------- Qwen3, Qwen3-MoE (one spec: experts 0 = dense)

FIELD_TYPES.update({"max_window_layers": Int(0, LAYERS, null=True), "decoder_sparse_step": Int(1, LAYERS),
                    "mlp_only_layers": ListOf(Int(-LAYERS, LAYERS), LAYERS)})
# Qwen3-MoE's `num_experts` (its attribute_map's name for num_local_experts) may be 0: every layer dense
FAMILY_TYPES["qwen3_moe"] = {"num_experts": Int(0, LAYERS), "num_local_experts": Int(0, LAYERS)}


def _qwen3_window(cfg: dict, sliding: list[bool]) -> dict:
    """The spec's (sliding_window, window_from) for the layers transformers windows: the windowed ones must be
    the last ones (from window_from on), which max_window_layers and Qwen3-MoE's all-or-none give."""
    layers = cfg["num_hidden_layers"]
    start = sliding.index(True) if any(sliding) else layers
    if sliding != [i >= start for i in range(layers)]:
        raise HFImportError(f"`layer_types` {show(cfg.get('layer_types'))}: the qwen3 spec windows the layers from "
                            "one index on (max_window_layers), not this pattern")
    if start == layers:
        return {"sliding_window": 0, "window_from": 0}
    return {"sliding_window": cfg["sliding_window"], "window_from": start}


def _qwen3_common(cfg: dict) -> dict:
    """Rotary (plain, or YaRN: Qwen3's long-context setting), the head width, the key/value heads."""
    rp = _rope_params(cfg)
    out = {"rope_theta": float(rp["rope_theta"])}
    if rp["rope_type"] == "default":
        out["rope_scaling"] = "none"
    elif rp["rope_type"] == "yarn":
        if rp.get("attention_factor") is not None or rp.get("factor") is None:
            raise HFImportError(f"`{_rope_field(cfg)}`: the qwen3 spec's yarn has a `factor` and the attention "
                                "factor derived from it and the mscales (no explicit `attention_factor`)")
        out.update(_yarn(cfg, rp), rope_scaling="yarn", rope_truncate=rp.get("truncate", True) is not False)
    else:
        raise HFImportError(f"`{_rope_field(cfg)}` rope_type `{rp['rope_type']}`: not supported (supported: "
                            "default or yarn)")
    out["head_dim"] = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if cfg.get("num_key_value_heads") is None:
        out["kv_heads"] = cfg["num_attention_heads"]
    return out


def _qwen3(cfg: dict) -> dict:
    """Qwen3 (dense): transformers' layer_types, given or made from max_window_layers (layers from it on are
    windowed where use_sliding_window is set)."""
    w = cfg.get("sliding_window", 4096) if cfg.get("use_sliding_window") else None
    types = cfg.get("layer_types") or ["sliding_attention" if w is not None and i >= (cfg.get("max_window_layers")
                                                                                       or 0)
                                       else "full_attention" for i in range(cfg["num_hidden_layers"])]
    unknown = set(types) - {"sliding_attention", "full_attention"}
    if unknown or len(types) != cfg["num_hidden_layers"]:
        raise HFImportError(f"`layer_types` {show(types)}: one of sliding_attention / full_attention per layer")
    sliding = [t == "sliding_attention" for t in types]
    if any(sliding) and w is None:
        raise HFImportError(f"`layer_types` {show(types)} names sliding layers, but there is no window "
                            "(use_sliding_window false or sliding_window null): transformers can't build it either")
    return {**_qwen3_common(cfg), **_qwen3_window({**cfg, "sliding_window": w}, sliding), "experts": 0}


def _dense_layers(value, name):
    """mlp_only_layers: the spec's list param can't be empty, and [-1] names no layer (as in transformers)."""
    return list(value) or [-1]


def _qwen3_moe(cfg: dict) -> dict:
    """Qwen3-MoE: the window on every layer or none; experts every decoder_sparse_step-th layer."""
    w = cfg.get("sliding_window", 4096) if cfg.get("use_sliding_window") else None
    sliding = [w is not None] * cfg["num_hidden_layers"]
    return {**_qwen3_common(cfg), **_qwen3_window({**cfg, "sliding_window": w}, sliding)}


QWEN3_FIELDS = {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "num_attention_heads": P("heads"), "num_key_value_heads": P("kv_heads"), "intermediate_size": P("d_ff"),
    "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"), "hidden_act": P("act", act),
    "attention_bias": P("attn_bias"), "tie_word_embeddings": P("tie_embeddings"),
}
QWEN3_MOE_FIELDS = {**QWEN3_FIELDS, "num_local_experts": P("experts"), "num_experts_per_tok": P("top_k"),
                    "moe_intermediate_size": P("moe_d_ff"), "norm_topk_prob": P("normalize"),
                    "decoder_sparse_step": P("sparse_step"), "mlp_only_layers": P("mlp_only_layers", _dense_layers)}
QWEN3_READ = ROPE_READ | {"use_sliding_window", "sliding_window"}
QWEN3 = Family("qwen3", "qwen3.yaml", QWEN3_FIELDS, QWEN3_READ | {"max_window_layers", "layer_types"}, _qwen3,
               "Qwen3ForCausalLM")
# the hub's Qwen3-MoE configs carry Qwen3's max_window_layers, which transformers' Qwen3-MoE never reads
QWEN3_MOE = Family("qwen3_moe", "qwen3.yaml", QWEN3_MOE_FIELDS, QWEN3_READ | {"max_window_layers"},
                   _qwen3_moe, "Qwen3MoeForCausalLM")


# ---------------------------------------------------------------- Phi-3 (fused qkv and gate/up, split by the map)

FIELD_TYPES.update({"original_max_position_embeddings": Int(1, POSITIONS)})


def _phi3(cfg: dict) -> dict:
    """Phi-3: plain rotary (longrope refused), partial rotary, the window on every layer or none."""
    _head_dim_ok(cfg)
    rp = _rope_params(cfg)
    if rp["rope_type"] != "default":
        raise HFImportError(f"`{_rope_field(cfg)}` rope_type `{rp['rope_type']}`: the phi3 spec has plain rotary "
                            "(longrope's per-dimension short/long factors, switched by the sequence length, are "
                            "not something the rotary op can say)")
    heads = cfg["num_attention_heads"]
    rope_dims = int(rp.get("partial_rotary_factor", 1.0) * (cfg["hidden_size"] // heads))
    if rope_dims % 2:
        raise HFImportError(f"`partial_rotary_factor: {rp['partial_rotary_factor']}` gives {rope_dims} rotary dims; "
                            "rotary needs an even count")
    out = {"rope_theta": float(rp["rope_theta"]), "rope_dims": rope_dims, "window": cfg.get("sliding_window") or 0}
    if cfg.get("num_key_value_heads") is None:
        out["kv_heads"] = heads
    return out


PHI3 = Family("phi3", "phi3.yaml", {
    "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
    "num_attention_heads": P("heads"), "num_key_value_heads": P("kv_heads"), "intermediate_size": P("d_ff"),
    "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"), "hidden_act": P("act", act),
    "tie_word_embeddings": P("tie_embeddings"),
}, frozenset({"rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor", "head_dim", "sliding_window",
              # read by longrope only (refused above); hub configs carry attention_bias, which transformers'
              # Phi-3 never reads (no biases)
              "original_max_position_embeddings", "attention_bias"}), _phi3, "Phi3ForCausalLM")


# ---------------------------------------------------------------- Granite, StarCoder2, Cohere, SmolLM3, StableLM

FIELD_TYPES.update({
    **dict.fromkeys(["embedding_multiplier", "residual_multiplier", "logit_scale"], Num(-1e6, 1e6, null=False)),
    # divisors and the attention logits' scale: zero or below means nothing
    **dict.fromkeys(["attention_multiplier", "logits_scaling"], Num(0.0, 1e6, lo_open=True, null=False)),
    "norm_epsilon": EPS, "no_rope_layers": ListOf(Int(0, 1), LAYERS), "no_rope_layer_interval": Int(1, LAYERS),
    **dict.fromkeys(["use_qk_norm", "use_qkv_bias"], FLAG),
})


def _starcoder2(cfg: dict) -> dict:
    out = _llama_derive(False)(cfg)
    out["window"] = cfg.get("sliding_window") or 0   # null: no window
    return out


def _cohere(cfg: dict) -> dict:
    """Command-R: Llama's rotary and heads; use_qk_norm (Command-R+) is a LayerNorm per head, a scale per head."""
    return {**_llama_derive(False)(cfg), "qk_norm": "layer_heads" if cfg.get("use_qk_norm") else "none"}


def _smollm3(cfg: dict) -> dict:
    """SmolLM3: the layers whose `no_rope_layers` entry is 0 attend without rotary; no sliding window."""
    out = _llama_derive(False)(cfg)
    flags, layers = cfg["no_rope_layers"], cfg["num_hidden_layers"]
    if len(flags) != layers:
        raise HFImportError(f"`no_rope_layers` has {len(flags)} entries for {layers} layers: one per layer")
    if cfg.get("use_sliding_window") and cfg.get("sliding_window") is not None and \
            "sliding_attention" in (cfg.get("layer_types") or []):
        raise HFImportError("`use_sliding_window: true` with sliding layers: the smollm3 spec has full attention in "
                            "every layer")
    out["nope_layers"] = [i for i, f in enumerate(flags) if not f] or [-1]   # [-1]: none (a list can't be empty)
    return out


def _stablelm(cfg: dict) -> dict:
    """StableLM: plain rotary on the first partial_rotary_factor of each head."""
    _head_dim_ok(cfg)
    rp = _rope_params(cfg)
    if rp["rope_type"] != "default":
        raise HFImportError(f"`{_rope_field(cfg)}` rope_type `{rp['rope_type']}`: the stablelm spec has plain rotary")
    factor = rp.get("partial_rotary_factor", cfg["partial_rotary_factor"])
    rope_dims = int(cfg["hidden_size"] // cfg["num_attention_heads"] * factor)
    if rope_dims < 2 or rope_dims % 2:
        raise HFImportError(f"`partial_rotary_factor: {factor}` gives {rope_dims} rotary dims per head; rotary "
                            "needs an even count of at least 2")
    return {"rope_theta": float(rp["rope_theta"]), "rope_dims": rope_dims}


DECODER_SIZES = {k: LLAMA_FIELDS[k] for k in (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "max_position_embeddings", "hidden_act", "tie_word_embeddings")}
GRANITE = Family("granite", "granite.yaml", {
    **LLAMA_FIELDS,   # the μP constants: each a param of the same name
    **{k: P(k) for k in ("embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling")},
}, ROPE_READ, _llama_derive(False), "GraniteForCausalLM")
STARCODER2 = Family("starcoder2", "starcoder2.yaml", {
    **DECODER_SIZES, "norm_epsilon": P("eps"), "use_bias": P("bias"),
}, ROPE_READ | {"sliding_window", "residual_dropout", "embedding_dropout"}, _starcoder2, "Starcoder2ForCausalLM")
COHERE = Family("cohere", "cohere.yaml", {
    **DECODER_SIZES, "layer_norm_eps": P("eps"), "attention_bias": P("attn_bias"), "logit_scale": P("logit_scale"),
}, ROPE_READ | {"use_qk_norm"}, _cohere, "CohereForCausalLM")
SMOLLM3 = Family("smollm3", "smollm3.yaml", dict(LLAMA_FIELDS),
                 ROPE_READ | {"no_rope_layers", "no_rope_layer_interval", "use_sliding_window", "sliding_window",
                              "layer_types"}, _smollm3, "SmolLM3ForCausalLM")
STABLELM = Family("stablelm", "stablelm.yaml", {
    **DECODER_SIZES, "layer_norm_eps": P("eps"), "use_qkv_bias": P("qkv_bias"),
    "use_parallel_residual": P("layer", _parallel_layer),
    "qk_layernorm": Fixed(_is(False, None), "the stablelm spec has no norms on queries and keys (StableLM-2-12B's "
                                            "per-head LayerNorms, a weight per head, are not an option of the "
                                            "attention op)"),
}, ROPE_READ | {"partial_rotary_factor", "hidden_dropout"}, _stablelm, "StableLmForCausalLM")


# ---------------------------------------------------------------- ConvNeXt, VideoMAE, SegFormer (vision)

FIELD_TYPES.update({
    "hidden_sizes": ListOf(Int(1, WIDTH), 64, null=False), "layer_scale_init_value": Num(-1e6, 1e6, null=False),
    **dict.fromkeys(["num_stages", "num_encoder_blocks"], Int(1, 64)),
    **dict.fromkeys(["qv_bias", "use_mean_pooling", "reshape_last_stage"], FLAG),
    **dict.fromkeys(["sr_ratios", "patch_sizes", "strides"], ListOf(Int(1, SIDE), 64, null=False)),
    "mlp_ratios": ListOf(Int(1, 1024), 64, null=False), "decoder_hidden_size": Int(1, WIDTH),
    "classifier_dropout_prob": RATE,
    "architectures": ListOf(TEXT, 64),   # read by the families whose head it switches (a number would not iterate)
})
FAMILY_TYPES.update(segformer={"num_attention_heads": ListOf(Int(1, HEADS), 64, null=False)},   # one per stage
                    videomae={"tubelet_size": Int(1, SIDE)})                                     # vivit's: a list


def _stages(cfg: dict, spec: str, count: int, lists: dict[str, str]) -> dict:
    """Per-stage list fields → one param per stage (`hidden_sizes` → hidden1..4), each list `count` long."""
    out = {}
    for name, param in lists.items():
        values = cfg[name]
        if len(values) != count:
            raise HFImportError(f"`{name}: {show(values)}`: the {spec} spec has {count} stages, one entry each")
        out.update({f"{param}{i + 1}": v for i, v in enumerate(values)})
    return out


def _convnext(cfg: dict) -> dict:
    stages = cfg["num_stages"]
    if stages != 4:
        raise HFImportError(f"`num_stages: {stages}`: not supported: the convnext spec has four stages")
    if cfg["layer_scale_init_value"] <= 0:   # the reference then has no layer scale parameters at all
        raise HFImportError(f"`layer_scale_init_value: {cfg['layer_scale_init_value']}`: not supported: the "
                            "convnext spec scales every block's output (the reference does only above 0)")
    return {**_stages(cfg, "convnext", 4, {"hidden_sizes": "hidden", "depths": "depth"}),
            "head": _names(cfg, "ConvNextForImageClassification"), "classes": _labels(cfg)}


CONVNEXT = Family("convnext", "convnext.yaml", {
    "num_channels": P("channels"), "patch_size": P("patch", _square_in("convnext")), "hidden_act": P("act", act),
    "layer_norm_eps": P("eps"), "layer_scale_init_value": P("layerscale"),
}, frozenset({"num_stages", "hidden_sizes", "depths",   # read by _convnext
              # any image size works (H, W are symbols); training and backbone fields; the classifier's labels
              "image_size", "drop_path_rate", "num_labels", "out_features", "out_indices", "stage_names",
              "_out_features", "_out_indices"}), _convnext, "ConvNextModel")


def _videomae(cfg: dict) -> dict:
    # VideoMAEConfig reads the hub's `qkv_bias` as qv_bias (over it where both are given); the reference's
    # final layer norm exists where use_mean_pooling is off (a false or null one)
    bias = cfg["qkv_bias"] if "qkv_bias" in cfg else cfg["qv_bias"]
    mean = bool(cfg["use_mean_pooling"])   # the classifier's input too: the tokens' mean (then fc_norm), else the first
    return {"qv_bias": bool(bias), "final_norm": not mean, "pooling": "mean" if mean else "cls",
            "head": _names(cfg, "VideoMAEForVideoClassification"), "classes": _labels(cfg)}


VIDEOMAE = Family("videomae", "videomae.yaml", {
    "image_size": P("image", _square_in("videomae")), "patch_size": P("patch", _square_in("videomae")),
    "num_channels": P("channels"), "num_frames": P("frames"), "tubelet_size": P("tubelet"),
    "hidden_size": P("d_model"), "num_attention_heads": P("heads"), "num_hidden_layers": P("layers"),
    "intermediate_size": P("d_ff"), "layer_norm_eps": P("eps"), "hidden_act": P("act", act), **ENCODER_DROPOUT,
}, frozenset({"qv_bias", "qkv_bias", "use_mean_pooling",   # read by _videomae
              # VideoMAEForPreTraining's decoder and loss, the classifier's labels: not part of the encoder
              "decoder_num_attention_heads", "decoder_hidden_size", "decoder_num_hidden_layers",
              "decoder_intermediate_size", "norm_pix_loss", "num_labels"}), _videomae, "VideoMAEModel")


def _segformer(cfg: dict) -> dict:
    """The per-stage lists, one param per stage. The spec's last stage attends without reduction and its
    first three call one layer block: all reduced (sr above 1) or, where every sr is 1, all plain."""
    if cfg["num_encoder_blocks"] != 4:
        raise HFImportError(f"`num_encoder_blocks: {cfg['num_encoder_blocks']}`: not supported: the segformer "
                            "spec has four stages")
    out = _stages(cfg, "segformer", 4, {"hidden_sizes": "hidden", "depths": "depth", "num_attention_heads": "heads",
                                        "sr_ratios": "sr", "patch_sizes": "patch", "strides": "stride",
                                        "mlp_ratios": "mlp_ratio"})
    ratios = [out.pop(f"mlp_ratio{i}") for i in range(1, 5)]
    if len(set(ratios)) > 1:
        raise HFImportError(f"`mlp_ratios: {show(ratios)}`: not supported: the segformer spec's Mix-FFNs are one "
                            "multiple wide in every stage")
    sr = cfg["sr_ratios"]
    if sr[3] != 1 or len({r > 1 for r in sr[:3]}) > 1:
        raise HFImportError(f"`sr_ratios: {show(sr)}`: not supported: the segformer spec's last stage attends "
                            "without reduction (1) and its first three all with (above 1) or all without")
    del out["sr4"]
    labels = _labels(cfg)
    head = _names(cfg, "SegformerForSemanticSegmentation")
    return {**out, "mlp_ratio": ratios[0], "reduced": "reduced_layer" if sr[0] > 1 else "full_layer",
            "labels": int(labels), "head": head}


SEGFORMER = Family("segformer", "segformer.yaml", {
    "num_channels": P("channels"), "hidden_act": P("act", act), "decoder_hidden_size": P("decoder"),
    "classifier_dropout_prob": P("head_dropout"),
    "reshape_last_stage": Fixed(_is(True, None), "the segformer spec's last stage is a [B, C, h, w] grid"),
}, frozenset({"num_encoder_blocks", "hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "patch_sizes",
              "strides", "mlp_ratios", "num_labels",   # read by _segformer
              # never read by transformers' model (its norms are nn.LayerNorm's default 1e-5); any image size
              # works (the spec's `image` is the input's side, --set image=N); older configs' extras
              "layer_norm_eps", "image_size", "downsampling_rates",
              "drop_path_rate", "semantic_loss_ignore_index"}), _segformer, "SegformerForSemanticSegmentation")


FAMILIES: dict[str, Family] = {f.model_type: f for f in [
    Family("t5", "t5-base.yaml", {
        "vocab_size": P("vocab"), "d_model": P("d_model"), "d_kv": P("d_kv"), "d_ff": P("d_ff"),
        "num_layers": P("layers"), "num_decoder_layers": P("decoder_layers"),
        "relative_attention_num_buckets": P("buckets"), "relative_attention_max_distance": P("max_distance"),
        "layer_norm_epsilon": P("eps"), "dropout_rate": P("dropout"),
    }, frozenset({"num_heads", "feed_forward_proj", "tie_word_embeddings", "scale_decoder_outputs",
                  "dense_act_fn", "is_gated_act",     # derived by transformers from feed_forward_proj
                  "n_positions", "output_past"}),      # old hub configs: unused by the model
           _t5, "T5ForConditionalGeneration"),
    Family("llama", "llama.yaml", dict(LLAMA_FIELDS), ROPE_READ, _with_head(_llama_derive(True), "LlamaModel"),
           "LlamaForCausalLM"),
    Family("mistral", "mistral-7b.yaml",
           {k: v for k, v in LLAMA_FIELDS.items() if k not in ("attention_bias", "mlp_bias")},
           ROPE_READ | {"sliding_window"}, _mistral_window, "MistralForCausalLM"),
    Family("mixtral", "mixtral-8x7b.yaml",
           {**{k: v for k, v in LLAMA_FIELDS.items() if k not in ("attention_bias", "mlp_bias")},
            "num_local_experts": P("experts"), "num_experts_per_tok": P("top_k")},
           ROPE_READ | {"sliding_window"}, _no_window, "MixtralForCausalLM"),
    Family("deepseek_v2", "deepseek-v2.yaml", DEEPSEEK_V2_FIELDS, DEEPSEEK_V2_READ, _deepseek_v2,
           "DeepseekV2ForCausalLM"),
    Family("deepseek_v3", "deepseek-v3.yaml", DEEPSEEK_V3_FIELDS, DEEPSEEK_V3_READ, _deepseek_v3,
           "DeepseekV3ForCausalLM"),
    Family("gpt_oss", "gpt-oss.yaml", GPT_OSS_FIELDS, GPT_OSS_READ, _gpt_oss, "GptOssForCausalLM"),
    JAMBA,
    Family("qwen2", "qwen2.yaml",
           {k: v for k, v in LLAMA_FIELDS.items() if k not in ("attention_bias", "mlp_bias")},
           ROPE_READ | {"use_sliding_window", "sliding_window", "max_window_layers", "layer_types"}, _qwen2,
           "Qwen2ForCausalLM"),
    QWEN3,
    QWEN3_MOE,
    PHI3,
    GRANITE,
    STARCODER2,
    COHERE,
    SMOLLM3,
    STABLELM,
    Family("gemma2", "gemma2.yaml", {
        "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
        "num_attention_heads": P("heads"), "num_key_value_heads": P("kv_heads"), "head_dim": P("head_dim"),
        "intermediate_size": P("d_ff"), "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"),
        "hidden_activation": P("act", act), "query_pre_attn_scalar": P("query_pre_attn_scalar"),
        "attn_logit_softcapping": P("attn_softcap"), "final_logit_softcapping": P("final_softcap"),
        "attention_bias": P("attn_bias"), "tie_word_embeddings": P("tie_embeddings"),
        "use_bidirectional_attention": Fixed(_is(False, None), "the gemma2 spec's attention is causal"),
    }, frozenset({"rope_theta", "rope_scaling", "rope_parameters", "sliding_window", "layer_types",
                  # older configs repeat the activation under Gemma-1's name; Gemma-2 reads hidden_activation
                  "hidden_act", "cache_implementation"}), _with_head(_gemma2, "Gemma2Model"), "Gemma2ForCausalLM"),
    Family("gemma3_text", "gemma3.yaml", {
        "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
        "num_attention_heads": P("heads"), "num_key_value_heads": P("kv_heads"), "head_dim": P("head_dim"),
        "intermediate_size": P("d_ff"), "max_position_embeddings": P("max_len"), "rms_norm_eps": P("eps"),
        "hidden_activation": P("act", act), "query_pre_attn_scalar": P("query_pre_attn_scalar"),
        "final_logit_softcapping": P("final_softcap"), "attention_bias": P("attn_bias"),
        "tie_word_embeddings": P("tie_embeddings"),
        "use_bidirectional_attention": Fixed(_is(False, None), "the gemma3 spec's attention is causal"),
    }, frozenset({"rope_theta", "rope_local_base_freq", "rope_scaling", "rope_parameters", "sliding_window",
                  "layer_types", "sliding_window_pattern",   # read by _gemma3
                  # what transformers saves of the pattern; it reads `sliding_window_pattern` (and layer_types)
                  "_sliding_window_pattern",
                  # transformers' Gemma3 reads it nowhere (no attention soft-cap): it changes nothing
                  "attn_logit_softcapping",
                  "hidden_act", "cache_implementation"}), _with_head(_gemma3, "Gemma3TextModel"), "Gemma3ForCausalLM"),
    Family("olmo2", "olmo2.yaml",
           {k: v for k, v in LLAMA_FIELDS.items() if k != "mlp_bias"}, ROPE_READ, _with_head(_olmo2, "Olmo2Model"),
           "Olmo2ForCausalLM"),
    Family("phi", "phi-2.yaml", {
        "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
        "num_attention_heads": P("heads"), "intermediate_size": P("d_ff"), "max_position_embeddings": P("max_len"),
        "layer_norm_eps": P("eps"), "hidden_act": P("act", act),
        "qk_layernorm": Fixed(_is(False, None), "the phi spec has no norms on queries and keys"),
        "tie_word_embeddings": Fixed(_is(False, None), "the phi spec's LM head is untied (it has a bias)"),
    }, frozenset({"rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor",
                  "num_key_value_heads"}), _phi, "PhiForCausalLM"),
    Family("gpt_neox", "gpt-neox.yaml", {
        "vocab_size": P("vocab"), "hidden_size": P("d_model"), "num_hidden_layers": P("layers"),
        "num_attention_heads": P("heads"), "intermediate_size": P("d_ff"), "max_position_embeddings": P("max_len"),
        "layer_norm_eps": P("eps"), "hidden_act": P("act", act), "attention_bias": P("attn_bias"),
        "use_parallel_residual": P("layer", _parallel_layer),
        "tie_word_embeddings": Fixed(_is(False, None), "the gpt-neox spec's LM head (embed_out) is untied"),
    }, frozenset({"rope_theta", "rope_scaling", "rope_parameters", "rotary_pct", "rotary_emb_base",
                  "partial_rotary_factor", "hidden_dropout"}), _neox, "GPTNeoXForCausalLM"),
    Family("gptj", "gpt-j.yaml", {
        "vocab_size": P("vocab"), "n_positions": P("max_len"), "n_embd": P("d_model"), "n_head": P("heads"),
        "n_layer": P("layers"), "n_inner": P("d_ff"), "layer_norm_epsilon": P("eps"),
        "activation_function": P("act", act),
        "tie_word_embeddings": Fixed(_is(False, None), "the gpt-j spec's LM head is untied (it has a bias)"),
    }, frozenset({"rotary_dim"}), _gptj, "GPTJForCausalLM"),
    Family("bloom", "bloom.yaml", {
        "vocab_size": P("vocab"), "layer_norm_epsilon": P("eps"),
        "apply_residual_connection_post_layernorm": Fixed(_is(False, None), "the bloom spec adds each sub-layer "
                                                          "to its input, not to the LayerNorm's output"),
        "tie_word_embeddings": Fixed(_is(True, None), "the bloom spec ties the LM head to the token table"),
    }, BLOOM_IGNORED, _bloom, "BloomForCausalLM"),
    Family("gpt2", "gpt2.yaml", {
        "vocab_size": P("vocab"), "n_positions": P("max_len"), "n_embd": P("d_model"), "n_head": P("heads"),
        "n_layer": P("layers"), "layer_norm_epsilon": P("eps"), "activation_function": P("act", act),
        "n_inner": P("d_ff"), **GPT2_DROPOUT,
        "tie_word_embeddings": Fixed(_is(True, None), "the gpt2 spec ties the LM head to the token table"),
        **GPT2_FIXED,
    }, frozenset({"n_ctx", "summary_type", "summary_use_proj", "summary_activation",
                  "summary_proj_to_labels", "summary_first_dropout"}), None, "GPT2LMHeadModel"),
    MODERNBERT,
    DEBERTA_V2,
    Family("bert", "bert-base.yaml", {
        "vocab_size": P("vocab"), "max_position_embeddings": P("max_len"), "type_vocab_size": P("type_vocab"),
        "hidden_size": P("d_model"), "num_attention_heads": P("heads"), "intermediate_size": P("d_ff"),
        "num_hidden_layers": P("layers"), "layer_norm_eps": P("eps"), "hidden_act": P("act", act),
        **ENCODER_DROPOUT,
        "position_embedding_type": Fixed(_is("absolute", None), "the bert spec has learned absolute positions"),
        "is_decoder": Fixed(_is(False, None), "the bert spec is a bidirectional encoder"),
        "add_cross_attention": Fixed(_is(False, None), "the bert spec has no cross-attention"),
    }, frozenset({"tie_word_embeddings", "gradient_checkpointing"}), None, "BertModel"),
    Family("albert", "albert.yaml", {
        "vocab_size": P("vocab"), "max_position_embeddings": P("max_len"), "type_vocab_size": P("type_vocab"),
        "embedding_size": P("embed"), "hidden_size": P("d_model"), "num_attention_heads": P("heads"),
        "intermediate_size": P("d_ff"), "num_hidden_layers": P("layers"), "num_hidden_groups": P("groups"),
        "layer_norm_eps": P("eps"), "hidden_act": P("act", act), **ENCODER_DROPOUT,
        "inner_group_num": Fixed(_is(1, None), "the albert spec has one layer per group"),
        "position_embedding_type": Fixed(_is("absolute", None), "the albert spec has learned absolute positions"),
    }, frozenset({"classifier_dropout_prob", "tie_word_embeddings", "gradient_checkpointing"}), None, "AlbertModel"),
    Family("vit", "vit-b16.yaml", {
        "image_size": P("image"), "patch_size": P("patch"), "num_channels": P("channels"),
        "hidden_size": P("d_model"), "num_attention_heads": P("heads"), "intermediate_size": P("d_ff"),
        "num_hidden_layers": P("layers"), "layer_norm_eps": P("eps"), "hidden_act": P("act", act),
        "qkv_bias": P("qkv_bias"), "pooler_act": P("pooler_act", act), **ENCODER_DROPOUT,
    }, frozenset({"num_labels", "encoder_stride", "pooler_output_size"}), _vit_heads,
        "ViTForImageClassification"),
    Family("swin", "swin-t.yaml", {
        "image_size": P("image", _square), "patch_size": P("patch", _square), "num_channels": P("channels"),
        "embed_dim": P("embed"), "window_size": P("window"), "layer_norm_eps": P("eps"),
        "hidden_act": P("act", act), "qkv_bias": P("qkv_bias"),
        "use_absolute_embeddings": Fixed(_is(False, None), "the swin-t spec has no absolute position embeddings"),
    }, frozenset({"depths", "num_heads", "mlp_ratio", "num_labels", "drop_path_rate", "encoder_stride",
                  "hidden_size", "num_layers", "stage_names", "out_features", "out_indices"}), _swin,
        "SwinForImageClassification"),
    _dinov2_family("dinov2", "Dinov2Model", {
        "use_mask_token": Fixed(_is(True, None), "the dinov2 spec always has the mask token (as every "
                                                 "published checkpoint)")}),
    _dinov2_family("dinov2_with_registers", "Dinov2WithRegistersModel", {"num_register_tokens": P("registers")}),
    TIMESFORMER,
    VIVIT,
    MAMBA,
    MAMBA2,
    RWKV,
    Family("llava", "llava.yaml", {
        "image_token_index": P("image_token"), "image_token_id": P("image_token"),
        "projector_hidden_act": P("projector_act", act), "multimodal_projector_bias": P("projector_bias"),
        "tie_word_embeddings": P("tie_embeddings"),
        "vision_feature_layer": Fixed(_is(-2, None), "the llava spec reads the second-to-last vision hidden state"),
        "vision_feature_select_strategy": Fixed(_is("default", None), "the llava spec drops the [CLS] "
                                                                      "feature (strategy `default`)"),
    }, frozenset({"text_config", "vision_config", "image_seq_length"}), _llava, "LlavaForConditionalGeneration"),
    Family("paligemma", "paligemma.yaml", {
        "image_token_index": P("image_token"), "image_token_id": P("image_token"),
        "tie_word_embeddings": P("tie_embeddings"),
    }, frozenset({"text_config", "vision_config", "projection_dim", "hidden_size", "vocab_size"}), _paligemma,
        "PaliGemmaForConditionalGeneration"),
    Family("siglip", "siglip.yaml", {}, frozenset({"text_config", "vision_config", "initializer_factor"}), _siglip,
           "SiglipModel"),
    Family("gemma3", "gemma3-vision.yaml", {
        "image_token_index": P("image_token"), "tie_word_embeddings": P("tie_embeddings"),
    }, frozenset({"text_config", "vision_config", "mm_tokens_per_image",   # read by _gemma3_vision
                  "boi_token_index", "eoi_token_index"}),   # the processor's: around each image's tokens
        _gemma3_vision, "Gemma3ForConditionalGeneration"),
    Family("clip", "clip-vit-b32.yaml", {"projection_dim": P("embed")},
           frozenset({"text_config", "vision_config", "logit_scale_init_value"}), _clip, "CLIPModel"),
    Family("audio-spectrogram-transformer", "ast.yaml", {
        "max_length": P("frames"), "num_mel_bins": P("mels"), "patch_size": P("patch"),
        "frequency_stride": P("freq_stride"), "time_stride": P("time_stride"), "hidden_size": P("d_model"),
        "num_attention_heads": P("heads"), "intermediate_size": P("d_ff"), "num_hidden_layers": P("layers"),
        "layer_norm_eps": P("eps"), "hidden_act": P("act", act), "qkv_bias": P("qkv_bias"), **ENCODER_DROPOUT,
    }, frozenset({"num_labels"}), _ast, "ASTModel"),
    Family("decision_transformer", "decision-transformer.yaml", {
        "state_dim": P("state_dim"), "act_dim": P("act_dim"), "hidden_size": P("d_model"),
        "max_ep_len": P("max_ep_len"), "vocab_size": P("vocab"), "n_positions": P("n_positions"),
        "n_head": P("heads"), "n_layer": P("layers"),
        "activation_function": P("act", act), "layer_norm_epsilon": P("eps"), "n_inner": P("d_ff"),
        **GPT2_DROPOUT,
        "action_tanh": Fixed(_is(True, None), "the decision-transformer spec squashes actions with tanh"),
        **GPT2_FIXED,
    }, frozenset(), None, "DecisionTransformerModel"),
    Family("whisper", "whisper-base.yaml", {
        "vocab_size": P("vocab"), "num_mel_bins": P("mels"), "d_model": P("d_model"),
        "encoder_layers": P("encoder_layers"), "decoder_layers": P("decoder_layers"),
        "encoder_attention_heads": P("encoder_heads"), "decoder_attention_heads": P("decoder_heads"),
        "encoder_ffn_dim": P("encoder_ffn"), "decoder_ffn_dim": P("decoder_ffn"),
        "max_source_positions": P("audio_len"), "max_target_positions": P("text_len"),
        "activation_function": P("act", act),
        "tie_word_embeddings": Fixed(_is(True, None), "the whisper spec's LM head is the token table"),
    }, frozenset({
        # training only: dropout, layer drop, SpecAugment masking
        "dropout", "activation_dropout", "encoder_layerdrop", "decoder_layerdrop", "apply_spec_augment",
        "mask_time_prob", "mask_time_length", "mask_time_min_masks", "mask_feature_prob", "mask_feature_length",
        "mask_feature_min_masks",
        # decoding and timestamps (generation_config), the classification head's width
        "suppress_tokens", "begin_suppress_tokens", "forced_decoder_ids", "median_filter_width",
        "classifier_proj_size", "use_weighted_layer_sum", "init_std",
        # transformers computes embed_scale from it but never multiplies by it (5.x)
        "scale_embedding",
        # hub configs repeat encoder_layers / encoder_attention_heads under these names
        "num_hidden_layers", "num_attention_heads",
    }), None, "WhisperForConditionalGeneration"),
    WAV2VEC2,
    CONVNEXT,
    VIDEOMAE,
    SEGFORMER,
]}

# families the issue names whose specs don't exist yet
NOT_YET: tuple[str, ...] = ()


# ---------------------------------------------------------------- transformers' defaults for absent fields

@dataclass(frozen=True)
class Derived:
    """A default transformers computes from other fields (its config class's __post_init__), in place of an
    absent field and of an explicit null."""
    of: Callable[[dict], Any]


KV_HEADS = Derived(lambda c: c["num_attention_heads"])                       # no grouping: as many as heads
HEAD_DIM = Derived(lambda c: c["hidden_size"] // c["num_attention_heads"])
POOLER_WIDTH = Derived(lambda c: c["hidden_size"])                            # ViT: `x if x else hidden_size`

# Per transformers config class (by model_type): the class's default for every field a table or derive
# function reads, used where config.json leaves the field out (save_pretrained writes only the values that
# differ from these; hand-written and old hub configs omit more). Copied from transformers 5's config
# classes, not imported: this file reads configs as data. tests/integration/test_import_hf.py compares each
# entry with `AutoConfig.for_model(model_type)`. `rope_theta` stands for the class's `default_theta` (also
# the theta of a `rope_parameters` without one); gpt_neox's `rotary_pct` / `rotary_emb_base` and modernbert's
# `global_attn_every_n_layers`, `global_rope_theta` / `local_rope_theta` are the defaults their __init__
# gives those hub spellings. A field read but not listed has no default (REQUIRED) or is no field of the
# class (its Fixed rule accepts absence); DeBERTa-v2's model-level `getattr` defaults stay in _deberta_v2.
DEFAULTS: dict[str, dict[str, Any]] = {
    "t5": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
           "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-06,
           "dropout_rate": 0.1, "feed_forward_proj": "relu", "num_heads": 8,
           "num_decoder_layers": Derived(lambda c: c["num_layers"])},
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "intermediate_size": 11008, "max_position_embeddings": 2048, "rms_norm_eps": 1e-06, "hidden_act": "silu",
              "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "pad_token_id": None,
              "rope_theta": 10000.0, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 14336, "max_position_embeddings": 131072,
                "rms_norm_eps": 1e-06, "hidden_act": "silu", "tie_word_embeddings": False, "sliding_window": 4096,
                "pad_token_id": None, "rope_theta": 10000.0, "head_dim": HEAD_DIM},
    "mixtral": {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "intermediate_size": 14336, "max_position_embeddings": 131072,
                "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False, "num_local_experts": 8,
                "num_experts_per_tok": 2, "sliding_window": None, "pad_token_id": None, "rope_theta": 1000000.0},
    "deepseek_v2": {"vocab_size": 102400, "hidden_size": 4096, "num_hidden_layers": 32, "first_k_dense_replace": 0,
                    "num_attention_heads": 32, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                    "v_head_dim": 128, "intermediate_size": 11008, "moe_intermediate_size": 1407,
                    "n_routed_experts": 64, "n_shared_experts": 2, "routed_scaling_factor": 1.0,
                    "max_position_embeddings": 2048, "rms_norm_eps": 1e-06, "hidden_act": "silu",
                    "attention_bias": False, "tie_word_embeddings": False, "mlp_bias": False, "q_lora_rank": 1536,
                    "topk_method": "greedy", "n_group": None, "topk_group": None, "pad_token_id": None,
                    "rope_theta": 10000.0},
    "deepseek_v3": {"vocab_size": 129280, "hidden_size": 7168, "num_hidden_layers": 61, "first_k_dense_replace": 3,
                    "num_attention_heads": 128, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
                    "v_head_dim": 128, "intermediate_size": 18432, "moe_intermediate_size": 2048,
                    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
                    "routed_scaling_factor": 2.5, "norm_topk_prob": True, "max_position_embeddings": 4096,
                    "rms_norm_eps": 1e-06, "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
                    "q_lora_rank": 1536, "n_group": 8, "topk_group": 4, "rope_interleave": True,
                    "pad_token_id": None, "rope_theta": 10000.0},
    "gpt_oss": {"vocab_size": 201088, "hidden_size": 2880, "num_hidden_layers": 36, "num_attention_heads": 64,
                "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2880, "num_local_experts": 128,
                "num_experts_per_tok": 4, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
                "swiglu_alpha": 1.702, "swiglu_limit": 7.0, "attention_bias": True, "tie_word_embeddings": False,
                "sliding_window": 128, "pad_token_id": None, "rope_theta": 150000.0,
                "rope_parameters": Derived(lambda c: {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                                                      "beta_slow": 1.0, "truncate": False,
                                                      "original_max_position_embeddings": 4096})},
    "qwen2": {"vocab_size": 151936, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "intermediate_size": 22016, "max_position_embeddings": 32768,
              "rms_norm_eps": 1e-06, "hidden_act": "silu", "tie_word_embeddings": False, "use_sliding_window": False,
              "pad_token_id": None, "rope_theta": 10000.0},
    "qwen3": {"vocab_size": 151936, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 32, "head_dim": 128, "intermediate_size": 22016, "max_position_embeddings": 32768,
              "rms_norm_eps": 1e-06, "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
              "use_sliding_window": False, "max_window_layers": 28, "pad_token_id": None, "rope_theta": 10000.0},
    "qwen3_moe": {"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
                  "num_key_value_heads": 4, "intermediate_size": 6144, "max_position_embeddings": 32768,
                  "rms_norm_eps": 1e-06, "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
                  "use_sliding_window": False, "num_local_experts": 128, "num_experts_per_tok": 8,
                  "moe_intermediate_size": 768, "norm_topk_prob": False, "decoder_sparse_step": 1,
                  "mlp_only_layers": [], "pad_token_id": None, "rope_theta": 10000.0},
    "phi3": {"vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
             "num_attention_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "hidden_act": "silu",
             "tie_word_embeddings": False, "pad_token_id": 32000, "rope_theta": 10000.0,
             "num_key_value_heads": KV_HEADS},
    "granite": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-06, "hidden_act": "silu",
                "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "pad_token_id": None,
                "rope_theta": 10000.0, "embedding_multiplier": 1.0, "logits_scaling": 1.0, "residual_multiplier": 1.0,
                "attention_multiplier": 1.0, "num_key_value_heads": KV_HEADS},
    "starcoder2": {"vocab_size": 49152, "hidden_size": 3072, "intermediate_size": 12288, "num_hidden_layers": 30,
                   "num_attention_heads": 24, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                   "norm_epsilon": 1e-05, "hidden_act": "gelu_pytorch_tanh", "use_bias": True,
                   "tie_word_embeddings": True, "sliding_window": None, "pad_token_id": None, "rope_theta": 10000.0},
    "cohere": {"vocab_size": 256000, "hidden_size": 8192, "intermediate_size": 22528, "num_hidden_layers": 40,
               "num_attention_heads": 64, "max_position_embeddings": 8192, "layer_norm_eps": 1e-05, "hidden_act": "silu",
               "logit_scale": 0.0625, "tie_word_embeddings": True, "attention_bias": False, "use_qk_norm": False,
               "pad_token_id": 0, "rope_theta": 500000.0, "num_key_value_heads": KV_HEADS},
    # no_rope_layers: SmolLM3Config's 0 at every no_rope_layer_interval-th layer (from 1)
    "smollm3": {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                "num_attention_heads": 16, "num_key_value_heads": 4, "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-06, "hidden_act": "silu", "tie_word_embeddings": True, "attention_bias": False,
                "mlp_bias": False, "pad_token_id": 128004, "rope_theta": 2000000.0, "use_sliding_window": False,
                "sliding_window": None, "no_rope_layer_interval": 4,
                "no_rope_layers": Derived(lambda c: [int((i + 1) % c["no_rope_layer_interval"] != 0)
                                                     for i in range(c["num_hidden_layers"])])},
    "stablelm": {"vocab_size": 50304, "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
                 "layer_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": False, "use_qkv_bias": False,
                 "qk_layernorm": False, "use_parallel_residual": False, "pad_token_id": None, "rope_theta": 10000.0,
                 "partial_rotary_factor": 0.25},
    "gemma2": {"vocab_size": 256000, "hidden_size": 2304, "num_hidden_layers": 26, "num_attention_heads": 8,
               "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 9216, "max_position_embeddings": 8192,
               "rms_norm_eps": 1e-06, "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 256,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "attention_bias": False,
               "tie_word_embeddings": True, "use_bidirectional_attention": None, "sliding_window": 4096,
               "pad_token_id": 0, "rope_theta": 10000.0},
    # global_rope_theta / local_rope_theta: Gemma3TextConfig's default_theta (global, local), read by _gemma3
    "gemma3_text": {"vocab_size": 262208, "hidden_size": 2304, "num_hidden_layers": 26, "num_attention_heads": 8,
                    "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 9216,
                    "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "hidden_activation": "gelu_pytorch_tanh",
                    "query_pre_attn_scalar": 256, "final_logit_softcapping": None, "attention_bias": False,
                    "tie_word_embeddings": True, "use_bidirectional_attention": False, "sliding_window": 4096,
                    "pad_token_id": 0, "global_rope_theta": 1000000.0, "local_rope_theta": 10000.0},
    "olmo2": {"vocab_size": 50304, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "intermediate_size": 11008, "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "hidden_act": "silu",
              "attention_bias": False, "tie_word_embeddings": False, "pad_token_id": 1, "rope_theta": 10000.0,
              "num_key_value_heads": KV_HEADS},
    "phi": {"vocab_size": 51200, "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
            "intermediate_size": 8192, "max_position_embeddings": 2048, "layer_norm_eps": 1e-05, "hidden_act": "gelu_new",
            "qk_layernorm": False, "tie_word_embeddings": False, "partial_rotary_factor": 0.5, "rope_theta": 10000.0,
            "pad_token_id": None},
    "gpt_neox": {"vocab_size": 50432, "hidden_size": 6144, "num_hidden_layers": 44, "num_attention_heads": 64,
                 "intermediate_size": 24576, "max_position_embeddings": 2048, "layer_norm_eps": 1e-05,
                 "hidden_act": "gelu", "attention_bias": True, "use_parallel_residual": True,
                 "tie_word_embeddings": False, "rotary_pct": 0.25, "rotary_emb_base": 10000.0},
    "gptj": {"vocab_size": 50400, "n_positions": 2048, "n_embd": 4096, "n_head": 16, "n_layer": 28, "n_inner": None,
             "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new", "tie_word_embeddings": False,
             "rotary_dim": 64},
    "bloom": {"vocab_size": 250880, "layer_norm_epsilon": 1e-05, "apply_residual_connection_post_layernorm": False,
              "tie_word_embeddings": True, "hidden_size": 64, "n_head": 8, "n_layer": 2},
    "gpt2": {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12,
             "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new", "n_inner": None, "attn_pdrop": 0.1,
             "resid_pdrop": 0.1, "embd_pdrop": 0.1, "tie_word_embeddings": True,
             "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "add_cross_attention": False,
             "reorder_and_upcast_attn": False},
    "modernbert": {"vocab_size": 50368, "hidden_size": 768, "num_hidden_layers": 22, "num_attention_heads": 12,
                   "intermediate_size": 1152, "max_position_embeddings": 8192, "local_attention": 128,
                   "norm_eps": 1e-05, "hidden_activation": "gelu", "classifier_activation": "gelu",
                   "norm_bias": False, "attention_bias": False, "mlp_bias": False, "classifier_bias": False,
                   "decoder_bias": True, "tie_word_embeddings": True, "pad_token_id": 50283,
                   "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0, "local_rope_theta": 10000.0},
    "deberta-v2": {"vocab_size": 128100, "hidden_size": 1536, "num_attention_heads": 24, "intermediate_size": 6144,
                   "num_hidden_layers": 24, "layer_norm_eps": 1e-07, "hidden_act": "gelu",
                   "max_position_embeddings": 512, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                   "relative_attention": False, "max_relative_positions": -1, "position_biased_input": True,
                   "pos_att_type": None, "type_vocab_size": 0, "pad_token_id": 0},
    "bert": {"vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2, "hidden_size": 768,
             "num_attention_heads": 12, "intermediate_size": 3072, "num_hidden_layers": 12, "layer_norm_eps": 1e-12,
             "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
             "is_decoder": False, "add_cross_attention": False, "pad_token_id": 0},
    "albert": {"vocab_size": 30000, "max_position_embeddings": 512, "type_vocab_size": 2, "embedding_size": 128,
               "hidden_size": 4096, "num_attention_heads": 64, "intermediate_size": 16384, "num_hidden_layers": 12,
               "num_hidden_groups": 1, "layer_norm_eps": 1e-12, "hidden_act": "gelu_new", "hidden_dropout_prob": 0.0,
               "attention_probs_dropout_prob": 0.0, "inner_group_num": 1, "pad_token_id": 0},
    "vit": {"image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_size": 768, "num_attention_heads": 12,
            "intermediate_size": 3072, "num_hidden_layers": 12, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
            "qkv_bias": True, "pooler_act": "tanh", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "pooler_output_size": POOLER_WIDTH},
    "swin": {"image_size": 224, "patch_size": 4, "num_channels": 3, "embed_dim": 96, "window_size": 7,
             "layer_norm_eps": 1e-05, "hidden_act": "gelu", "qkv_bias": True, "use_absolute_embeddings": False,
             "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "mlp_ratio": 4.0},
    "dinov2": {"image_size": 224, "patch_size": 14, "num_channels": 3, "hidden_size": 768, "num_attention_heads": 12,
               "num_hidden_layers": 12, "layer_norm_eps": 1e-06, "hidden_act": "gelu", "qkv_bias": True,
               "layerscale_value": 1.0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
               "use_mask_token": True, "use_swiglu_ffn": False, "mlp_ratio": 4},
    "dinov2_with_registers": {"image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_size": 768,
                              "num_attention_heads": 12, "num_hidden_layers": 12, "layer_norm_eps": 1e-06,
                              "hidden_act": "gelu", "qkv_bias": True, "layerscale_value": 1.0,
                              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                              "num_register_tokens": 4, "use_swiglu_ffn": False, "mlp_ratio": 4},
    "timesformer": {"image_size": 224, "patch_size": 16, "num_channels": 3, "num_frames": 8, "hidden_size": 768,
                    "num_attention_heads": 12, "num_hidden_layers": 12, "intermediate_size": 3072,
                    "layer_norm_eps": 1e-06, "hidden_act": "gelu", "qkv_bias": True, "hidden_dropout_prob": 0.0,
                    "attention_probs_dropout_prob": 0.0, "attention_type": "divided_space_time"},
    "vivit": {"image_size": 224, "num_channels": 3, "num_frames": 32, "hidden_size": 768, "num_attention_heads": 12,
              "num_hidden_layers": 12, "intermediate_size": 3072, "layer_norm_eps": 1e-06, "hidden_act": "gelu_fast",
              "qkv_bias": True, "pooler_act": "tanh", "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0, "tubelet_size": [2, 16, 16], "pooler_output_size": POOLER_WIDTH},
    "mamba": {"vocab_size": 50280, "hidden_size": 768, "num_hidden_layers": 32, "state_size": 16, "conv_kernel": 4,
              "layer_norm_epsilon": 1e-05, "hidden_act": "silu", "use_bias": False, "use_conv_bias": True,
              "tie_word_embeddings": True, "expand": 2,
              "time_step_rank": Derived(lambda c: -(-c["hidden_size"] // 16))},   # "auto"
    "jamba": {"vocab_size": 65536, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 262144,
              "rms_norm_eps": 1e-06, "hidden_act": "silu", "tie_word_embeddings": False, "num_experts": 16,
              "num_experts_per_tok": 2, "attn_layer_period": 8, "attn_layer_offset": 4, "expert_layer_period": 2,
              "expert_layer_offset": 1, "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2,
              "mamba_conv_bias": True, "mamba_proj_bias": False, "pad_token_id": 0,
              "mamba_dt_rank": Derived(lambda c: -(-c["hidden_size"] // 16))},   # "auto"
    "mamba2": {"vocab_size": 32768, "hidden_size": 4096, "num_hidden_layers": 64, "state_size": 128,
               "num_heads": 128, "head_dim": 64, "n_groups": 8, "expand": 2, "conv_kernel": 4,
               "layer_norm_epsilon": 1e-05, "hidden_act": "silu", "use_bias": False, "use_conv_bias": True,
               "tie_word_embeddings": False, "time_step_limit": [0.0, math.inf]},
    "rwkv": {"vocab_size": 50277, "hidden_size": 4096, "num_hidden_layers": 32,
             "attention_hidden_size": Derived(lambda c: c["hidden_size"]),
             "intermediate_size": Derived(lambda c: 4 * c["hidden_size"]), "layer_norm_epsilon": 1e-05,
             "rescale_every": 6, "tie_word_embeddings": False, "context_length": 1024},
    "llava": {"image_token_index": 32000, "projector_hidden_act": "gelu", "multimodal_projector_bias": True,
              "tie_word_embeddings": False, "vision_feature_layer": -2, "vision_feature_select_strategy": "default"},
    "paligemma": {"image_token_index": 256000, "tie_word_embeddings": True, "projection_dim": 2048},
    "gemma3": {"image_token_index": 262144, "tie_word_embeddings": True, "mm_tokens_per_image": 256,
               "boi_token_index": 255999, "eoi_token_index": 256000},
    "clip": {"projection_dim": 512},
    "siglip": {},
    "audio-spectrogram-transformer": {
        "max_length": 1024, "num_mel_bins": 128, "patch_size": 16, "frequency_stride": 10, "time_stride": 10,
        "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072, "num_hidden_layers": 12,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "qkv_bias": True, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0},
    "decision_transformer": {
        "state_dim": 17, "act_dim": 4, "hidden_size": 128, "max_ep_len": 4096, "vocab_size": 1, "n_positions": 1024,
        "n_head": 1, "n_layer": 3, "activation_function": "relu", "layer_norm_epsilon": 1e-05, "n_inner": None,
        "attn_pdrop": 0.1, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "action_tanh": True,
        "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True, "add_cross_attention": False,
        "reorder_and_upcast_attn": False},
    "whisper": {"vocab_size": 51865, "num_mel_bins": 80, "d_model": 384, "encoder_layers": 4, "decoder_layers": 4,
                "encoder_attention_heads": 6, "decoder_attention_heads": 6, "encoder_ffn_dim": 1536,
                "decoder_ffn_dim": 1536, "max_source_positions": 1500, "max_target_positions": 448,
                "activation_function": "gelu", "tie_word_embeddings": True, "pad_token_id": 50256},
    "wav2vec2": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                 "layer_norm_eps": 1e-05, "hidden_act": "gelu", "feat_extract_activation": "gelu", "conv_bias": False,
                 "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "feat_extract_norm": "group",
                 "do_stable_layer_norm": False, "add_adapter": False, "apply_spec_augment": True,
                 "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
                 "mask_time_prob": 0.05, "mask_feature_prob": 0.0},
    "convnext": {"num_channels": 3, "patch_size": 4, "num_stages": 4, "hidden_sizes": [96, 192, 384, 768],
                 "depths": [3, 3, 9, 3], "hidden_act": "gelu", "layer_norm_eps": 1e-12, "layer_scale_init_value": 1e-06},
    "videomae": {"image_size": 224, "patch_size": 16, "num_channels": 3, "num_frames": 16, "tubelet_size": 2,
                 "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                 "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                 "layer_norm_eps": 1e-12, "qv_bias": True, "use_mean_pooling": True},
    "segformer": {"num_channels": 3, "num_encoder_blocks": 4, "depths": [2, 2, 2, 2], "sr_ratios": [8, 4, 2, 1],
                  "hidden_sizes": [32, 64, 160, 256], "patch_sizes": [7, 3, 3, 3], "strides": [4, 2, 2, 2],
                  "num_attention_heads": [1, 2, 5, 8], "mlp_ratios": [4, 4, 4, 4], "hidden_act": "gelu",
                  "classifier_dropout_prob": 0.1, "decoder_hidden_size": 256, "reshape_last_stage": True},
    # the sub-configs' own classes (CLIP, LLaVA, PaliGemma, SigLIP)
    "clip_text_model": {"vocab_size": 49408, "max_position_embeddings": 77, "hidden_size": 512,
                        "num_attention_heads": 8, "intermediate_size": 2048, "num_hidden_layers": 12,
                        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "attention_dropout": 0.0,
                        "eos_token_id": 49407},
    "clip_vision_model": {"image_size": 224, "patch_size": 32, "num_channels": 3, "hidden_size": 768,
                          "num_attention_heads": 12, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "attention_dropout": 0.0},
    "gemma": {"vocab_size": 256000, "hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
              "num_key_value_heads": 16, "head_dim": 256, "intermediate_size": 24576, "max_position_embeddings": 8192,
              "rms_norm_eps": 1e-06, "hidden_act": "gelu_pytorch_tanh", "attention_bias": False, "pad_token_id": 0,
              "rope_theta": 10000.0},
    "siglip_vision_model": {"image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_size": 768,
                            "num_attention_heads": 12, "intermediate_size": 3072, "num_hidden_layers": 12,
                            "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06, "attention_dropout": 0.0,
                            "vision_use_head": True},
    "siglip_text_model": {"vocab_size": 32000, "max_position_embeddings": 64, "hidden_size": 768,
                          "num_attention_heads": 12, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06, "attention_dropout": 0.0,
                          "projection_size": Derived(lambda c: c["hidden_size"])},
}

# Fields a table reads that have no usable default in transformers (the model can't be built without them):
# absent, they keep the spec's default with a warning (`Imported.defaulted`).
REQUIRED: dict[str, dict[str, str]] = {
    "deepseek_v2": {"num_experts_per_tok": "DeepseekV2Config's default is null: the router needs a top-k"},
}

# The classes' attribute_map: another name a config.json may use for a field. transformers sets the field
# from it after the field's own value, so the other name wins where both are given.
ALIASES: dict[str, dict[str, str]] = {
    "mixtral": {"num_experts": "num_local_experts"}, "jamba": {"num_local_experts": "num_experts"},
    "gpt_oss": {"num_experts": "num_local_experts"},
    "deepseek_v2": {"num_experts": "n_routed_experts"}, "deepseek_v3": {"num_local_experts": "n_routed_experts"},
    "qwen3_moe": {"num_experts": "num_local_experts"},
    **dict.fromkeys(("gpt2", "gptj"), {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
                                       "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}),
    "decision_transformer": {"max_position_embeddings": "n_positions", "num_attention_heads": "n_head",
                             "num_hidden_layers": "n_layer"},
    "bloom": {"num_hidden_layers": "n_layer", "num_attention_heads": "n_head"},
    "t5": {"hidden_size": "d_model", "num_attention_heads": "num_heads", "num_hidden_layers": "num_layers",
           "head_dim": "d_kv"},
    "swin": {"num_attention_heads": "num_heads"},
    "rwkv": {"max_position_embeddings": "context_length"},
    "whisper": {"hidden_size": "d_model", "num_hidden_layers": "encoder_layers",
                "num_attention_heads": "encoder_attention_heads"},
    "llava": {"image_token_id": "image_token_index"}, "paligemma": {"image_token_id": "image_token_index"},
    "gemma3": {"image_token_id": "image_token_index", "boi_token_id": "boi_token_index",
               "eoi_token_id": "eoi_token_index"},
    "convnext": {"num_hidden_layers": "num_stages"}, "segformer": {"num_hidden_layers": "num_encoder_blocks"},
}

# A composite config's sub-configs: key → (model_type where the sub-config names none, the composite's own
# overrides when the key is absent or null). A sub-config object given gets its class's defaults only.
SUB_CONFIGS: dict[str, dict[str, tuple[str, dict]]] = {
    "clip": {"text_config": ("clip_text_model", {}), "vision_config": ("clip_vision_model", {})},
    "siglip": {"text_config": ("siglip_text_model", {}), "vision_config": ("siglip_vision_model", {})},
    "llava": {"text_config": ("llama", {}),
              "vision_config": ("clip_vision_model", {
                  "intermediate_size": 4096, "hidden_size": 1024, "patch_size": 14, "image_size": 336,
                  "num_hidden_layers": 24, "num_attention_heads": 16})},
    "paligemma": {"text_config": ("gemma", {"hidden_size": 2048, "num_hidden_layers": 18, "intermediate_size": 16384,
                                            "num_attention_heads": 8, "num_key_value_heads": 1, "vocab_size": 257152}),
                  "vision_config": ("siglip_vision_model", {
                      "intermediate_size": 4096, "hidden_size": 1152, "patch_size": 14, "image_size": 224,
                      "num_hidden_layers": 27, "num_attention_heads": 16, "vision_use_head": False})},
    # Gemma3Config fills an absent vision_config with SiglipVisionConfig's defaults (a pooling head included)
    "gemma3": {"text_config": ("gemma3_text", {}), "vision_config": ("siglip_vision_model", {})},
}

DEFAULTED = object()   # the key with_defaults lists the fields it filled under: no JSON key is it


def with_defaults(cfg: dict, kind: str) -> dict:
    """A copy of `cfg` as transformers' config class `kind` reads it: aliases under their field's name, every
    absent field of DEFAULTS[kind] at the class's default (Derived ones also in place of null), sub-configs
    likewise. The names filled are listed under the DEFAULTED key, for messages."""
    out = dict(cfg)
    for alias, name in ALIASES.get(kind, {}).items():
        if alias in out:
            out[name] = out.pop(alias)
    table = DEFAULTS.get(kind, {})
    filled = [n for n, d in table.items() if n not in out and not isinstance(d, Derived)]
    out.update({n: copy.deepcopy(table[n]) for n in filled})
    for name, default in table.items():   # after the literals: they compute from them
        if isinstance(default, Derived) and out.get(name) is None:
            out[name] = default.of(out)
            filled.append(name)
    for key, (sub_kind, absent) in SUB_CONFIGS.get(kind, {}).items():
        sub = out.get(key)
        if sub is None:
            filled.append(key)
            sub = {"model_type": sub_kind, **absent}
        out[key] = with_defaults(sub, sub.get("model_type", sub_kind)) if isinstance(sub, dict) else sub
    out[DEFAULTED] = frozenset(filled)
    return out


def apply_table(table: dict, cfg: dict, prefix: str = "", missing: list | None = None) -> dict:
    """Params from `cfg` by `table`; fields the table reads but `cfg` lacks are appended to `missing`."""
    params = {}
    for name, rule in table.items():
        if name not in cfg:
            if isinstance(rule, P) and missing is not None:
                missing.append((prefix + name, rule.param))
            continue
        value = cfg[name]
        if isinstance(rule, Fixed):
            if not rule.ok(value):
                absent = " (absent: transformers' default)" if name in cfg.get(DEFAULTED, ()) else ""
                raise HFImportError(f"`{prefix}{name}: {show(value)}`{absent}: not supported: {rule.why}")
        elif value is not None:
            params[rule.param] = rule.convert(value, prefix + name) if rule.convert else value
    return params


MISSING = object()   # the key derive functions collect missing sub-config fields under: no JSON key is it


@dataclass
class Imported:
    family: Family
    params: dict[str, Any]
    unread: list[str] = field(default_factory=list)   # config fields no table knows
    # (field, param): absent, and transformers has no default for it (REQUIRED): the spec's default kept
    defaulted: list[tuple[str, str]] = field(default_factory=list)


def read_config(path: str) -> dict:
    """PATH is a config.json or a directory holding one (then config.json must be a file inside it:
    reading.inside). Bounded, regular files only (reading.read_json); HFImportError(2) otherwise."""
    from ..weights.checkpoint import config_path
    from ..base.reading import FileProblem, read_json
    path = os.fspath(path)
    directory = os.path.isdir(path)
    p = os.path.join(path, "config.json") if directory else path
    try:
        if directory and not os.path.lexists(p):
            raise HFImportError(f"no such file `{p}` (a save_pretrained directory holds config.json)", 2)
        cfg = read_json(config_path(path) if directory else path, "config")
    except FileProblem as e:
        raise HFImportError(str(e), 2) from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise HFImportError(f"`{p}` is not a transformers config (it has no `model_type`)", 2)
    return cfg


def family_of(cfg: dict) -> Family:
    kind = cfg.get("model_type")
    if not isinstance(kind, str):
        raise HFImportError(f"config field `model_type` is {show(kind)}; expected a string", 2)
    if kind not in FAMILIES:
        supported = ", ".join(FAMILIES)
        later = f"; not yet: {', '.join(NOT_YET)} (no bundled spec)" if kind in NOT_YET else ""
        raise HFImportError(f"model_type `{kind}` is not supported (supported: {supported}){later}", 2)
    return FAMILIES[kind]


def convert_config(cfg: dict) -> Imported:
    """The family and its params (typed as the bundled spec declares them) for a transformers config."""
    fam = family_of(cfg)
    check_types(cfg)   # before any field is used
    given = cfg
    cfg = with_defaults(cfg, fam.model_type)
    missing: list = []
    params = apply_table(fam.fields, cfg, "", missing)
    if fam.derive:
        try:
            params.update(fam.derive(cfg))
        except KeyError as e:
            raise HFImportError(f"the config has no `{e.args[0]}`, which a {fam.model_type} config needs") from None
    defaults = bundled_params(fam)
    if "pad_token" in defaults:   # the spec's table leaves the pad row untrained, as the reference's does
        params["pad_token"] = _pad_row(cfg.get("pad_token_id"), params.get("vocab", defaults.get("vocab")))
    typed = {}
    for name, value in params.items():
        if name not in defaults:
            raise AssertionError(f"table for {fam.model_type} sets unknown param {name}")  # a bug in this file
        typed[name] = _typed(value, defaults[name], name)
    missing += cfg.pop(MISSING, [])
    known = set(fam.fields) | fam.ignored | IGNORED_EVERYWHERE | set(ALIASES.get(fam.model_type, ()))
    unread = sorted(k for k in given if k not in known)
    return Imported(fam, typed, unread, [(f, p) for f, p in missing if p not in typed])


def _pad_row(pad, vocab) -> int:
    """The table row of `pad_token_id` (nn.Embedding counts a negative one from the end), -1 for none."""
    if pad is None:
        return -1
    if isinstance(pad, bool) or not isinstance(pad, int) or not isinstance(vocab, int) or not -vocab <= pad < vocab:
        raise HFImportError(f"`pad_token_id: {show(pad)}`: not a row of the token table (vocab_size {vocab})")
    return pad % vocab


def _typed(value, default, name):
    if isinstance(default, list):    # a per-layer list: each entry typed as the bundled list's first
        if not isinstance(value, list):
            raise HFImportError(f"param `{name}`: the config gives {value!r}, a list was expected")
        return [_typed(v, default[0] if default else v, name) for v in value]
    if isinstance(default, dict):   # `{expr: 4 * d_model}`: an integer param with a computed default
        default = 0
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise HFImportError(f"param `{name}`: the config gives {value!r}, a boolean was expected")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise HFImportError(f"param `{name}`: the config gives {value!r}, an integer was expected")
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HFImportError(f"param `{name}`: the config gives {value!r}, a number was expected")
        return float(value)
    return str(value)


def spec_path(fam: Family) -> Path:
    p = SPECS_DIR / fam.spec
    if not p.is_file():
        raise HFImportError(f"the bundled spec `{p}` is missing from this installation", 2)
    return p


def bundled_params(fam: Family) -> dict:
    from .yamlload import load_yaml_file
    return dict(load_yaml_file(str(spec_path(fam))).data["params"])


# ---------------------------------------------------------------- writing the spec text

def yaml_scalar(v) -> str:
    """A param value as YAML: true/false, an integer, the repr of a finite float, a plain identifier,
    or else a JSON-quoted string (ASCII, every control and line-break character escaped), so no value
    can start a new line or key of the spec."""
    if isinstance(v, list):                                 # a per-layer list param
        return "[" + ", ".join(yaml_scalar(x) for x in v) + "]"
    if isinstance(v, dict) and set(v) <= {"expr", "doc"}:   # a computed default the config left as it is
        return "{expr: " + yaml_scalar(v["expr"]) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"not a finite number: {v}")   # _typed refuses them first
        text = repr(v)
        mant, e, exp = text.partition("e")
        if "." not in mant:
            mant += ".0"
        if e and exp[0] not in "+-":
            exp = "+" + exp
        return mant + (f"e{exp}" if e else "")   # YAML 1.1 reads 1e-05 as a string: write 1.0e-05
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) and v not in ("true", "false", "null", "yes", "no", "on", "off"):
        return v
    return json.dumps(str(v))


def spec_text(imported: Imported, source: str) -> str:
    """The bundled spec's text with its `params:` section rewritten to the imported values; the rest
    (doc, blocks, weight maps, comments) is kept, so the output is self-contained."""
    fam = imported.family
    from ..base.reading import read_text
    text = read_text(str(spec_path(fam)), "spec")
    lines = text.splitlines(keepends=True)
    if lines[0].startswith("# yaml-language-server:"):   # its relative schema path is specs/'s, not the output's
        lines = lines[1:]
    start = next(i for i, l in enumerate(lines) if l.startswith("params:"))
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    comments = {}
    for l in lines[start + 1:end]:   # block-style params keep their trailing comments
        m = re.match(r"\s+([A-Za-z_]\w*):[^#]*(#.*)$", l.rstrip("\n"))
        if m:
            comments[m.group(1)] = "  " + m.group(2)
    values = {**bundled_params(fam), **imported.params}
    body = "".join(f"  {k}: {yaml_scalar(v)}{comments.get(k, '')}\n" for k, v in values.items())
    source = show(os.fspath(source))   # JSON-quoted: a newline in a directory name stays `\\n`
    header = (f"# imported by `graphformer import hf` from {source} (model_type {fam.model_type}): the params are "
              f"that config's;\n# the doc describes the family's reference size.\n")
    return "".join(lines[:start]) + header + "params:\n" + body + "".join(lines[end:])


def looks_like_hf_config(data) -> str | None:
    """The model_type when a parsed file is a transformers config rather than a spec, else None."""
    if isinstance(data, dict) and isinstance(data.get("model_type"), str) and "graphformer" not in data \
            and ("architectures" in data or "transformers_version" in data or "_name_or_path" in data
                 or data["model_type"] in FAMILIES):
        return data["model_type"]
    return None



# ---------------------------------------------------------------- does a checkpoint fit a spec?

# Integer params that no tensor's shape shows: a checkpoint can't be checked for them by its tensors
SHAPE_FREE_INTS = frozenset({"heads", "text_heads", "vision_heads", "eos_token",
                             "heads1", "heads2", "heads3", "heads4"})   # Swin's and SegFormer's per stage


def config_mismatches(params: dict, cfg: dict) -> list[str]:
    """How a checkpoint's config disagrees with a spec's params, one line per param, on the knobs its
    tensors can't show: every float, boolean and string param (activation, eps, norm and bias switches,
    dropout rates, pooling rule) and the head counts. Sizes are left to the tensors (weightfit.py). A
    config of no importable family gives []: there is nothing to compare it with."""
    try:
        imported = convert_config(dict(cfg))
    except HFImportError as e:
        return [] if e.code == 2 else [f"the config needs what no spec param expresses: {e}"]
    fields = _fields_by_param(imported.family)
    out = []
    for name, theirs in imported.params.items():
        if name not in params or (isinstance(theirs, int) and not isinstance(theirs, bool)
                                  and name not in SHAPE_FREE_INTS):
            continue
        ours = params[name]
        same = math.isclose(ours, theirs, rel_tol=1e-9) if isinstance(theirs, float) and \
            isinstance(ours, (int, float)) and not isinstance(ours, bool) else ours == theirs
        if not same:
            out.append(f"`{name}` is {yaml_scalar(ours)} in the spec, {yaml_scalar(theirs)} in the config "
                       f"({fields.get(name, 'derived from several fields')})")
    return out


def _fields_by_param(fam: Family) -> dict[str, str]:
    """param → the config field that sets it, for the messages."""
    nested = {"clip": [("text_config.", CLIP_TEXT), ("vision_config.", CLIP_VISION)],
              "llava": [("text_config.", LLAVA_TEXT), ("vision_config.", CLIP_VISION)],
              "paligemma": [("text_config.", GEMMA_TEXT), ("vision_config.", SIGLIP_VISION)],
              "siglip": [("text_config.", SIGLIP_TEXT), ("vision_config.", SIGLIP_TOWER)],
              "gemma3": [("text_config.", FAMILIES["gemma3_text"].fields), ("vision_config.", GEMMA3_VISION)]}
    tables = [("", fam.fields)] + nested.get(fam.model_type, [])
    return {rule.param: f"`{prefix}{name}`" for prefix, table in tables for name, rule in table.items()
            if isinstance(rule, P)}
