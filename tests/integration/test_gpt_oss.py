"""GPT-OSS against transformers' GptOssForCausalLM, built offline from a tiny, deliberately odd config with
perturbed random weights: 6 heads sharing 2 kv heads, head_dim 10 (6 · 10 ≠ 36), windows of 3 tokens
(shorter than every sequence here) on the even layers, sinks, YaRN with a fractional correction range,
5 experts of which 2 are kept, a SwiGLU clamp of 1.5 that bites. Logits with and without left padding,
gradients, greedy generation with the KV cache, ONNX Runtime (with and without past), the parameter
count on meta at gpt-oss-20b, the weight map's round trip, and the sink head-count check."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402
from graphformer.weights.maps import convert_state_dict, to_reference  # noqa: E402
from parity import (assert_close, assert_greedy_tokens, assert_lm_grads, assert_lm_logits,  # noqa: E402
                    assert_onnx_logits, assert_same_tokens, hf_greedy, imported, lm_batch, ours,
                    prompts)

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"
YARN = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
        "original_max_position_embeddings": 16, "rope_theta": 500.0}
TINY = dict(vocab_size=97, hidden_size=36, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
            head_dim=10, intermediate_size=28, num_local_experts=5, num_experts_per_tok=2,
            max_position_embeddings=64, sliding_window=3, rms_norm_eps=1e-5, swiglu_limit=1.5,
            rope_parameters=YARN, pad_token_id=0)


def reference(**kw):
    torch.manual_seed(0)
    ref = T.GptOssForCausalLM(T.GptOssConfig(**{**TINY, **kw}, attn_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # biases and sinks start at 0: perturb every parameter
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return ref


def pair(**sets):
    ref = reference()
    spec = graphformer.load(SPECS / "gpt-oss.yaml", preset="tiny", overrides=sets)
    return spec, ref, ours(spec, ref)


def test_logits_equal_transformers_with_and_without_padding():
    spec, ref, model = pair()
    ids, mask = lm_batch()
    with torch.no_grad():
        assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits, "gpt-oss logits")
        got = model(tokens=ids, mask=mask)["logits"]
        want = ref(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    assert_close(got[keep], want[keep], "gpt-oss logits, left-padded")


def test_gradients_equal_transformers():
    spec, ref, model = pair()
    # transformers leaves an expert no token picked without a gradient: zeros, as ours holds
    assert_lm_grads(model, ref, spec, lm_batch()[0], "gpt-oss", none_is_zero=True)


def test_greedy_tokens_equal_transformers_generate():
    spec, ref, model = pair()
    for padded in (False, True):
        assert_greedy_tokens(model, ref, *prompts(padded=padded), 20, f"gpt-oss, padded={padded}")


def test_onnx_runtime_through_the_weight_map_equals_transformers():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, ref, _ = pair()
    ids, mask = lm_batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert_onnx_logits(to_onnx(spec, ref.state_dict(), weights_map="hf", inputs=["mask"]), ids, mask, want,
                       "gpt-oss onnx logits")


def test_parameter_count_equals_transformers_on_meta_at_gpt_oss_20b():
    spec = graphformer.load(SPECS / "gpt-oss.yaml")
    yarn = {**YARN, "factor": 32.0, "original_max_position_embeddings": 4096, "rope_theta": 150000.0}
    with torch.device("meta"):
        ref = T.GptOssForCausalLM(T.GptOssConfig(num_hidden_layers=24, num_local_experts=32, rope_parameters=yarn))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == 20_914_757_184
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(
        dict(graphformer.build(spec, device="meta").named_parameters()))


def test_layers_alternate_sliding_and_global_as_transformers_layer_types():
    spec = graphformer.load(SPECS / "gpt-oss.yaml")
    windows = [spec.ir.node(f"blocks.{i}.attn").attrs.window for i in range(24)]
    types = T.GptOssConfig(num_hidden_layers=24).layer_types
    assert windows == [128 if t == "sliding_attention" else None for t in types]


def test_weight_map_round_trip_is_exact_and_gate_up_interleave_matters():
    """to_reference writes transformers' fused, interleaved, [in, out] experts back bit for bit; reading
    gate_up_proj as contiguous blocks would load without a shape error but compute something else."""
    spec, ref, model = pair()
    back = to_reference(spec, dict(model.state_dict()), "hf", ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back[k], v), k
    e = model.node_module("blocks.0.moe").experts[1]
    fused = ref.model.layers[0].mlp.experts.gate_up_proj[1]                    # [d, 2 d_ff]
    assert torch.equal(e.gate.weight, fused[:, ::2].T) and torch.equal(e.up.weight, fused[:, 1::2].T)


def test_sinks_yarn_and_clamp_bite():
    """Each GPT-OSS feature changes the logits: zero sinks (a sink of -inf would remove it), no YaRN, no clamp."""
    ids, _ = lm_batch(n=12)
    spec, ref, model = pair()
    with torch.no_grad():
        base = model(tokens=ids)["logits"]
        for sets in ({"rope_factor": 1.0}, {"swiglu_limit": 1e6}, {"sliding_window": 64}):
            other = ours(graphformer.load(SPECS / "gpt-oss.yaml", preset="tiny", overrides=sets), ref)
            assert (other(tokens=ids)["logits"] - base).abs().max() > 1e-3, sets
        for i in range(3):
            model.node_module(f"blocks.{i}.attn").sinks.fill_(-1e4)
        assert (model(tokens=ids)["logits"] - base).abs().max() > 1e-3


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "case.yaml"
    path.write_text("graphformer: 1\nname: case\ndims: {B: 2, n: 9}\n" + text)
    return path


def test_sink_count_other_than_heads_is_gf245_at_its_position(tmp_path):
    path = write(tmp_path, "params: {d: 24, heads: 4, other: 3}\ninputs: {x: {shape: [B, n, d]}}\nnodes:\n"
                           "  a: {op: attention, heads: heads, sinks: heads}\n"
                           "  b: {op: attention, heads: heads, sinks: other}\noutputs: {y: a, z: b}\n")
    with pytest.raises(SpecError) as e:
        graphformer.load(path)
    assert [(d.code, d.span.line) for d in e.value.diagnostics if d.is_error] == [("GF245", 8)]


def test_onnx_decoder_step_with_past_gives_transformers_greedy_tokens():
    """The exported decoder step (`with_past`), looped in ONNX Runtime from transformers' weights: sinks,
    YaRN and the windowed layers' cache, token for token as transformers' generate."""
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    spec, ref, _ = pair()
    dec = OrtDecoder(session(to_onnx(spec, ref.state_dict(), weights_map="hf", with_past=True)))
    ids, mask = prompts(padded=True)
    assert_same_tokens(dec.greedy(ids, mask, 12), hf_greedy(ref, ids, mask, 12)[:, 8:], "gpt-oss onnx")


def _cli(capsys, *argv):
    from graphformer.cli import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{"truncate": False}, {"truncate": True, "mscale": 0.7, "mscale_all_dim": 1.3}])
def test_import_hf_of_a_saved_checkpoint_equals_transformers(tmp_path, capsys, extra):
    """`graphformer import hf` on save_pretrained's directory (config.json with model_type gpt_oss and the
    fused expert tensors in model.safetensors): no warning, and the weights load through the map; YaRN's
    correction range fractional (GPT-OSS) or rounded (transformers' default), mscales given or not."""
    ref = reference(rope_parameters={**YARN, **extra, "beta_fast": 6.0})
    spec, model = imported(ref, tmp_path, capsys)
    assert spec.ir.node("blocks.0.attn").attrs.window == 3 and spec.ir.node("blocks.1.attn").attrs.window is None
    assert_lm_logits(model, ref, *lm_batch(), "gpt-oss imported")


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.2},
                                  {"rope_type": "dynamic", "factor": 2.0}])
