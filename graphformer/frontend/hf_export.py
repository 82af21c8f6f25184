"""The way back from `import hf`: a bundled family's params → the transformers `config.json` it reads.

`build SPEC -o DIR --save-map hf` writes one beside the weights, so that `from_pretrained(DIR)` builds the model
the weights belong to. The facts are hf.py's: each Family's field table is read backwards where it maps a field
to a param one to one (`P`, through the inverse of its converter), and the fields a family's `derive` function
computes from several params are written by that family's entry in EXPORTS below (one function per family;
nothing a field table already says is repeated there). Fields the spec hard-wires (`Fixed`) are left out: the
config class's default is the value the spec has (hf.py's import holds them to that).

Exactness is not assumed but checked, every time: the written config is imported again (`convert_config`, the
same code `graphformer import hf` runs) and the bundled spec loaded with the params it gives must have every
param the spec has, at the same value. A param that no config field carries (`--set pooler=false` on BERT: no
BertConfig field removes the pooler) is GF314, one the family's fields can't hold at that value (an odd rotary
width as a `partial_rotary_factor`) GF315, a combination the family's import refuses GF316 — exit 1, naming the
param. No torch, no transformers: configs are data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from . import hf
from .hf import (ACTIVATIONS, ALIASES, DEFAULTS, FAMILIES, Family, HFImportError, P, bundled_params,
                 convert_config, spec_path)


class HFExportError(Exception):
    """A spec's params that no config.json of its family says; `code` is GF314–GF316, `param` the param."""

    def __init__(self, code: str, param: str | None, message: str):
        super().__init__(message)
        self.code, self.param = code, param


@dataclass
class Exported:
    family: Family
    config: dict[str, Any]


# ---------------------------------------------------------------- the field tables, read backwards

# the transformers name written for an activation kind where the class's default names another function
CANONICAL_ACT = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "tanh": "tanh",
                 "sigmoid": "sigmoid", "quick_gelu": "quick_gelu"}


def _act_name(kind: str, default: Any) -> str:
    """The config's name for activation `kind`: the class default's own spelling where it is that function
    (GPT-2's `gelu_new`, Gemma's `gelu_pytorch_tanh`), else the canonical one."""
    if isinstance(default, str) and ACTIVATIONS.get(default) == kind:
        return default
    return CANONICAL_ACT.get(kind, kind)


def _unconvert(rule: P, value: Any, field: str, defaults: dict) -> Any:
    """The field's value for the param's: the inverse of the rule's converter."""
    convert = rule.convert
    if convert is None:
        return value
    if convert is hf.act:
        return _act_name(value, defaults.get(field))
    if convert is hf._parallel_layer:
        return value == "parallel_layer"
    if convert is hf._dense_layers:   # the spec's [-1] (a list param can't be empty) is transformers' []
        return [i for i in value if i >= 0]
    if convert.__qualname__.startswith("_square_in"):   # an int or a square pair: the int says it
        return value
    raise AssertionError(f"no inverse for the converter of `{field}` ({convert.__qualname__}): add one here")


def table_fields(table: dict, params: dict, kind: str) -> dict:
    """The fields a table maps one to one, from the params (alias spellings and `Fixed` fields left out)."""
    out, aliases, defaults = {}, ALIASES.get(kind, {}), DEFAULTS.get(kind, {})
    for name, rule in table.items():
        if isinstance(rule, P) and rule.param in params and name not in aliases:
            out[name] = _unconvert(rule, params[rule.param], name, defaults)
    return out


def _labels(n: int) -> dict:
    """id2label / label2id as save_pretrained writes them (what `num_labels` becomes)."""
    return {"id2label": {str(i): f"LABEL_{i}" for i in range(n)},
            "label2id": {f"LABEL_{i}": i for i in range(n)}}


def _pad(p: dict) -> dict:
    return {"pad_token_id": None if p["pad_token"] < 0 else p["pad_token"]} if "pad_token" in p else {}


def _arch(p: dict, head: str, bare: str) -> list[str]:
    """The reference class: the one with the spec's head, or `bare` where the spec's `head` is switched off."""
    return [head if p.get("head", True) else bare]


# ---------------------------------------------------------------- what each family's derive function reads

def _rope(p: dict, **extra) -> dict:
    """rope_parameters (transformers 5's spelling) for the plain schedule or Llama-3's."""
    rp = {"rope_type": "default", "rope_theta": p["rope_theta"], **extra}
    if p.get("rope_scaling", "none") == "llama3":
        rp.update(rope_type="llama3", factor=p["rope_factor"], low_freq_factor=p["rope_low_freq"],
                  high_freq_factor=p["rope_high_freq"], original_max_position_embeddings=p["rope_original_max_len"])
    return {"rope_parameters": rp}


