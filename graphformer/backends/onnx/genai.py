"""`genai_config.json` for onnxruntime-genai, beside a decoder step exported with past keys and values.

onnxruntime-genai loads a directory holding the ONNX model and this file, which names the model's inputs and
outputs and gives the sizes its KV cache needs. Every field is known to the exporter (the decoder plan of
past.py) except the special token ids, which come from the checkpoint's config.json and generation_config.json
when the caller passes them (this module reads no file). The cache grows by concatenation in our graph, so
`past_present_share_buffer` is false: the runtime feeds each step's presents back as the next past.
"""
from __future__ import annotations

from typing import Any

from ...ir import IRGraph
from .past import ATTENTION_MASK, INPUT_IDS, Past, past_name, present_name

FILENAME = "genai_config.json"
# model types onnxruntime-genai runs as a plain decoder (its DecoderOnly model); anything else is "llama",
# whose implementation is the same generic decoder with these inputs
DECODER_TYPES = {"llama", "mistral", "qwen2", "gemma2", "phi", "olmo", "granite"}
DEFAULT_CONTEXT = 2048


class GenaiUnsupported(Exception):
    """The step's cache is not one onnxruntime-genai can hold (a latent attention's differing widths)."""


def genai_config(past: Past, ir: IRGraph, filename: str, config: dict | None = None,
                 generation: dict | None = None) -> dict[str, Any]:
    """The genai_config.json of the model written to `filename` (a name in the same directory); `config` and
    `generation` are the checkpoint's config.json and generation_config.json, when there is one."""
    config, generation = config or {}, generation or {}
    slots = list(past.plan.slots.values())
    if not slots:
        raise GenaiUnsupported("the step caches no attention")
    if past.plan.states:   # a hybrid (Jamba): attention layers beside recurrent ones
        raise GenaiUnsupported("the step also carries recurrent states (`past_states.*`), which onnxruntime-genai's "
                               "decoder does not feed back")
    if any(s.value_dim is not None for s in slots) or len({(s.kv_heads, s.head_dim) for s in slots}) > 1:
        raise GenaiUnsupported("onnxruntime-genai needs one key/value width in every layer; this model's cache "
                               "widths differ (a latent attention's latent and rotary key, or values narrower or wider "
                               "than keys: `v_head_dim`)")
    first = ir.node(slots[0].node)
    heads = int(getattr(first.attrs, "heads", slots[0].kv_heads))
    inputs = {"input_ids": INPUT_IDS}
    if past.plan.mask:
        inputs["attention_mask"] = ATTENTION_MASK
    if past.position_ids:
        inputs["position_ids"] = past.position_ids
    inputs |= {"past_key_names": past_name(0, "key").replace(".0.", ".%d."),
               "past_value_names": past_name(0, "value").replace(".0.", ".%d.")}
    outputs = {"logits": "logits", "present_key_names": present_name(0, "key").replace(".0.", ".%d."),
               "present_value_names": present_name(0, "value").replace(".0.", ".%d.")}
    context = _int(config.get("max_position_embeddings")) or past.plan.max_len or DEFAULT_CONTEXT
    decoder = {"session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
               "filename": filename, "head_size": slots[0].head_dim, "num_attention_heads": heads,
               "num_key_value_heads": slots[0].kv_heads, "num_hidden_layers": len(slots),
               "inputs": inputs, "outputs": outputs}
    hidden = _int(config.get("hidden_size")) or _int(ir.params.get("d_model"))
    if hidden:
        decoder["hidden_size"] = hidden
    kind = config.get("model_type")
    model: dict[str, Any] = {"type": kind if kind in DECODER_TYPES else "llama", "context_length": context,
                             "vocab_size": _vocab(ir, past), "decoder": decoder}
    tokens = {k: _token(generation.get(k), config.get(k)) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if tokens["pad_token_id"] is None and tokens["eos_token_id"] is not None:   # as transformers' generate does
        eos = tokens["eos_token_id"]
        tokens["pad_token_id"] = eos[0] if isinstance(eos, list) else eos
    model |= {k: v for k, v in tokens.items() if v is not None}
    search = {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": context,
              "min_length": 0, "temperature": 1.0, "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.0,
              "length_penalty": 1.0, "diversity_penalty": 0.0, "no_repeat_ngram_size": 0, "early_stopping": True,
              "past_present_share_buffer": False}
    return {"model": model, "search": search}


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _token(*values):
    """The first of `values` that is a token id (an int ≥ 0) or a non-empty list of them."""
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
        if isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in v):
            return v[0] if len(v) == 1 else v
    return None


def _vocab(ir: IRGraph, past: Past) -> int:
    logits = ir.outputs.get("logits")
    last = ir.node(logits).shape.shape[-1] if logits else None
    return last.value if last is not None and last.is_const else past.plan.vocab
