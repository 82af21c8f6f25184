"""Gemma-3's language model against transformers' Gemma3ForCausalLM, built offline from a tiny, deliberately
odd config with perturbed random weights (no norm weight at its init): 3 heads sharing 1 kv head of 10
(3 · 10 ≠ 42), a window of 4 shorter than every sequence here, one global layer in three
(sliding_window_pattern 3: layers 2 and 5), rotary bases 300 (local) and 5000 (global), linear rotary
scaling ×4 on the global layers only. Logits with and without left padding, gradients, greedy generation
with the KV cache and cached steps against a full recompute, ONNX Runtime (with and without past), the
parameter counts on meta at the published configs, the `import hf` round trip, and the two attention
attributes Gemma-3 brought (`qk_unit_offset`, `rope_scaling: linear`)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402
from graphformer.weights.maps import convert_state_dict, to_reference  # noqa: E402
from parity import (assert_cached_steps, assert_greedy_tokens, assert_lm_grads, assert_lm_logits,  # noqa: E402
                    assert_onnx_logits, assert_same_tokens, hf_greedy, imported, lm_batch, ours, prompts)

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"
LINEAR = {"rope_type": "linear", "factor": 4.0}
TINY = dict(vocab_size=97, hidden_size=42, num_hidden_layers=6, num_attention_heads=3, num_key_value_heads=1,
            head_dim=10, intermediate_size=56, max_position_embeddings=64, sliding_window=4,
            sliding_window_pattern=3, query_pre_attn_scalar=10, rms_norm_eps=1e-6, rope_theta=5000.0,
            rope_local_base_freq=300.0, rope_scaling=LINEAR, pad_token_id=0)


def reference(**kw):
    torch.manual_seed(0)
    ref = T.Gemma3ForCausalLM(T.Gemma3TextConfig(**{**TINY, **kw}, attn_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # Gemma's norm weights start at 0 (1 + w = 1): perturb every parameter
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return ref


def pair(**sets):
    ref = reference()
    spec = graphformer.load(SPECS / "gemma3.yaml", preset="tiny", overrides=sets)
    return spec, ref, ours(spec, ref)


def test_reference_config_is_the_one_the_tiny_preset_says():
    """transformers reads the tiny config as the spec does: layers 2 and 5 global, the scaling on them only."""
    cfg = reference().config
    assert cfg.layer_types == ["sliding_attention", "sliding_attention", "full_attention"] * 2
    assert cfg.rope_parameters["full_attention"] == {"rope_type": "linear", "factor": 4.0, "rope_theta": 5000.0}
    assert cfg.rope_parameters["sliding_attention"] == {"rope_type": "default", "rope_theta": 300.0}
    spec = graphformer.load(SPECS / "gemma3.yaml", preset="tiny")
    attrs = [spec.ir.node(f"blocks.{i}.attn").attrs for i in range(6)]
    assert [a.window for a in attrs] == [4, 4, None] * 2
    assert [(a.rope_theta, a.rope_scaling) for a in attrs] == [(300.0, "none")] * 2 + [(5000.0, "linear")] \
        + [(300.0, "none")] * 2 + [(5000.0, "linear")]
    assert {a.rope_factor for a in attrs} == {4.0}


def test_logits_equal_transformers_with_and_without_padding():
    spec, ref, model = pair()
    assert_lm_logits(model, ref, *lm_batch(n=12), "gemma3")


def test_gradients_equal_transformers():
    spec, ref, model = pair()
    assert_lm_grads(model, ref, spec, lm_batch(n=12)[0], "gemma3")


def test_greedy_tokens_equal_transformers_generate_and_cached_steps_a_full_recompute():
    spec, ref, model = pair()
    for padded in (False, True):
        assert_greedy_tokens(model, ref, *prompts(padded=padded), 20, f"gemma3, padded={padded}")
    assert_cached_steps(model, *prompts(padded=True), 12, "gemma3 cached")


def test_onnx_runtime_through_the_weight_map_equals_transformers():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, ref, _ = pair()
    ids, mask = lm_batch(n=12)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert_onnx_logits(to_onnx(spec, ref.state_dict(), weights_map="hf", inputs=["mask"]), ids, mask, want,
                       "gemma3 onnx logits")


def test_onnx_decoder_step_with_past_gives_transformers_greedy_tokens():
    """The exported decoder step (`with_past`), looped in ONNX Runtime from transformers' weights: the q/k
    norms, both rotary schedules and the windowed layers' cache, token for token as transformers' generate."""
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    spec, ref, _ = pair()
    dec = OrtDecoder(session(to_onnx(spec, ref.state_dict(), weights_map="hf", with_past=True)))
    ids, mask = prompts(padded=True)
    assert_same_tokens(dec.greedy(ids, mask, 16), hf_greedy(ref, ids, mask, 16)[:, 8:], "gemma3 onnx")


# published text configs (hub config.json's text_config / config.json), transformers' defaults elsewhere
META = [(None, dict(vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                    sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0},
                    max_position_embeddings=131072)),
        ("gemma-3-1b", dict(vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                            num_attention_heads=4, num_key_value_heads=1, sliding_window=512,
                            max_position_embeddings=32768)),
        ("gemma-3-270m", dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                              num_attention_heads=4, num_key_value_heads=1, sliding_window=512,
                              max_position_embeddings=32768))]


@pytest.mark.parametrize("preset,kw", META, ids=[m[0] or "gemma-3-4b" for m in META])
def test_parameter_counts_equal_transformers_on_meta(preset, kw):
    spec = graphformer.load(SPECS / "gemma3.yaml", preset=preset)
    with torch.device("meta"):
        ref = T.Gemma3ForCausalLM(T.Gemma3TextConfig(**kw))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters())
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(
        dict(graphformer.build(spec, device="meta").named_parameters()))
    types = ref.config.layer_types
    windows = [spec.ir.node(f"blocks.{i}.attn").attrs.window for i in range(len(types))]
    assert windows == [kw["sliding_window"] if t == "sliding_attention" else None for t in types]


def test_weight_map_round_trip_is_exact():
    spec, ref, model = pair()
    back = to_reference(spec, dict(model.state_dict()), "hf", ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back[k], v), k


def test_qk_offset_linear_scaling_window_and_final_cap_bite():
    """Each Gemma-3 feature changes the logits: the q/k norms' 1 + w, the global layers' linear scaling, the
    local rotary base, the window; and a final soft-cap, off by default, equals transformers' when set."""
    ids, _ = lm_batch(n=12)
    spec, ref, model = pair()
    with torch.no_grad():
        base = model(tokens=ids)["logits"]
        for sets in ({"rope_scaling": "none"}, {"rope_factor": 2.0}, {"rope_local_theta": 5000.0},
                     {"sliding_window": 64}):
            other = ours(graphformer.load(SPECS / "gemma3.yaml", preset="tiny", overrides=sets), ref)
            assert (other(tokens=ids)["logits"] - base).abs().max() > 1e-3, sets
        for i in range(6):
            model.node_module(f"blocks.{i}.attn").q_norm.weight.add_(1.0)
        assert (model(tokens=ids)["logits"] - base).abs().max() > 1e-3
        capped = reference(final_logit_softcapping=2.0)
        mine = ours(graphformer.load(SPECS / "gemma3.yaml", preset="tiny", overrides={"final_softcap": 2.0}), capped)
        assert_lm_logits(mine, capped, *lm_batch(n=12), "gemma3 final soft-cap")