def _yarn(p: dict, **extra) -> dict:
    return {"rope_parameters": {
        "rope_type": "yarn", "rope_theta": p["rope_theta"], "factor": p["rope_factor"],
        "original_max_position_embeddings": p["rope_original_max_len"], "beta_fast": p["rope_beta_fast"],
        "beta_slow": p["rope_beta_slow"], "mscale": p["rope_mscale"], "mscale_all_dim": p["rope_mscale_all_dim"],
        **extra}}


def _decoder(fam: Family, p: dict, bare: str | None = None) -> dict:
    """A decoder LLM's rotary, pad row and class (the bare model where `head` is off and the family has one)."""
    return {**_rope(p), **_pad(p), "architectures": _arch(p, fam.reference, bare or fam.reference)}


def _t5(fam, p):
    if not p["tie_embeddings"]:   # T5Config sets tie_word_embeddings = True; a `false` given means no output scaling
        raise HFExportError("GF315", "tie_embeddings", "param `tie_embeddings` = false: transformers 5's T5 ties its "
                                                       "LM head to the shared token table whatever config.json says")
    act = _act_name(p["act"], "relu")
    gated = p["ffn"] == "gated_ffn"
    proj = "gated-gelu" if gated and p["act"] == "gelu_tanh" else ("gated-" if gated else "") + act
    return {"feed_forward_proj": proj, "num_heads": p["heads"],
            "scale_decoder_outputs": bool(p["scale_decoder_outputs"])}


def _deepseek_v2(fam, p):
    grouped = (p["groups"], p["top_groups"]) != (1, 1)
    routing = ({"topk_method": "group_limited_greedy", "n_group": p["groups"], "topk_group": p["top_groups"]}
               if grouped else {"topk_method": "greedy"})
    rope = _yarn(p) if p["rope_scaling"] == "yarn" else _rope(p)
    return {**routing, **rope, **_pad(p), "q_lora_rank": p["q_rank"] or None, "num_key_value_heads": p["heads"]}


def _deepseek_v3(fam, p):
    rope = _yarn(p) if p["rope_scaling"] == "yarn" else _rope(p)
    return {**rope, **_pad(p), "q_lora_rank": p["q_rank"] or None, "num_key_value_heads": p["heads"],
            "n_group": p["groups"], "topk_group": p["top_groups"]}


def _gpt_oss(fam, p):
    return {**_yarn(p, truncate=p["rope_truncate"]), **_pad(p), "sliding_window": p["sliding_window"]}


