"""DeepSeek-V3 / Kimi-K2 (specs/deepseek-v3.yaml: DeepSeek-V2's layers with V3's router: sigmoid scores, a
selection bias that only chooses, groups ranked by their best two) against transformers' DeepseekV3ForCausalLM,
built offline from configs with random, perturbed weights (the selection bias too: a zero one would hide it):
logits with and without left padding, gradients, greedy generation and cached steps, ONNX (with past), the
parameter counts on meta at the published sizes, `import hf`, and the router and its errors on their own."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DeepseekV3ForCausalLM"):
    pytest.skip("this transformers has no DeepseekV3ForCausalLM", allow_module_level=True)

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.check import check_file  # noqa: E402
from graphformer.frontend.hf import HFImportError, convert_config  # noqa: E402
from graphformer.weights.maps import convert_state_dict, to_reference  # noqa: E402
from parity import (assert_cached_steps, assert_close, assert_greedy_tokens,  # noqa: E402
                    assert_lm_logits, assert_onnx_logits, assert_same_tokens, hf_greedy, lm_batch, ours, prompts)

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"
SPEC = SPECS / "deepseek-v3.yaml"


def v3_cfg(**kw):
    """The spec's `tiny` preset as a transformers config: low-rank queries, 8 experts in 4 groups of which 2 are
    kept, YaRN with mscale ≠ mscale_all_dim, renormalised weights scaled by 2.5, one dense layer then two MoE."""
    base = dict(vocab_size=97, hidden_size=40, intermediate_size=56, moe_intermediate_size=18, num_hidden_layers=3,
                num_attention_heads=5, num_key_value_heads=5, n_shared_experts=2, n_routed_experts=8,
                routed_scaling_factor=2.5, kv_lora_rank=14, q_lora_rank=12, qk_rope_head_dim=4, v_head_dim=10,
                qk_nope_head_dim=6, n_group=4, topk_group=2, num_experts_per_tok=3, first_k_dense_replace=1,
                norm_topk_prob=True, max_position_embeddings=64, rms_norm_eps=1e-6,
                rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                              "beta_fast": 32, "beta_slow": 1, "mscale": 0.9, "mscale_all_dim": 0.7},
                rope_theta=500.0)
    return {**base, **kw}


# Kimi-K2's form at tiny size: one group (no group limit), weights not renormalised, two dense layers, YaRN with
# beta_fast 1 and equal mscales
KIMI = dict(n_group=1, topk_group=1, norm_topk_prob=False, first_k_dense_replace=2, num_hidden_layers=4,
            routed_scaling_factor=2.827, rope_theta=5000.0,
            rope_scaling={"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8, "beta_fast": 1.0,
                          "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0})
KIMI_SETS = {"groups": 1, "top_groups": 1, "normalize": False, "dense_layers": 2, "layers": 4, "routed_scale": 2.827,
             "rope_theta": 5000.0, "rope_factor": 8.0, "rope_original_max_len": 8, "rope_beta_fast": 1.0,
             "rope_mscale": 1.0, "rope_mscale_all_dim": 1.0}
CASES = {"tiny": ({}, {}), "kimi": (KIMI_SETS, KIMI)}
_PAIRS: dict = {}


def reference(kw, seed=0):
    """DeepseekV3ForCausalLM with every parameter perturbed (the router's strongly, so that no two experts nearly
    tie) and a random selection bias (a buffer: randomize() would leave it 0)."""
    torch.manual_seed(seed)
    ref = T.DeepseekV3ForCausalLM(T.DeepseekV3Config(**v3_cfg(**kw), attn_implementation="sdpa",
                                                     experts_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for k, p in ref.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (0.5 if k.endswith("mlp.gate.weight") else 0.05))
        for k, b in ref.named_buffers():
            if k.endswith("e_score_correction_bias"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.3)
    return ref


def pair(case):
    if case not in _PAIRS:
        sets, kw = CASES[case]
        ref = reference(kw)
        spec = graphformer.load(SPEC, preset="tiny", overrides=sets)
        _PAIRS[case] = (spec, ref, ours(spec, ref))
    return _PAIRS[case]


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers_with_and_without_padding(case):
    spec, ref, model = pair(case)
    ids, mask = lm_batch()
    assert_lm_logits(model, ref, ids, mask, f"deepseek-v3 {case}")


def test_the_selection_bias_chooses_experts_and_is_loaded_as_a_buffer():
    """The bias is running state (a buffer, as in transformers): in the state dict, not among the parameters;
    zeroing it in both models changes the logits (other experts are chosen) and they still agree."""
    spec, ref, model = pair("tiny")
    bias = dict(model.named_buffers())["blocks.0.moe.selection_bias"]
    assert torch.equal(bias, ref.state_dict()["model.layers.1.mlp.gate.e_score_correction_bias"])
    assert "blocks.0.moe.selection_bias" not in dict(model.named_parameters())
    ids, _ = lm_batch()
    fresh, r = ours(spec, reference({})), reference({})
    with torch.no_grad():
        before = fresh(tokens=ids)["logits"]
        for module in (fresh, r):
            for k, b in module.named_buffers():
                if k.endswith(("selection_bias", "e_score_correction_bias")):
                    b.zero_()
        after, want = fresh(tokens=ids)["logits"], r(input_ids=ids).logits
    assert (before - after).abs().max() > 1e-3, "the selection bias changed no expert choice"
    assert_close(after, want, "logits with a zero selection bias")


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_transformers(case):
    """parity.assert_lm_grads' backward pass, compared here: the map must also see the selection biases (state,
    no gradient on either side), so they ride along as zeros and only our parameters are compared."""
    spec, ref, model = pair(case)
    model.zero_grad(), ref.zero_grad()
    ids = lm_batch()[0]
    weight = torch.randn(97, generator=torch.Generator().manual_seed(2))
    (model(tokens=ids)["logits"] * weight).sum().backward()
    (ref(input_ids=ids).logits * weight).sum().backward()
    state = {k: torch.zeros_like(b) for k, b in ref.state_dict().items() if k.endswith("e_score_correction_bias")}
    grads = {k: torch.zeros_like(p) if p.grad is None else p.grad for k, p in ref.named_parameters()}
    theirs = convert_state_dict(spec, {**grads, **state}, "hf")
    mine = dict(model.named_parameters())
    assert set(theirs) - set(mine) == {k for k in theirs if k.endswith("selection_bias")}
    for k, p in mine.items():
        assert_close(torch.zeros_like(p) if p.grad is None else p.grad, theirs[k], f"{case} grad {k}")


def test_weight_map_round_trips_the_reference_state_dict():
    spec, ref, model = pair("kimi")
    weights = convert_state_dict(spec, ref.state_dict(), "hf")
    assert torch.equal(weights["blocks.1.moe.selection_bias"],
                       ref.state_dict()["model.layers.3.mlp.gate.e_score_correction_bias"])
    back = to_reference(spec, weights, "hf", reference=ref.state_dict())
    assert set(back) == set(ref.state_dict())
    assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())


# (preset, config kwargs, published count: transformers on meta, which leaves out the MTP layer)
META = [
    ("deepseek-v3", {}, 671_026_404_352),
    ("kimi-k2", dict(vocab_size=163840, num_attention_heads=64, num_key_value_heads=64, first_k_dense_replace=1,
                     n_routed_experts=384, n_group=1, topk_group=1, routed_scaling_factor=2.827), 1_026_408_209_408),
]


@pytest.mark.parametrize("preset,kw,published", META, ids=[m[0] for m in META])
def test_parameter_counts_equal_transformers_on_meta(preset, kw, published):
    spec = graphformer.load(SPEC, preset=preset)
    with torch.device("meta"):
        ref = T.DeepseekV3ForCausalLM(T.DeepseekV3Config(**kw))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == published
    # the map covers the reference exactly (shapes only: meta tensors), the selection biases (buffers) included
    mapped = convert_state_dict(spec, ref.state_dict(), "hf")
    assert len(mapped) == len(spec.ir.param_shapes())
    assert sum(k.endswith("selection_bias") for k in mapped) == 61 - kw.get("first_k_dense_replace", 3)


def test_summary_counts_the_active_experts():
    from graphformer.analysis.summary import rows
    table = {r.node: r for r in rows(graphformer.load(SPEC).ir)}
    expert = 3 * 7168 * 2048
    assert table["blocks.0.moe"].params == 256 * 7168 + 256 * expert      # the bias is state, not counted
    assert table["blocks.0.moe"].active == 256 * 7168 + 8 * expert


@pytest.mark.parametrize("case,padded", [("tiny", False), ("tiny", True),
                                         pytest.param("kimi", True, marks=pytest.mark.slow)])
def test_greedy_tokens_equal_transformers_generate(case, padded):
    spec, ref, model = pair(case)
    assert_greedy_tokens(model, ref, *prompts(padded=padded), 20, f"{case}, padded={padded}")


def test_cached_steps_equal_a_full_recompute():
    spec, ref, model = pair("tiny")
    dec = assert_cached_steps(model, *prompts(padded=True), 12, "deepseek-v3")
    assert [(tuple(s.k.shape), tuple(s.v.shape)) for s in dec.cache.slots] == [((3, 1, 20, 14), (3, 1, 20, 4))] * 3


def test_onnx_runtime_equals_torch_with_padding():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, ref, model = pair("tiny")
    ids, mask = lm_batch()
    with torch.no_grad():
        want = model(tokens=ids, mask=mask)["logits"]
    assert_onnx_logits(to_onnx(spec, model, inputs=["mask"]), ids, mask, want, "onnx logits")


@pytest.mark.slow
def test_onnx_decoder_with_past_gives_transformers_tokens():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    spec, ref, model = pair("tiny")
    sess = session(to_onnx(spec, model, with_past=True))
    ids, mask = prompts(padded=True)
    assert_same_tokens(OrtDecoder(sess).greedy(ids, mask, 12), hf_greedy(ref, ids, mask, 12)[:, 8:],
                       "deepseek-v3 onnx with past, padded")


# ---------------------------------------------------------------- import hf

def test_import_hf_config_gives_the_presets():
    tiny = convert_config({"model_type": "deepseek_v3", **v3_cfg()})
    spec = graphformer.load(SPEC, preset="tiny")
    assert not tiny.unread
    assert {k: spec.params[k] for k in tiny.params} == tiny.params
    # DeepSeek-V3's config.json as published (the hub's fields that transformers reads or ignores)
    published = {"model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
                 "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
                 "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
                 "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
                 "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8,
                 "topk_group": 4, "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3,
                 "norm_topk_prob": True, "scoring_func": "sigmoid", "aux_loss_alpha": 0.001, "seq_aux": True,
                 "hidden_act": "silu", "max_position_embeddings": 163840, "rms_norm_eps": 1e-6, "rope_theta": 10000,
                 "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                                  "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"},
                 "num_nextn_predict_layers": 1, "ep_size": 1, "tie_word_embeddings": False,
                 "attention_bias": False, "bos_token_id": 0, "eos_token_id": 1}
    got = convert_config(published)
    defaults = graphformer.load(SPEC).params
    assert {k: defaults[k] for k in got.params} == got.params and not got.unread
    kimi = convert_config({**published, "vocab_size": 163840, "num_attention_heads": 64, "num_key_value_heads": 64,
                           "n_routed_experts": 384, "routed_scaling_factor": 2.827, "n_group": 1, "topk_group": 1,
                           "first_k_dense_replace": 1, "max_position_embeddings": 131072, "rope_theta": 50000.0,
                           "rope_scaling": {"beta_fast": 1.0, "beta_slow": 1.0, "factor": 32.0, "mscale": 1.0,
                                            "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                                            "type": "yarn"}, "num_nextn_predict_layers": 0})
    preset = graphformer.load(SPEC, preset="kimi-k2").params
    assert {k: preset[k] for k in kimi.params} == kimi.params


@pytest.mark.parametrize("cfg,message", [
    (dict(first_k_dense_replace=0), "at least one dense layer"),
    (dict(n_group=8), "at least two per group"),
    (dict(rope_interleave=False), "rope_interleave: false"),
    (dict(scoring_func="softmax"), "scoring_func"),
    (dict(topk_method="greedy"), "topk_method"),
])
def test_import_hf_refuses_what_the_spec_cannot_say(cfg, message):
    with pytest.raises(HFImportError, match=message):
        convert_config({"model_type": "deepseek_v3", **v3_cfg(**cfg)})


def test_import_hf_cli_then_checkpoint_weights(tmp_path, capsys):
    """`graphformer import hf` on a save_pretrained directory (the selection biases in its safetensors), then
    the imported spec holding those weights computes the reference's logits."""
    from graphformer import cli
    from graphformer.backends.torch.weights import load_weights
    from graphformer.weights.maps import read_state_dict
    spec, ref, model = pair("tiny")
    ref.save_pretrained(tmp_path / "ckpt")
    assert cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "spec.yaml")]) == 0
    assert cli.main(["check", str(tmp_path / "spec.yaml")]) == 0
    _, err = capsys.readouterr()
    assert "warning" not in err, err
    imported = graphformer.load(tmp_path / "spec.yaml")
    built = graphformer.build(imported).eval()
    load_weights(built, read_state_dict(str(tmp_path / "ckpt")), "hf", imported)
    ids, mask = lm_batch()
    with torch.no_grad():
        assert_close(built(tokens=ids)["logits"], ref(input_ids=ids).logits, "imported logits")


