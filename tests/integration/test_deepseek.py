"""DeepSeek-V2 (specs/deepseek-v2.yaml: latent attention, shared + routed experts with group-limited routing,
dense first layers) against transformers' DeepseekV2ForCausalLM, built offline from configs with random,
perturbed weights: logits and gradients at tiny odd configs (with left padding), parameter counts on meta
at the published sizes, greedy generation (the cache holds the latent), the ONNX export, `import hf`,
the tensor-parallel plan, and the errors of bad attributes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "DeepseekV2ForCausalLM"):
    pytest.skip("this transformers has no DeepseekV2ForCausalLM", allow_module_level=True)

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.analysis.tp_plan import derive  # noqa: E402
from graphformer.frontend.check import check_file  # noqa: E402
from graphformer.frontend.hf import convert_config  # noqa: E402
from graphformer.weights.maps import convert_state_dict, to_reference  # noqa: E402
from parity import (assert_cached_steps, assert_close, assert_greedy_tokens, assert_lm_grads,  # noqa: E402
                    assert_lm_logits, assert_onnx_logits, assert_same_tokens, hf_greedy, lm_batch, ours,
                    prompts)

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"
SPEC = SPECS / "deepseek-v2.yaml"


def ds_cfg(**kw):
    """The spec's `tiny` preset as a transformers config: low-rank queries, group-limited routing, YaRN with
    mscale ≠ mscale_all_dim (a rotary gain ≠ 1), a routed scale, one dense layer then two MoE layers."""
    base = dict(vocab_size=97, hidden_size=40, intermediate_size=56, moe_intermediate_size=18, num_hidden_layers=3,
                num_attention_heads=5, num_key_value_heads=5, n_shared_experts=2, n_routed_experts=6,
                routed_scaling_factor=2.5, kv_lora_rank=14, q_lora_rank=12, qk_rope_head_dim=4, v_head_dim=10,
                qk_nope_head_dim=6, topk_method="group_limited_greedy", n_group=3, topk_group=2, num_experts_per_tok=3,
                first_k_dense_replace=1, norm_topk_prob=False, max_position_embeddings=64, rms_norm_eps=1e-6,
                rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                              "beta_fast": 32, "beta_slow": 1, "mscale": 0.9, "mscale_all_dim": 0.7},
                rope_theta=500.0)
    return {**base, **kw}


# V2-Lite's form at tiny size: one full-rank query projection, greedy routing, equal mscales, two dense layers
LITE = dict(q_lora_rank=None, topk_method="greedy", n_group=1, topk_group=1, routed_scaling_factor=1.0,
            first_k_dense_replace=2, num_hidden_layers=4, rms_norm_eps=1e-5,
            rope_scaling={"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 8, "beta_fast": 32,
                          "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707})
LITE_SETS = {"q_rank": 0, "groups": 1, "top_groups": 1, "routed_scale": 1.0, "dense_layers": 2, "layers": 4,
             "eps": 1e-5, "rope_factor": 8.0, "rope_original_max_len": 8, "rope_mscale": 0.707,
             "rope_mscale_all_dim": 0.707}
CASES = {"tiny": ({}, {}), "lite": (LITE_SETS, LITE)}
_PAIRS: dict = {}


def pair(case):
    """(spec, reference, our build with its weights); weights perturbed so that no norm weight is 1 and the
    router's scores are far apart (a near tie could pick other experts on either side)."""
    if case not in _PAIRS:
        sets, kw = CASES[case]
        torch.manual_seed(0)
        ref = T.DeepseekV2ForCausalLM(T.DeepseekV2Config(**ds_cfg(**kw), attn_implementation="sdpa",
                                                         experts_implementation="eager")).eval()
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for k, p in ref.named_parameters():
                p.add_(torch.randn(p.shape, generator=gen) * (0.5 if k.endswith("mlp.gate.weight") else 0.05))
        spec = graphformer.load(SPEC, preset="tiny", overrides=sets)
        _PAIRS[case] = (spec, ref, ours(spec, ref))
    return _PAIRS[case]


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers_with_and_without_padding(case):
    spec, ref, model = pair(case)
    ids, mask = lm_batch()
    assert_lm_logits(model, ref, ids, mask, f"deepseek-v2 {case}")


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_transformers(case):
    spec, ref, model = pair(case)
    assert_lm_grads(model, ref, spec, lm_batch()[0], case, none_is_zero=True)


