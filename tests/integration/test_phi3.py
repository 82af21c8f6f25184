"""Phi-3 against transformers' Phi3ForCausalLM, built offline from a tiny, deliberately odd config with perturbed
random weights: 6 heads over 2 key/value heads (so the fused qkv_proj splits into parts of unequal sizes), a
window of 5 tokens (shorter than every sequence here), partial rotary (0.75 of each head). Logits with and
without left padding, gradients, greedy generation and the cached steps, ONNX Runtime (with and without
past), parameter counts on meta at Phi-3-mini-4k and Phi-4, the weight map's round trip, and `import hf`
(longrope refused)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.weights.maps import convert_state_dict, to_reference  # noqa: E402
from parity import (assert_cached_steps, assert_greedy_tokens, assert_lm_grads, assert_lm_logits,  # noqa: E402
                    assert_onnx_logits, assert_same_tokens, hf_greedy, imported, lm_batch, ours, prompts)

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"
TINY = dict(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
            intermediate_size=40, max_position_embeddings=64, sliding_window=5, pad_token_id=0, eos_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.75})


def reference(**kw):
    torch.manual_seed(0)
    ref = T.Phi3ForCausalLM(T.Phi3Config(**{**TINY, **kw}, attn_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # norm weights start at 1: perturb every parameter
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return ref


def pair(**sets):
    ref = reference()
    spec = graphformer.load(SPECS / "phi3.yaml", preset="tiny", overrides=sets)
    return spec, ref, ours(spec, ref)


def test_logits_equal_transformers_with_and_without_padding():
    spec, ref, model = pair()
    assert_lm_logits(model, ref, *lm_batch(), "phi3")


def test_gradients_equal_transformers():
    spec, ref, model = pair()
    assert_lm_grads(model, ref, spec, lm_batch()[0], "phi3")


def test_greedy_tokens_equal_transformers_generate_and_cached_steps_equal_recompute():
    spec, ref, model = pair()
    for padded in (False, True):
        assert_greedy_tokens(model, ref, *prompts(padded=padded), 20, f"phi3, padded={padded}")
    assert_cached_steps(model, *prompts(padded=True), 16, "phi3")


def test_onnx_runtime_with_and_without_past_equals_transformers():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    spec, ref, _ = pair()
    ids, mask = lm_batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert_onnx_logits(to_onnx(spec, ref.state_dict(), weights_map="hf", inputs=["mask"]), ids, mask, want,
                       "phi3 onnx logits")
    dec = OrtDecoder(session(to_onnx(spec, ref.state_dict(), weights_map="hf", with_past=True)))
    ids, mask = prompts(padded=True)
    assert_same_tokens(dec.greedy(ids, mask, 16), hf_greedy(ref, ids, mask, 16)[:, 8:], "phi3 onnx with past")


META = [(None, {}, 3_821_079_552),
        ("phi-4", dict(vocab_size=100352, hidden_size=5120, num_hidden_layers=40, num_attention_heads=40,
                       num_key_value_heads=10, intermediate_size=17920, max_position_embeddings=16384,
                       pad_token_id=100349), 14_659_507_200)]


@pytest.mark.parametrize("preset,kw,published", META, ids=[str(m[0]) for m in META])
def test_parameter_counts_equal_transformers_on_meta(preset, kw, published):
    spec = graphformer.load(SPECS / "phi3.yaml", preset=preset)
    with torch.device("meta"):
        ref = T.Phi3ForCausalLM(T.Phi3Config(**kw))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == published
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(
        dict(graphformer.build(spec, device="meta").named_parameters()))


def test_weight_map_splits_grouped_qkv_at_the_parameters_sizes_and_round_trips():
    spec, ref, model = pair()
    fused = ref.model.layers[1].self_attn.qkv_proj.weight                       # [48 + 16 + 16, 48]
    attn = model.node_module("blocks.1.attn")
    assert torch.equal(attn.q.weight, fused[:48]) and torch.equal(attn.k.weight, fused[48:64])
    assert torch.equal(attn.v.weight, fused[64:])
    back = to_reference(spec, dict(model.state_dict()), "hf", ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back[k], v), k


def test_window_and_partial_rotary_bite():
    ids, _ = lm_batch(n=12)
    spec, ref, model = pair()
    with torch.no_grad():
        base = model(tokens=ids)["logits"]
        for sets in ({"window": 0}, {"rope_dims": 8}):
            other = ours(graphformer.load(SPECS / "phi3.yaml", preset="tiny", overrides=sets), ref)
            assert (other(tokens=ids)["logits"] - base).abs().max() > 1e-3, sets


@pytest.mark.slow
def test_import_hf_of_a_saved_checkpoint_equals_transformers(tmp_path, capsys):
    ref = reference()
    spec, model = imported(ref, tmp_path, capsys)
    assert spec.ir.node("blocks.0.attn").attrs.window == 5
    assert_lm_logits(model, ref, *lm_batch(), "phi3 imported")


def test_import_hf_refuses_longrope(tmp_path, capsys):
    from graphformer.cli import main
    rope = {"rope_type": "longrope", "rope_theta": 500.0, "short_factor": [1.0] * 3, "long_factor": [2.0] * 3}
    cfg = {"model_type": "phi3", **{k: v for k, v in TINY.items() if k != "rope_parameters"},
           "rope_parameters": rope, "original_max_position_embeddings": 32}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rc = main(["import", "hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "spec.yaml")])
    out, err = capsys.readouterr()
    assert rc == 1 and "longrope" in err and "Traceback" not in out + err, err