# ---------------------------------------------------------------- the router on its own, and its errors

def test_the_router_equals_transformers_topk_router():
    """Our `moe` routing (sigmoid_topk, selection bias, top2_sum groups) against DeepseekV3TopkRouter on 200
    tokens: the same experts, the same weights."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
    theirs = DeepseekV3TopkRouter(T.DeepseekV3Config(**v3_cfg(n_routed_experts=16, n_group=4, topk_group=2,
                                                               num_experts_per_tok=4)))
    gen = torch.Generator().manual_seed(3)
    from graphformer.backends.torch.moe import MoE
    from graphformer.ops import REGISTRY
    a = REGISTRY["moe"].attrs.model_validate({"expert": "e", "experts": 16, "top_k": 4, "router": "sigmoid_topk",
                                              "selection_bias": True, "groups": 4, "top_groups": 2,
                                              "group_score": "top2_sum", "routed_scale": 2.5})
    mine = MoE(40, [torch.nn.Identity()] * 16, a, "x", "x")
    with torch.no_grad():
        theirs.weight.copy_(torch.randn(16, 40, generator=gen))
        theirs.e_score_correction_bias.copy_(torch.randn(16, generator=gen) * 0.3)
        mine.router.weight.copy_(theirs.weight)
        mine.selection_bias.copy_(theirs.e_score_correction_bias)
        x = torch.randn(200, 40, generator=gen)
        _, w_ref, idx_ref = theirs(x)
        w, idx = mine.route(x)
    order, order_ref = idx.sort(-1), idx_ref.sort(-1)
    assert torch.equal(order.values, order_ref.values)
    assert_close(w.gather(-1, order.indices), w_ref.gather(-1, order_ref.indices), "router weights")


def test_onnx_router_equals_torch_with_groups_kept_by_their_best_two(tmp_path):
    """The moe node alone in ONNX Runtime, experts 16 in 4 groups (2 kept), biased sigmoid scores."""
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from parity import onnx_session
    (tmp_path / "m.yaml").write_text(SOLO.format(extra="groups: 4, top_groups: 2, group_score: top2_sum"))
    s = graphformer.load(tmp_path / "m.yaml")
    model = graphformer.build(s, seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.moe.selection_bias.copy_(torch.randn(16, generator=gen) * 0.3)
        x = torch.randn(3, 7, 24, generator=gen)
        want = model(x=x)["y"]
    got = onnx_session(to_onnx(s, model)).run(["y"], {"x": x.numpy()})[0]
    assert_close(torch.from_numpy(got), want, "onnx moe")


SOLO = """
graphformer: 1
name: solo
dims: {{B: 3, n: 7}}
inputs:
  x: {{shape: [B, n, 24]}}
