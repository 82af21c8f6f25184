"""Five decoder families written with the existing language, each against its transformers class built offline
from a tiny config (random weights, perturbed; eager attention): logits with and without left padding, greedy
generation token for token (padded and not), the parameter count of one published size on meta, and `import hf`
of the tiny config giving the spec's tiny preset back.

Granite (μP multipliers through `scale` and attention's `scale`), StarCoder2 (LayerNorm, biases, GELU-tanh MLP,
sliding window), Cohere / Command-R (parallel attention + MLP from one bias-free LayerNorm, interleaved rotary,
logit scale), SmolLM3 (rotary switched off every 4th layer: a per-layer `rope`), StableLM (partial rotary,
optional qkv bias and parallel residual)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.hf import convert_config  # noqa: E402
from parity import assert_greedy_tokens, assert_lm_logits, lm_batch, ours, prompts  # noqa: E402

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"
COMMON = dict(vocab_size=97, max_position_embeddings=64, pad_token_id=0, bos_token_id=None, eos_token_id=None)

# family: (spec, model class, config class, the tiny config (= the spec's tiny preset),
#          a published size: (its config, the spec's preset for it, its parameter count))
FAMILIES = {
    "granite": ("granite", "GraniteForCausalLM", "GraniteConfig", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
        rms_norm_eps=1e-5, tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        embedding_multiplier=3.0, attention_multiplier=0.3, residual_multiplier=0.5, logits_scaling=4.0),
        (dict(vocab_size=49155, hidden_size=2048, intermediate_size=8192, num_hidden_layers=40,
              num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True), None, 2_533_531_648)),
    "starcoder2": ("starcoder2", "Starcoder2ForCausalLM", "Starcoder2Config", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
        sliding_window=5, tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
        ({}, None, 3_030_371_328)),                                         # StarCoder2-3B
    "cohere": ("cohere", "CohereForCausalLM", "CohereConfig", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
        logit_scale=0.5, rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
        ({}, None, 34_980_831_232)),                                        # Command-R v01
    "smollm3": ("smollm3", "SmolLM3ForCausalLM", "SmolLM3Config", dict(
        hidden_size=48, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
        no_rope_layer_interval=2, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
        ({}, None, 3_075_098_624)),                                         # SmolLM3-3B
    "stablelm": ("stablelm", "StableLmForCausalLM", "StableLmConfig", dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2, intermediate_size=80,
        use_qkv_bias=True, rope_parameters={"rope_type": "default", "rope_theta": 500.0,
                                            "partial_rotary_factor": 0.5}),
        (dict(vocab_size=100352, hidden_size=2048, num_hidden_layers=24, intermediate_size=5632,
              use_qkv_bias=True), "stablelm-2-1.6b", 1_644_515_328)),
}
FAMILY_IDS = list(FAMILIES)


def reference(family: str, **kw):
    _, model, config, tiny, _ = FAMILIES[family]
    torch.manual_seed(0)
    ref = getattr(T, model)(getattr(T, config)(**{**COMMON, **tiny, **kw}, attn_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # norm weights start at 1, biases at 0: perturb every parameter
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return ref


def pair(family: str, sets: dict | None = None, **kw):
    ref = reference(family, **kw)
    spec = graphformer.load(SPECS / f"{FAMILIES[family][0]}.yaml", preset="tiny", overrides=sets or {})
    return spec, ref, ours(spec, ref)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_logits_equal_transformers_with_and_without_left_padding(family):
    spec, ref, model = pair(family)
    assert_lm_logits(model, ref, *lm_batch(), family)


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_greedy_tokens_equal_transformers_generate(family):
    spec, ref, model = pair(family)
    for padded in (False, True):
        assert_greedy_tokens(model, ref, *prompts(padded=padded), 16, f"{family}, padded={padded}")


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_parameter_count_of_a_published_size_equals_transformers_on_meta(family):
    name, model, config, _, (kw, preset, published) = FAMILIES[family]
    spec = graphformer.load(SPECS / f"{name}.yaml", preset=preset)
    with torch.device("meta"):
        ref = getattr(T, model)(getattr(T, config)(**kw))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == published


@pytest.mark.parametrize("family", FAMILY_IDS)
def test_import_hf_of_the_tiny_config_is_the_tiny_preset(family, tmp_path):
    ref = reference(family)
    ref.config.save_pretrained(tmp_path)
    imported = convert_config(json.loads((tmp_path / "config.json").read_text()))
    params = imported.params
    assert imported.unread == [] and imported.defaulted == [], (imported.unread, imported.defaulted)
    tiny = graphformer.load(SPECS / f"{FAMILIES[family][0]}.yaml", preset="tiny").params
    assert params == {k: tiny[k] for k in params}


# the structural switches a family's config flips, each against transformers with the switch flipped there too
VARIANTS = [
    ("stablelm", {"layer": "parallel_layer", "qkv_bias": False}, dict(use_parallel_residual=True, use_qkv_bias=False)),
    ("starcoder2", {"bias": False, "window": 0, "tie_embeddings": True},
     dict(use_bias=False, sliding_window=None, tie_word_embeddings=True)),
    ("granite", {"tie_embeddings": True, "attn_bias": True}, dict(tie_word_embeddings=True, attention_bias=True)),
    ("cohere", {"attn_bias": True, "tie_embeddings": False}, dict(attention_bias=True, tie_word_embeddings=False)),
    ("cohere", {"qk_norm": "layer_heads"}, dict(use_qk_norm=True)),
]


@pytest.mark.parametrize("family,sets,kw", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variant_logits_equal_transformers(family, sets, kw):
    spec, ref, model = pair(family, sets, **kw)
    assert_lm_logits(model, ref, *lm_batch(), f"{family} {sets}")


def test_cohere_per_head_qk_norm_generates_and_exports_as_transformers():
    """`qk_norm: layer_heads` (use_qk_norm) through the KV cache and through ONNX Runtime, with left padding."""
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from parity import assert_onnx_logits
    spec, ref, model = pair("cohere", {"qk_norm": "layer_heads"}, use_qk_norm=True)
    assert tuple(ref.model.layers[0].self_attn.q_norm.weight.shape) == (6, 8)
    assert_greedy_tokens(model, ref, *prompts(padded=True), 16, "cohere qk_norm, padded")
    ids, mask = lm_batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert_onnx_logits(to_onnx(spec, ref.state_dict(), weights_map="hf", inputs=["mask"]), ids, mask, want,
                       "cohere qk_norm onnx logits")


def test_per_head_qk_norm_keeps_attention_replicated_under_tensor_parallelism():
    """A scale per head would need its rows split with the heads: the plan leaves such attention whole."""
    from graphformer.analysis.tp_plan import derive
    plain = graphformer.load(SPECS / "cohere.yaml", preset="tiny")
    normed = graphformer.load(SPECS / "cohere.yaml", preset="tiny", overrides={"qk_norm": "layer_heads"})
    def split(spec):
        return {s.module for s in derive(spec, 2) if s.module.startswith("blocks.0.attn.") and s.style != "replicate"}
    assert split(plain) == {f"blocks.0.attn.{p}" for p in "qkvo"} and not split(normed)