def _phi(fam, p):
    return {**_rope(p, partial_rotary_factor=p["rope_dims"] / (p["d_model"] // p["heads"])), **_pad(p)}


def _neox(fam, p):
    return _rope(p, partial_rotary_factor=p["rope_dims"] / (p["d_model"] // p["heads"]))


def _modernbert(fam, p):
    def rope(theta):
        return {"rope_type": "default", "rope_theta": theta}
    return {"global_attn_every_n_layers": p["global_every"], **_pad(p),
            "architectures": _arch(p, fam.reference, "ModernBertModel"),
            "rope_parameters": {"full_attention": rope(p["global_rope_theta"]),
                                "sliding_attention": rope(p["local_rope_theta"])}}


def _deberta_v2(fam, p):
    out = {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "position_buckets": p["position_buckets"],
           "share_att_key": p["share_att_key"], "max_relative_positions": p["max_relative_positions"],
           "norm_rel_ebd": "layer_norm" if p["norm_rel"] else "none", "position_biased_input": p["position_biased"],
           "type_vocab_size": p["type_vocab"], "embedding_size": p["embedding_size"], **_pad(p)}
    if p["conv_kernel"] > 0:
        out.update(conv_kernel_size=p["conv_kernel"], conv_groups=p["conv_groups"],
                   conv_act=_act_name(p["conv_act"], "tanh"))
    return out


def _vit(fam, p):
    return {**_labels(p["classes"]), "architectures": _arch(p, "ViTForImageClassification", "ViTModel")}


def _swin(fam, p):
    return {"depths": [p[f"depth{i}"] for i in range(1, 5)], "num_heads": [p[f"heads{i}"] for i in range(1, 5)],
            "mlp_ratio": float(p["mlp_ratio"]), **_labels(p["classes"]),
            "architectures": _arch(p, "SwinForImageClassification", "SwinModel")}


def _dinov2(fam, p):
    bare = "Dinov2WithRegistersModel" if fam.model_type == "dinov2_with_registers" else "Dinov2Model"
    return {"mlp_ratio": p["d_ff"] // p["d_model"], **_labels(p["classes"]),   # Dinov2Config's is an int
            "architectures": _arch(p, bare.replace("Model", "ForImageClassification"), bare)}


def _video(bare: str):
    def export(fam, p):
        head = bare.replace("Model", "ForVideoClassification")
        out = {**_labels(p["classes"]), "architectures": _arch(p, head, bare)}
        if fam.model_type == "vivit":
            out["tubelet_size"] = [p["tubelet"], p["patch"], p["patch"]]
        return out
    return export


def _mamba(fam, p):
    return {"intermediate_size": p["inner"], "expand": max(1, p["inner"] // p["d_model"]),
            "time_step_rank": p["dt_rank"], "architectures": _arch(p, "MambaForCausalLM", "MambaModel")}


def _mamba2(fam, p):
    expand = p["inner"] // p["d_model"] if p["inner"] % p["d_model"] == 0 else p["inner"] / p["d_model"]
    return {"expand": expand, "head_dim": p["inner"] // p["heads"],
            "architectures": _arch(p, "Mamba2ForCausalLM", "Mamba2Model")}


def _tower(table: dict, p: dict, kind: str) -> dict:
    return {"model_type": kind, **table_fields(table, p, kind)}


def _llava(fam, p):
    text = {**_tower(hf.LLAVA_TEXT, p, "llama"), **_rope(p)}
    return {"text_config": text, "vision_config": _tower(hf.CLIP_VISION, p, "clip_vision_model")}


def _paligemma(fam, p):
    text = {**_tower(hf.GEMMA_TEXT, p, "gemma"), **_rope(p), **_pad(p)}
    vision = _tower(hf.SIGLIP_VISION, p, "siglip_vision_model")
    return {"text_config": text, "vision_config": vision, "projection_dim": p["d_model"]}


def _clip(fam, p):
    text = _tower(hf.CLIP_TEXT, p, "clip_text_model")
    text["eos_token_id"] = 2 if p["text_pool"] == "argmax" else p["eos_token"]
    return {"text_config": text, "vision_config": _tower(hf.CLIP_VISION, p, "clip_vision_model")}


def _siglip(fam, p):
    return {"text_config": _tower(hf.SIGLIP_TEXT, p, "siglip_text_model"),
            "vision_config": _tower(hf.SIGLIP_TOWER, p, "siglip_vision_model")}


def _classifier(head: str, bare: str):
    def export(fam, p):
        return {**_labels(p["classes"]), "architectures": _arch(p, head, bare)}
    return export


def _wav2vec2(fam, p):
    n = p["conv_layers"] + 1
    return {"conv_dim": [p["conv_dim"]] * n, "conv_kernel": [p["kernel0"], *p["conv_kernels"]],
            "conv_stride": [p["stride0"], *p["conv_strides"]], "num_feat_extract_layers": n}


def _convnext(fam, p):
    return {"num_stages": 4, "hidden_sizes": [p[f"hidden{i}"] for i in range(1, 5)],
            "depths": [p[f"depth{i}"] for i in range(1, 5)], **_labels(p["classes"]),
            "architectures": _arch(p, "ConvNextForImageClassification", "ConvNextModel")}


def _videomae(fam, p):
    return {"qv_bias": p["qv_bias"], "use_mean_pooling": p["pooling"] == "mean", **_labels(p["classes"]),
            "architectures": _arch(p, "VideoMAEForVideoClassification", "VideoMAEModel")}


def _segformer(fam, p):
    def stages(name, count=4):
        return [p[f"{name}{i}"] for i in range(1, count + 1)]
    return {"num_encoder_blocks": 4, "hidden_sizes": stages("hidden"), "depths": stages("depth"),
            "num_attention_heads": stages("heads"), "sr_ratios": [*stages("sr", 3), 1],
            "patch_sizes": stages("patch"), "strides": stages("stride"), "mlp_ratios": [p["mlp_ratio"]] * 4,
            **_labels(p["labels"]), "architectures": _arch(p, "SegformerForSemanticSegmentation", "SegformerModel")}


def _gemma3(fam, p):
    every, layers = p["sliding_window_pattern"], p["layers"]
    full = {"rope_type": "default", "rope_theta": p["rope_theta"]}
    if p["rope_scaling"] == "linear":
        full.update(rope_type="linear", factor=p["rope_factor"])
    return {"layer_types": ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(layers)],
            "sliding_window": p["sliding_window"], **_pad(p),
            "final_logit_softcapping": p["final_softcap"] or None,   # 0 would divide the logits by zero
            "rope_parameters": {"full_attention": full,
                                "sliding_attention": {"rope_type": "default", "rope_theta": p["rope_local_theta"]}},
            "architectures": _arch(p, fam.reference, "Gemma3TextModel")}


def _gemma3_vision(fam, p):
    table = {k: v for k, v in hf.FAMILIES["gemma3_text"].fields.items() if k != "tie_word_embeddings"}
    text = {**_tower(table, p, "gemma3_text"), **_gemma3(fam, p)}
    del text["architectures"]
    vision = {**_tower(hf.GEMMA3_VISION, p, "siglip_vision_model"), "vision_use_head": False}   # its class: true
    return {"text_config": text, "vision_config": vision, "mm_tokens_per_image": p["mm_side"] ** 2}


def _qwen3(fam, p):
    rope = _yarn(p, truncate=p["rope_truncate"]) if p["rope_scaling"] == "yarn" else _rope(p)
    window = {"use_sliding_window": p["sliding_window"] > 0, "sliding_window": p["sliding_window"] or None}
    if fam.model_type == "qwen3":   # Qwen3-MoE windows every layer or none
        window["max_window_layers"] = p["window_from"]
    return {**_decoder(fam, p), **rope, **window, "head_dim": p["head_dim"]}


def _phi3(fam, p):
    factor = p["rope_dims"] / (p["d_model"] // p["heads"])
    return {**_decoder(fam, p), **_rope(p, partial_rotary_factor=factor), "sliding_window": p["window"] or None}


def _smollm3(fam, p):
    return {**_decoder(fam, p), "no_rope_layers": [int(i not in p["nope_layers"]) for i in range(p["layers"])]}


def _stablelm(fam, p):
    return {**_decoder(fam, p), **_rope(p, partial_rotary_factor=p["rope_dims"] / (p["d_model"] // p["heads"]))}


def _jamba(fam, p):
    return {"mamba_dt_rank": p["dt_rank"], "use_mamba_kernels": False}   # the kernels need CUDA


def _rwkv(fam, p):
    return {"rescale_every": p["rescale_every"], "architectures": _arch(p, fam.reference, "RwkvModel")}


def _bloom(fam, p):
    return {"hidden_size": p["d_model"], "n_head": p["heads"], "n_layer": p["layers"]}


def _plain(fam, p):
    return _pad(p)


# model_type → the fields its derive function (or the config's class) needs beyond the field table
EXPORTS: dict[str, Callable[[Family, dict], dict]] = {
    "t5": _t5,
    "llama": lambda fam, p: _decoder(fam, p, "LlamaModel"),
    "mistral": lambda fam, p: {**_decoder(fam, p), "sliding_window": p["window"]},
    "mixtral": lambda fam, p: _decoder(fam, p),
    "deepseek_v2": _deepseek_v2,
    "deepseek_v3": _deepseek_v3,
    "gpt_oss": _gpt_oss,
    "qwen2": lambda fam, p: _decoder(fam, p),
    "gemma2": lambda fam, p: {**_decoder(fam, p, "Gemma2Model"), "sliding_window": p["sliding_window"]},
    "olmo2": lambda fam, p: _decoder(fam, p, "Olmo2Model"),
    "gemma3_text": _gemma3,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3,
    "phi3": _phi3,
    "granite": lambda fam, p: _decoder(fam, p),
    "starcoder2": lambda fam, p: {**_decoder(fam, p), "sliding_window": p["window"] or None},
    "cohere": lambda fam, p: {**_decoder(fam, p), "use_qk_norm": p["qk_norm"] == "layer_heads"},
    "smollm3": _smollm3,
    "stablelm": _stablelm,
    "jamba": _jamba,
    "rwkv": _rwkv,
    "phi": _phi,
    "gpt_neox": _neox,
    "gptj": lambda fam, p: {"rotary_dim": p["rope_dims"]},
    "bloom": _bloom,
    "gpt2": _plain,
    "modernbert": _modernbert,
    "deberta-v2": _deberta_v2,
    "bert": _plain,
    "albert": _plain,
    "vit": _vit,
    "swin": _swin,
    "dinov2": _dinov2,
    "dinov2_with_registers": _dinov2,
    "timesformer": _video("TimesformerModel"),
    "vivit": _video("VivitModel"),
    "mamba": _mamba,
    "mamba2": _mamba2,
    "llava": _llava,
    "paligemma": _paligemma,
    "gemma3": _gemma3_vision,
    "clip": _clip,
    "siglip": _siglip,
    "audio-spectrogram-transformer": _classifier("ASTForAudioClassification", "ASTModel"),
    "decision_transformer": _plain,
    "whisper": _plain,
    "wav2vec2": _wav2vec2,
    "convnext": _convnext,
    "videomae": _videomae,
    "segformer": _segformer,
}


# Params that size only the input, which no config field carries: from_pretrained builds the same weights and
# function whatever they are (SegFormer's grids follow the image), so they are not compared.
INPUT_SIZES: dict[str, frozenset] = {"segformer": frozenset({"image"})}


# ---------------------------------------------------------------- the config, checked by importing it again

def families_of(name: str) -> list[Family]:
    """The families whose bundled spec is called `name` (DINOv2's two: with and without registers)."""
    return [f for f in FAMILIES.values() if _bundled_name(f) == name]


_NAMES: dict[str, str | None] = {}


def _bundled_name(fam: Family) -> str | None:
    if fam.spec not in _NAMES:
        from .yamlload import load_yaml_file
        try:
            _NAMES[fam.spec] = load_yaml_file(str(spec_path(fam))).data.get("name")
        except (HFImportError, OSError, ValueError):
            _NAMES[fam.spec] = None
    return _NAMES[fam.spec]


def config_for(fam: Family, params: dict) -> dict:
    """The config.json of `fam` that says `params` (unchecked: `export_config` checks it)."""
    if fam.model_type not in EXPORTS:
        raise AssertionError(f"add {fam.model_type}'s config fields to EXPORTS in graphformer/frontend/hf_export.py")
    cfg = {"model_type": fam.model_type, "architectures": [fam.reference],
           **table_fields(fam.fields, params, fam.model_type)}
    cfg.update(EXPORTS[fam.model_type](fam, params))
    return cfg


def export_config(name: str, params: dict, origin: dict | None = None) -> Exported | None:
    """The config.json that says spec `name` with `params`, checked by importing it again; None where `name`
    is no bundled family's spec. HFExportError (GF314–GF316) names the first param no such config says."""
    candidates = families_of(name)
    if not candidates:
        return None
    first = None
    for fam in candidates:
        try:
            try:
                cfg = config_for(fam, {**_resolved_defaults(fam), **params})
            except (KeyError, TypeError, ValueError, ArithmeticError) as e:   # a spec of that name, other params
                raise HFExportError("GF316", None, f"spec `{name}`'s params don't form a {fam.model_type} config "
                                                   f"({type(e).__name__}: {e})") from None
            _check(fam, cfg, params, origin or {})
            return Exported(fam, cfg)
        except HFExportError as e:
            first = first or e
    raise first


def _resolved_defaults(fam: Family) -> dict:
    """The bundled spec's params at their defaults: what a spec of that name leaves out has the family's value."""
    from .load import load_program
    return load_program(str(spec_path(fam))).params


def _check(fam: Family, cfg: dict, params: dict, origin: dict) -> None:
    from .load import load_program
    from ..base.diagnostics import SpecError
    try:
        imported = convert_config(_as_json(cfg))
    except HFImportError as e:
        raise HFExportError("GF316", None, f"a {fam.model_type} config.json can't say these params: its import "
                                           f"refuses them: {e}") from None
    try:
        free = {k: params[k] for k in INPUT_SIZES.get(fam.model_type, ()) if k in params}
        back = load_program(str(spec_path(fam)), None, {**imported.params, **free}).params
    except SpecError as e:
        raise HFExportError("GF316", None, f"the {fam.model_type} config.json written for these params imports to "
                                           f"a spec that doesn't load: {e}") from None
    table = {rule.param for rule in fam.fields.values() if isinstance(rule, P)}
    declared = bundled_params(fam)
    for k, v in params.items():
        if k in back and _same(v, back[k]):
            continue
        via = f" (set by {origin[k]})" if k in origin else ""
        if k not in declared:
            raise HFExportError("GF314", k, f"param `{k}` = {_show(v)}{via}: the bundled {fam.spec} has no such "
                                            f"param, so no field of transformers' {fam.model_type} config says it")
        if k not in imported.params and k not in table:
            raise HFExportError("GF314", k, f"param `{k}` = {_show(v)}{via}: no field of transformers' "
                                            f"{fam.model_type} config sets it, so from_pretrained would build the "
                                            f"model with {_show(back.get(k))}")
        raise HFExportError("GF315", k, f"param `{k}` = {_show(v)}{via}: the {fam.model_type} config.json's fields "
                                        f"can't hold this value (read back as {_show(back.get(k))})")


def _as_json(cfg: dict) -> dict:
    """The config as json.loads would give it back (tuples as lists; keys strings)."""
    import json
    return json.loads(json.dumps(cfg))


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _show(v) -> str:
    return hf.yaml_scalar(v) if v is not None else "the family's default"