def test_rope_linear_frequencies_equal_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from graphformer.backends.rotary import rotary_inv_freq
    spec = graphformer.load(SPECS / "gemma3.yaml", preset="tiny")
    cfg = reference().config
    want, factor = ROPE_INIT_FUNCTIONS["linear"](cfg, None, layer_type="full_attention")
    got = rotary_inv_freq(spec.ir.node("blocks.2.attn").attrs, 10)
    assert factor == 1.0 and torch.equal(torch.from_numpy(got), want.float())


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "case.yaml"
    path.write_text("graphformer: 1\nname: case\ndims: {B: 2, n: 9}\n" + text)
    return path


def test_qk_unit_offset_without_qk_norm_is_gf102_at_its_position(tmp_path):
    path = write(tmp_path, "params: {d: 24}\ninputs: {x: {shape: [B, n, d]}}\nnodes:\n"
                           "  a: {op: attention, heads: 2, qk_norm: rms, qk_unit_offset: true}\n"
                           "  b: {op: attention, in: x, heads: 2, qk_unit_offset: true}\noutputs: {y: a, z: b}\n")
    with pytest.raises(SpecError) as e:
        graphformer.load(path)
    assert [(d.code, d.span.line) for d in e.value.diagnostics if d.is_error] == [("GF102", 8)]