def test_weight_map_offsets_round_trip():
    """`{i<dense_layers}` and `{i+dense_layers}` send reference layer i to `dense.i` or `blocks.(i - 2)`, and
    back: the reference's own keys, none missing."""
    spec, ref, model = pair("lite")
    weights = convert_state_dict(spec, ref.state_dict(), "hf")
    assert torch.equal(weights["blocks.0.attn.kv_b.weight"], ref.state_dict()["model.layers.2.self_attn.kv_b_proj.weight"])
    assert torch.equal(weights["dense.1.mlp.up.weight"], ref.state_dict()["model.layers.1.mlp.up_proj.weight"])
    back = to_reference(spec, weights, "hf", reference=ref.state_dict())
    assert set(back) == set(ref.state_dict())
    assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())


# (preset, config kwargs, published count)
META = [
    ("deepseek-v2-lite", dict(vocab_size=102400, hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408,
                              num_hidden_layers=27, num_attention_heads=16, num_key_value_heads=16, n_shared_experts=2,
                              n_routed_experts=64, kv_lora_rank=512, q_lora_rank=None, qk_rope_head_dim=64,
                              v_head_dim=128, qk_nope_head_dim=128, num_experts_per_tok=6, first_k_dense_replace=1),
     15_706_484_224),
    ("deepseek-v2", dict(vocab_size=102400, hidden_size=5120, intermediate_size=12288, moe_intermediate_size=1536,
                         num_hidden_layers=60, num_attention_heads=128, num_key_value_heads=128, n_shared_experts=2,
                         n_routed_experts=160, kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64,
                         v_head_dim=128, qk_nope_head_dim=128, num_experts_per_tok=6, first_k_dense_replace=1,
                         topk_method="group_limited_greedy", n_group=8, topk_group=3, routed_scaling_factor=16.0),
     235_741_434_880),
]


@pytest.mark.parametrize("preset,kw,published", META, ids=[m[0] for m in META])
def test_parameter_counts_equal_transformers_on_meta(preset, kw, published):
    spec = graphformer.load(SPEC, preset=preset)
    with torch.device("meta"):
        ref = T.DeepseekV2ForCausalLM(T.DeepseekV2Config(**kw))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == published
    # and the map covers the reference exactly (shapes only: meta tensors)
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(spec.ir.param_shapes())


@pytest.mark.parametrize("case,padded", [("tiny", False), ("tiny", True),
                                         pytest.param("lite", True, marks=pytest.mark.slow)])
def test_greedy_tokens_equal_transformers_generate(case, padded):
    spec, ref, model = pair(case)
    assert_greedy_tokens(model, ref, *prompts(padded=padded), 30, f"{case}, padded={padded}")


def test_the_cache_holds_the_latent_and_every_step_equals_a_full_recompute():
    spec, ref, model = pair("tiny")
    dec = assert_cached_steps(model, *prompts(padded=True), 12, "deepseek-v2")
    # kv_rank 14 latent as keys, rope_dim 4 rotary key as values, one "head": not heads × (qk + v) per token
    assert [(tuple(s.k.shape), tuple(s.v.shape)) for s in dec.cache.slots] == [((3, 1, 20, 14), (3, 1, 20, 4))] * 3


def test_summary_counts_the_cache_and_the_active_experts():
    from graphformer.analysis.budget import kv_cache_per_token
    from graphformer.analysis.summary import rows
    spec = graphformer.load(SPEC)
    assert kv_cache_per_token(spec.ir, 2) == 27 * (512 + 64) * 2      # bf16: the latent and the rotary key
    table = {r.node: r for r in rows(spec.ir)}
    assert table["blocks.0.attn"].params == 2048 * 3072 + 2048 * 576 + 512 + 512 * 4096 + 2048 * 2048
    expert = 3 * 2048 * 1408
    assert table["blocks.0.moe"].params == 64 * 2048 + 64 * expert
    assert table["blocks.0.moe"].active == 64 * 2048 + 6 * expert