def test_import_hf_refuses_a_rotary_schedule_the_spec_lacks(tmp_path, capsys, rope):
    import json
    cfg = {"model_type": "gpt_oss", **{k: v for k, v in TINY.items() if k != "rope_parameters"},
           "rope_parameters": {**rope, "rope_theta": 500.0}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rc, _, err = _cli(capsys, "import", "hf", tmp_path / "config.json", "-o", tmp_path / "spec.yaml")
    assert rc == 1 and "rope" in err, err


def test_tensor_parallel_plan_splits_the_clamped_swiglu_experts_and_replicates_sink_attention():
    from graphformer.analysis.tp_plan import derive
    plan = {s.module: s for s in derive(graphformer.load(SPECS / "gpt-oss.yaml"), 8)}
    at = "blocks.5.moe.experts.31"
    assert [plan[f"{at}.{p}"].style for p in ("gate", "up", "down")] == ["colwise", "colwise", "rowwise"]
    assert plan["blocks.5.moe.router"].style == "replicate"
    assert plan["blocks.5.attn"].style == "replicate" and "sink" in plan["blocks.5.attn"].why


def test_alternate_split_and_per_expert_transpose_on_numpy_arrays_and_their_inverse(tmp_path):
    """The map's new transforms without torch (safetensors gives numpy): exact both ways; rows that don't
    alternate evenly are a WeightMapError naming the key."""
    import numpy as np
    from graphformer.base.errors import WeightMapError
    spec = graphformer.load(SPECS / "gpt-oss.yaml", preset="tiny")
    model = graphformer.build(spec, seed=3)
    ours_np = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    ref = to_reference(spec, ours_np, "hf")
    assert ref["layers.2.mlp.experts.gate_up_proj"].shape == (5, 36, 56)
    assert ref["layers.2.mlp.experts.down_proj"].shape == (5, 28, 36)
    back = convert_state_dict(spec, ref, "hf")
    assert set(back) == set(ours_np) and all(np.array_equal(back[k], v) for k, v in ours_np.items())
    up = ref["layers.2.mlp.experts.gate_up_proj"]
    assert np.array_equal(back["blocks.2.moe.experts.3.up.weight"], up[3][:, 1::2].T)
    bad = {**ref, "layers.0.mlp.experts.gate_up_proj_bias": np.zeros((5, 55), np.float32)}
    with pytest.raises(WeightMapError, match="gate_up_proj_bias.*does not split evenly"):
        convert_state_dict(spec, bad, "hf")


@pytest.mark.parametrize("rope", [
    {"truncate": False}, {"truncate": True}, {"beta_fast": 8.0, "beta_slow": 2.0, "truncate": False},
    {"attention_factor": 1.25}, {"mscale": 0.7, "mscale_all_dim": 1.3}, {"factor": 1.0}, {"factor": 0.5}])
def test_yarn_frequencies_and_attention_factor_equal_compute_yarn_parameters(rope):
    """`attention`'s YaRN against transformers' own `_compute_yarn_parameters`: inverse frequencies to the
    bit (or one ulp), the cos/sin factor exactly, for the fields GPT-OSS and DeepSeek configs use."""
    import numpy as np
    from transformers.modeling_rope_utils import _compute_yarn_parameters
    from graphformer.backends.rotary import rotary_inv_freq
    from graphformer.ops.core import AttentionAttrs
    rp = {**YARN, "beta_fast": 32.0, "factor": 8.0, "original_max_position_embeddings": 64, **rope}
    cfg = T.GptOssConfig(**{**TINY, "head_dim": 16, "rope_parameters": rp})
    want_freq, want_scale = _compute_yarn_parameters(cfg, "cpu")
    a = AttentionAttrs(heads=6, rope=True, rope_scaling="yarn", rope_theta=rp["rope_theta"], rope_factor=rp["factor"],
                       rope_original_max_len=rp["original_max_position_embeddings"], rope_beta_fast=rp["beta_fast"],
                       rope_beta_slow=rp["beta_slow"], rope_truncate=rp.get("truncate", True),
                       rope_attention_factor=rp.get("attention_factor"), rope_mscale=rp.get("mscale", 0.0),
                       rope_mscale_all_dim=rp.get("mscale_all_dim", 0.0))
    got = rotary_inv_freq(a, 16)
    assert np.allclose(got, want_freq.numpy(), rtol=2e-7, atol=0), (got, want_freq)
    assert a.rope_cos_scale == pytest.approx(want_scale, rel=1e-12)