def _cli(capsys, *argv):
    from graphformer.cli import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.slow
def test_import_hf_of_a_saved_checkpoint_equals_transformers(tmp_path, capsys):
    """`graphformer import hf` on save_pretrained's directory: no warning, the layer pattern, both rotary
    bases and the global layers' scaling read back, the weights loaded through the map."""
    ref = reference()
    spec, model = imported(ref, tmp_path, capsys)
    assert [spec.ir.node(f"blocks.{i}.attn").attrs.window for i in range(6)] == [4, 4, None] * 2
    assert_lm_logits(model, ref, *lm_batch(n=12), "gemma3 imported")


@pytest.mark.parametrize("change,word", [
    ({"layer_types": ["full_attention", "sliding_attention"] * 3}, "layer_types"),
    ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 5.0},
                          "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 3.0}}}, "rope"),
    ({"use_bidirectional_attention": True}, "causal"),
])
def test_import_hf_refuses_what_the_spec_cannot_say(tmp_path, capsys, change, word):
    cfg = {"model_type": "gemma3_text", **{k: v for k, v in TINY.items() if k != "rope_scaling"}, **change}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rc, _, err = _cli(capsys, "import", "hf", tmp_path / "config.json", "-o", tmp_path / "spec.yaml")
    assert rc == 1 and word in err, err


def test_import_of_the_hub_4b_text_config_gives_the_bundled_defaults():
    """Gemma-3-4B's text_config as the hub spells it (older transformers: `rope_scaling`, `rope_theta`,
    `rope_local_base_freq`, `sliding_window_pattern`, no `layer_types`) imports as the spec's defaults, and the
    1B's as the preset; transformers reads both configs the same way (layer pattern, rotary per layer type)."""
    from graphformer.frontend import hf
    hub_4b = {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
              "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
              "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6,
              "query_pre_attn_scalar": 256, "final_logit_softcapping": None, "attn_logit_softcapping": None}
    hub_1b = {"model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 1152, "intermediate_size": 6912,
              "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1, "sliding_window": 512,
              "max_position_embeddings": 32768, "rope_scaling": None, "rope_theta": 1000000.0,
              "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6}
    for cfg, preset in ((hub_4b, None), (hub_1b, "gemma-3-1b")):
        imported = hf.convert_config(dict(cfg))
        assert imported.unread == []
        spec = graphformer.load(SPECS / "gemma3.yaml", preset=preset)
        assert {k: v for k, v in imported.params.items() if spec.params.get(k) != v} == {}, preset
        ref = T.Gemma3TextConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
        attrs = [spec.ir.node(f"blocks.{i}.attn").attrs for i in range(ref.num_hidden_layers)]
        for a, kind in zip(attrs, ref.layer_types):
            rp = ref.rope_parameters[kind]
            assert a.rope_theta == rp["rope_theta"] and (a.rope_scaling == "linear") == (rp["rope_type"] == "linear")