def test_tensor_parallel_plan_splits_heads_and_keeps_the_latent_whole():
    spec = graphformer.load(SPEC, preset="tiny", overrides={"moe_d_ff": 20, "d_ff": 60})   # widths tp 5 divides
    plan = {s.module: s.style for s in derive(spec, 5)}
    assert plan["blocks.0.attn.q_b"] == plan["blocks.0.attn.kv_b"] == "colwise"
    assert plan["blocks.0.attn.o"] == "rowwise"
    assert plan["blocks.0.attn.kv_a"] == plan["blocks.0.attn.q_a"] == "replicate"
    assert plan["blocks.0.shared.gate"] == "colwise" and plan["blocks.0.shared.down"] == "rowwise"
    assert plan["blocks.0.moe.experts.3.up"] == "colwise" and plan["dense.0.mlp.down"] == "rowwise"
    with pytest.raises(graphformer.UsageError, match="heads = 5 does not divide by tp = 2"):
        derive(spec, 2)


def test_onnx_runtime_equals_torch_with_padding():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, ref, model = pair("tiny")
    ids, mask = lm_batch()
    with torch.no_grad():
        want = model(tokens=ids, mask=mask)["logits"]
    assert_onnx_logits(to_onnx(spec, model, inputs=["mask"]), ids, mask, want, "onnx logits")


@pytest.mark.parametrize("case,padded", [("tiny", True), ("lite", False)])
def test_onnx_decoder_with_past_gives_transformers_tokens(case, padded):
    """`export --with-past`: the slot's key is the latent [B, 1, past, kv_rank], its value the rotary key
    [B, 1, past, rope_dim]; ONNX Runtime's greedy loop gives transformers' tokens."""
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    spec, ref, model = pair(case)
    sess = session(to_onnx(spec, model, with_past=True))
    widths = {i.name: (i.shape[1], i.shape[3]) for i in sess.get_inputs() if i.name.startswith("past_key_values")}
    assert widths["past_key_values.0.key"] == (1, 14) and widths["past_key_values.0.value"] == (1, 4)
    ids, mask = prompts(padded=padded)
    assert_same_tokens(OrtDecoder(sess).greedy(ids, mask, 12), hf_greedy(ref, ids, mask, 12)[:, 8:],
                       f"{case} onnx, padded={padded}")


def test_import_hf_config_gives_the_presets(tmp_path):
    tiny = convert_config({"model_type": "deepseek_v2", **ds_cfg()})
    spec = graphformer.load(SPEC, preset="tiny")
    assert not tiny.unread
    for k, v in tiny.params.items():
        assert spec.params[k] == v, k
    lite = json.loads(json.dumps({"model_type": "deepseek_v2", **META[0][1], "first_k_dense_replace": 1,
                                  "rope_scaling": {"type": "yarn", "factor": 40, "mscale": 0.707,
                                                   "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1,
                                                   "original_max_position_embeddings": 4096},
                                  "max_position_embeddings": 163840, "topk_method": "greedy", "n_group": 1,
                                  "topk_group": 1, "scoring_func": "softmax", "aux_loss_alpha": 0.001,
                                  "seq_aux": True, "moe_layer_freq": 1, "rms_norm_eps": 1e-6}))
    got = convert_config(lite)
    defaults = graphformer.load(SPEC).params
    assert {k: defaults[k] for k in got.params} == got.params and not got.unread


@pytest.mark.parametrize("cfg,message", [
    (dict(first_k_dense_replace=0), "at least one dense layer"),
    (dict(topk_method="noaux_tc"), "`topk_method: \"noaux_tc\"`"),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "rope_type `dynamic`"),
    (dict(scoring_func="sigmoid"), "scoring_func"),
])
def test_import_hf_refuses_what_the_spec_cannot_say(cfg, message):
    from graphformer.frontend.hf import HFImportError
    with pytest.raises(HFImportError, match=message.replace("(", r"\(")):
        convert_config({"model_type": "deepseek_v2", **ds_cfg(**cfg)})