blocks:
  ffn:
    inputs: {{x: [B, n, 24]}}
    nodes:
      up: {{op: linear, out: 8}}
      act: {{op: silu}}
      down: {{op: linear, out: 24}}
    outputs: {{x: down}}
nodes:
  moe: {{op: moe, expert: ffn, experts: 16, top_k: 4, router: sigmoid_topk, selection_bias: true,
         routed_scale: 2.5, {extra}}}
outputs: {{y: moe}}
"""


@pytest.mark.parametrize("sets,code,where", [
    ({"groups": 8, "top_groups": 3}, "GF321", "group_score"),     # 8 experts in 8 groups: one each
    ({"top_groups": 5}, "GF242", "top_groups"),
    ({"groups": 3}, "GF241", "groups"),
])
def test_bad_attributes_are_reported_at_their_line(sets, code, where):
    diags = check_file(str(SPEC), preset="tiny", overrides=sets).diagnostics
    hit = [d for d in diags if d.code == code]
    assert hit, [str(d) for d in diags]
    line = Path(hit[0].span.file).read_text().splitlines()[hit[0].span.line - 1]
    assert where in line, (hit[0].span, line)


def test_gf320_a_selection_bias_on_topk_softmax(tmp_path):
    text = SOLO.format(extra="normalize: true").replace("router: sigmoid_topk", "router: topk_softmax")
    (tmp_path / "m.yaml").write_text(text)
    hit = [d for d in check_file(str(tmp_path / "m.yaml")).diagnostics if d.code == "GF320"]
    assert hit, "no GF320"
    assert "selection_bias: true" in text.splitlines()[hit[0].span.line - 1]


def test_a_bf16_build_keeps_the_selection_bias_in_float32():
    """As transformers keeps `e_score_correction_bias` in fp32 (`_keep_in_fp32_modules_strict`): a bf16 bias would
    reorder close scores. Moving the model still moves it."""
    model = graphformer.build(graphformer.load(SPEC, preset="tiny"), seed=0, dtype="bf16").eval()
    bias = dict(model.named_buffers())["blocks.0.moe.selection_bias"]
    assert bias.dtype == torch.float32 and model.lm_head.weight.dtype == torch.bfloat16
    assert model(tokens=torch.tensor([[1, 2, 3]]))["logits"].dtype == torch.bfloat16
    assert dict(model.to("meta").named_buffers())["blocks.0.moe.selection_bias"].device.type == "meta"