@pytest.mark.parametrize("sets,code,where", [
    ({"top_groups": 4}, "GF242", "top_groups"),
    ({"groups": 4}, "GF241", "groups"),
    ({"top_k": 5, "top_groups": 1}, "GF243", "top_k"),
    ({"rope_dim": 5}, "GF240", "rope_dim"),
])
def test_bad_attributes_are_reported_at_their_line(sets, code, where):
    diags = check_file(str(SPEC), preset="tiny", overrides=sets).diagnostics
    hit = [d for d in diags if d.code == code]
    assert hit, [str(d) for d in diags]
    line = SPEC.read_text().splitlines()[hit[0].span.line - 1]
    assert f"{where}:" in line[hit[0].span.col - 1:] or where in line


# ---------------------------------------------------------------- the ops on their own

LA = {"heads": 3, "kv_rank": 10, "nope_dim": 4, "rope_dim": 6, "v_dim": 5}
SHAPES = [   # op, attrs, inputs, expected shape or code
    ("latent_attention", LA, {"x": "B n 16"}, ("B", "n", "16")),
    ("latent_attention", {**LA, "q_rank": 7, "causal": False}, {"x": "B n 16", "mask": "B n bool"}, ("B", "n", "16")),
    ("latent_attention", {**LA, "rope_dim": 3}, {"x": "B n 16"}, "GF240"),
    ("latent_attention", {**LA, "kv_rank": 0}, {"x": "B n 16"}, "GF102"),
    ("latent_attention", LA, {"x": "B 16"}, "GF121"),
    ("latent_attention", LA, {"x": "B n 16", "mask": "B m bool"}, "GF120"),
    ("latent_attention", {**LA, "max_len": 4}, {"x": "B 5 16"}, "GF120"),
    ("latent_attention", LA, {"x": "B n 16", "positions": "B n"}, "GF122"),
]


def _types(spec: dict) -> dict:
    from shape_cases import T as ST
    out = {}
    for port, text in spec.items():
        *dims, last = text.split()
        dtype = {"bool": "bool", "int": "int64"}.get(last)
        dims = dims if dtype else dims + [last]
        out[port] = ST(*[int(d) if d.isdigit() else d for d in dims], dtype=dtype or "float32")
    return out


@pytest.mark.parametrize("op,attrs,ins,expected", SHAPES)
def test_latent_attention_shape_rule(op, attrs, ins, expected):
    from shape_cases import check_case
    check_case(op, attrs, _types(ins), expected)


@pytest.mark.parametrize("attrs", [LA, {**LA, "q_rank": 7, "bias": True}, {**LA, "rope_scaling": "yarn",
                                                                          "rope_factor": 4.0, "rope_mscale": 1.0}])
def test_latent_attention_lowering_params_match_the_registry(attrs):
    from graphformer.backends.torch import LOWERINGS
    from graphformer.ir import IRNode
    from graphformer.ops import REGISTRY
    types = _types({"x": "2 5 16"})
    node = IRNode("n", "latent_attention", REGISTRY["latent_attention"].attrs.model_validate(attrs), {"x": "in.x"},
                  None)
    module = LOWERINGS["latent_attention"](node, types)
    want = {k: tuple(v) for k, v in REGISTRY["latent_attention"].params(node.attrs, types).items()}
    assert {k: tuple(p.shape) for k, p in module.named_parameters()} == want == \
        {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_latent_attention_equals_a_naive_formula():
    """Every head's key is [kv_b(norm(latent)) nope part ; the one rotated shared key], its value the rest;
    rotary turns interleaved pairs by position · inv_freq; softmax(q·kᵀ · scale + causal) · v, then o."""
    from graphformer.backends.torch import LOWERINGS
    from graphformer.ir import IRNode
    from graphformer.ops import REGISTRY
    a = REGISTRY["latent_attention"].attrs.model_validate({**LA, "rope_theta": 50.0})
    m = LOWERINGS["latent_attention"](IRNode("n", "latent_attention", a, {"x": "in.x"}, None), _types({"x": "1 4 16"}))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
        x = torch.randn(1, 4, 16, generator=gen)
        y = m(x)
        h, dn, dr, dv, r = 3, 4, 6, 5, 10
        q = (x[0] @ m.q.weight.T).view(4, h, dn + dr)
        kv = x[0] @ m.kv_a.weight.T
        lat = kv[:, :r] / torch.sqrt(kv[:, :r].pow(2).mean(-1, keepdim=True) + 1e-6) * m.kv_norm.weight
        kvb = (lat @ m.kv_b.weight.T).view(4, h, dn + dv)

        def rot(t, p):   # t (..., dr) at position p: pairs (t0, t1) turned by p / 50^(2i/dr)
            ang = p / 50.0 ** (torch.arange(0, dr, 2).float() / dr)
            c, s = ang.cos(), ang.sin()
            return torch.stack((t[..., 0::2] * c - t[..., 1::2] * s, t[..., 0::2] * s + t[..., 1::2] * c), -1).flatten(-2)
        out = []
        for i in range(4):
            qi = torch.cat((q[i, :, :dn], rot(q[i, :, dn:], i)), -1)                                  # (h, qk)
            keys = torch.stack([torch.cat((kvb[j, :, :dn], rot(kv[j, r:], j).expand(h, dr)), -1) for j in range(i + 1)])
            w = torch.softmax((keys * qi).sum(-1) / (dn + dr) ** 0.5, dim=0)                          # (i+1, h)
            out.append((w[..., None] * kvb[: i + 1, :, dn:]).sum(0).reshape(-1))
        want = torch.stack(out) @ m.o.weight.T
    assert_close(y[0], want, "latent attention vs naive")


def test_mla_and_group_routing_in_onnx_match_torch_with_full_rank_queries():
    """The `lite` form (q_rank 0, greedy) through ONNX Runtime: the tiny preset covers low-rank queries and
    group-limited routing (tests/integration/test_onnx_export.py runs every bundled spec)."""
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, ref, model = pair("lite")
    ids, mask = lm_batch(n=9)
    with torch.no_grad():
        want = model(tokens=ids, mask=mask)["logits"]
    assert_onnx_logits(to_onnx(spec, model, inputs=["mask"]), ids, mask, want, "onnx lite logits")


def test_import_hf_cli_then_checkpoint_weights(tmp_path, capsys):
    """`graphformer import hf` on a save_pretrained config, then the fused in-memory layout's weights."""
    from safetensors.torch import save_file
    from graphformer import cli
    from graphformer.backends.torch.weights import load_weights
    from graphformer.weights.maps import read_state_dict
    spec, ref, model = pair("tiny")
    ref.config.save_pretrained(tmp_path / "ckpt")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "ckpt" / "model.safetensors")
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


DENSE_MLA = """
graphformer: 1
name: dense-mla
params: {d: 24}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  mask: {shape: [B, n], dtype: int64, optional: true}
blocks:
  layer:
    inputs: {x: [B, n, d], mask: [B, n]}
    nodes:
      ln:   {op: norm, in: x, kind: rms}
      attn: {op: latent_attention, in: {x: ln, mask: mask}, heads: 3, q_rank: 8, kv_rank: 10, nope_dim: 4,
             rope_dim: 4, v_dim: 6, rope_scaling: yarn, rope_factor: 4.0, rope_original_max_len: 8,
             rope_mscale: 1.0, max_len: 64}
      res:  {op: residual, in: [x, attn]}
    outputs: {x: res}
nodes:
  tok:    {op: embedding, in: tokens, vocab: 50, dim: d}
  layers: {op: layer, in: {x: tok, mask: mask}, repeat: 2}
  head:   {op: linear, out: 50}
outputs: {logits: head}
"""


@pytest.mark.slow
def test_compiled_decode_step_is_traced_once(tmp_path):
    """The latent attention's decode step (cache update at a tensor index, kv_b expansion over the whole slot)
    traces with fullgraph and is not recompiled for later steps. (A `moe` node cannot: its sparse dispatch
    reads which experts were hit, docs/generation.md.)"""
    pytest.importorskip("torch._dynamo")
    from torch._dynamo.utils import counters
    (tmp_path / "mla.yaml").write_text(DENSE_MLA)
    model = graphformer.build(graphformer.load(tmp_path / "mla.yaml"), seed=0).eval()
    ids, mask = prompts(padded=True)
    ids = ids % 50
    want = graphformer.generate(model, ids, 8, mask=mask)
    torch._dynamo.reset()
    counters.clear()
    got = graphformer.generate(model, ids, 8, mask=mask, compile="eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = graphformer.generate(model, ids, 6, mask=mask, compile="eager")
    assert counters["stats"]["unique_graphs"] == 1
    assert torch.equal(got, want) and torch.equal(again, want[:, :14])
