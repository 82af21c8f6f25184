"""Qwen3 and Qwen3-MoE (one spec, specs/qwen3.yaml) against transformers' Qwen3ForCausalLM and
Qwen3MoeForCausalLM, built offline from tiny, deliberately odd configs with perturbed random weights: 6 heads
sharing 2 kv heads of width 10 (6 · 10 ≠ 40), per-head q/k norm, a window of 4 tokens (shorter than every
sequence here) on the layers from max_window_layers 1 on; for MoE 5 experts of which 2 are kept, unnormalised,
in every second layer (decoder_sparse_step 2), the others dense (and layers listed dense by mlp_only_layers). Logits with and without left padding,
gradients, greedy generation and the cached steps, ONNX Runtime (with and without past), parameter counts on
meta at the published sizes, the per-layer structure, YaRN rotary, and `import hf`."""
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
COMMON = dict(vocab_size=97, hidden_size=40, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
              head_dim=10, intermediate_size=56, max_position_embeddings=64, rms_norm_eps=1e-6,
              rope_parameters={"rope_type": "default", "rope_theta": 500.0}, pad_token_id=0)
DENSE = dict(COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=1, tie_word_embeddings=True)
MOE = dict(COMMON, num_experts=5, num_experts_per_tok=2, moe_intermediate_size=18, norm_topk_prob=False,
           decoder_sparse_step=2)
CASES = {"qwen3": (T.Qwen3ForCausalLM, T.Qwen3Config, DENSE, "tiny"),
         "qwen3_moe": (T.Qwen3MoeForCausalLM, T.Qwen3MoeConfig, MOE, "tiny-moe")}
# transformers leaves an expert no token picked without a gradient: zeros, as ours holds
NONE_IS_ZERO = {"qwen3": False, "qwen3_moe": True}


def reference(case, **kw):
    cls, cfg, base, _ = CASES[case]
    torch.manual_seed(0)
    ref = cls(cfg(**{**base, **kw}, attn_implementation="eager", experts_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # norm weights start at 1: perturb every parameter
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return ref


def pair(case, ref_kw=None, **sets):
    ref = reference(case, **(ref_kw or {}))
    spec = graphformer.load(SPECS / "qwen3.yaml", preset=CASES[case][3], overrides=sets)
    return spec, ref, ours(spec, ref)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers_with_and_without_padding(case):
    spec, ref, model = pair(case)
    assert_lm_logits(model, ref, *lm_batch(), case)


def test_moe_with_layers_listed_dense_equals_transformers():
    """mlp_only_layers keeps layers 0 and 2 dense though decoder_sparse_step 1 makes every layer sparse."""
    spec, ref, model = pair("qwen3_moe", dict(decoder_sparse_step=1, mlp_only_layers=[0, 2]), sparse_step=1,
                            mlp_only_layers=[0, 2])
    names = {n.name for n in spec.ir.nodes()}
    assert [f"blocks.{i}.mlp.moe" in names for i in range(3)] == [False, True, False]
    assert_lm_logits(model, ref, *lm_batch(), "qwen3_moe mlp_only_layers")


def test_moe_with_renormalised_weights_and_a_window_on_every_layer_equals_transformers():
    """Qwen3-MoE's window (use_sliding_window) covers every layer; norm_topk_prob renormalises the kept two."""
    spec, ref, model = pair("qwen3_moe", dict(norm_topk_prob=True, use_sliding_window=True, sliding_window=4),
                            normalize=True, sliding_window=4)
    assert_lm_logits(model, ref, *lm_batch(), "qwen3_moe normalised, windowed")


YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 500.0}


@pytest.mark.parametrize("extra,sets", [({}, {}), ({"beta_fast": 6.0, "truncate": False, "mscale": 0.8,
                                                     "mscale_all_dim": 1.2},
                                                    {"rope_beta_fast": 6.0, "rope_truncate": False, "rope_mscale": 0.8,
                                                     "rope_mscale_all_dim": 1.2})])
def test_yarn_rotary_equals_transformers(extra, sets):
    """Qwen3's long-context setting: YaRN (factor 4 over an original 16 positions here, so it bites at 11)."""
    spec, ref, model = pair("qwen3", dict(rope_parameters={**YARN, **extra}), rope_scaling="yarn", rope_factor=4.0,
                            rope_original_max_len=16, **sets)
    assert_lm_logits(model, ref, *lm_batch(), f"qwen3 yarn {extra}")
    with torch.no_grad():
        plain = ours(graphformer.load(SPECS / "qwen3.yaml", preset="tiny"), ref)(tokens=lm_batch()[0])["logits"]
        assert (model(tokens=lm_batch()[0])["logits"] - plain).abs().max() > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_transformers(case):
    spec, ref, model = pair(case)
    assert_lm_grads(model, ref, spec, lm_batch()[0], case, none_is_zero=NONE_IS_ZERO[case])


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_tokens_equal_transformers_generate_and_cached_steps_equal_recompute(case):
    spec, ref, model = pair(case)
    for padded in (False, True):
        assert_greedy_tokens(model, ref, *prompts(padded=padded), 20, f"{case}, padded={padded}")
    assert_cached_steps(model, *prompts(padded=True), 16, case)


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_runtime_through_the_weight_map_equals_transformers(case):
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, ref, _ = pair(case)
    ids, mask = lm_batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert_onnx_logits(to_onnx(spec, ref.state_dict(), weights_map="hf", inputs=["mask"]), ids, mask, want,
                       f"{case} onnx logits")


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_decoder_step_with_past_gives_transformers_greedy_tokens(case):
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    spec, ref, _ = pair(case)
    dec = OrtDecoder(session(to_onnx(spec, ref.state_dict(), weights_map="hf", with_past=True)))
    ids, mask = prompts(padded=True)
    assert_same_tokens(dec.greedy(ids, mask, 16), hf_greedy(ref, ids, mask, 16)[:, 8:], f"{case} onnx")


# the published configs (the hub's config.json), as keyword overrides of the classes' defaults
PUBLISHED = dict(vocab_size=151936, max_position_embeddings=40960, head_dim=128, rope_theta=1e6)
META = [
    (None, T.Qwen3ForCausalLM, T.Qwen3Config,
     dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
          num_key_value_heads=8), 8_190_735_360),
    ("qwen3-0.6b", T.Qwen3ForCausalLM, T.Qwen3Config,
     dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
          num_key_value_heads=8, tie_word_embeddings=True), 596_049_920),
    ("qwen3-30b-a3b", T.Qwen3MoeForCausalLM, T.Qwen3MoeConfig,
     dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=48, num_attention_heads=32,
          num_key_value_heads=4, num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768,
          norm_topk_prob=True), 30_532_122_624),
    ("qwen3-235b-a22b", T.Qwen3MoeForCausalLM, T.Qwen3MoeConfig,
     dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=94, num_attention_heads=64,
          num_key_value_heads=4, num_experts=128, num_experts_per_tok=8, moe_intermediate_size=1536,
          norm_topk_prob=True), 235_093_634_560),
]


@pytest.mark.parametrize("preset,cls,cfg,kw,published", META, ids=[str(m[0]) for m in META])
def test_parameter_counts_equal_transformers_on_meta(preset, cls, cfg, kw, published):
    spec = graphformer.load(SPECS / "qwen3.yaml", preset=preset)
    with torch.device("meta"):
        ref = cls(cfg(**PUBLISHED, **kw))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == published
    if preset != "qwen3-235b-a22b":   # the map's names for every parameter (94 · 128 experts: slow, same rules)
        assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(
            dict(graphformer.build(spec, device="meta").named_parameters()))


def test_per_layer_structure_follows_transformers_layer_types_and_sparse_step():
    """Windows on the layers transformers' layer_types calls sliding; experts where decoder_sparse_step puts them."""
    spec = graphformer.load(SPECS / "qwen3.yaml", overrides={"layers": 6, "sliding_window": 64, "window_from": 4})
    windows = [spec.ir.node(f"blocks.{i}.attn").attrs.window for i in range(6)]
    types = T.Qwen3Config(num_hidden_layers=6, use_sliding_window=True, sliding_window=64,
                          max_window_layers=4).layer_types
    assert windows == [64 if t == "sliding_attention" else None for t in types]
    spec = graphformer.load(SPECS / "qwen3.yaml", preset="tiny-moe", overrides={"layers": 6, "sparse_step": 3})
    names = {n.name for n in spec.ir.nodes()}
    sparse = [i for i in range(6) if f"blocks.{i}.mlp.moe" in names]
    with torch.device("meta"):
        ref = T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(**{**MOE, "num_hidden_layers": 6, "decoder_sparse_step": 3}))
    assert sparse == [i for i, layer in enumerate(ref.model.layers) if hasattr(layer.mlp, "experts")] == [2, 5]


def test_q_k_norm_and_the_window_bite():
    """Without the per-head norms, or with a window as long as the sequence, the same weights give other logits."""
    ids, _ = lm_batch(n=12)
    spec, ref, model = pair("qwen3")
    with torch.no_grad():
        base = model(tokens=ids)["logits"]
        other = ours(graphformer.load(SPECS / "qwen3.yaml", preset="tiny", overrides={"sliding_window": 64}), ref)
        assert (other(tokens=ids)["logits"] - base).abs().max() > 1e-3
        for i in range(3):
            model.node_module(f"blocks.{i}.attn").q_norm.weight.fill_(1.0)
        assert (model(tokens=ids)["logits"] - base).abs().max() > 1e-3


def test_weight_map_round_trip_is_exact():
    spec, ref, model = pair("qwen3_moe")
    back = to_reference(spec, dict(model.state_dict()), "hf", ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back[k], v), k


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_import_hf_of_a_saved_checkpoint_equals_transformers(tmp_path, capsys, case):
    """`graphformer import hf` on save_pretrained's directory: no warning, the weights load through the map."""
    ref = reference(case)
    spec, model = imported(ref, tmp_path, capsys)
    assert_lm_logits(model, ref, *lm_batch(), f"{case} imported")


def _import(tmp_path, capsys, cfg):
    from graphformer.cli import main
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rc = main(["import", "hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "spec.yaml")])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, err


@pytest.mark.parametrize("extra,word", [
    ({"model_type": "qwen3", "layer_types": ["sliding_attention", "full_attention", "full_attention"],
      "use_sliding_window": True}, "layer_types"),
    ({"model_type": "qwen3", "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 500.0}},
     "rope"),
])
def test_import_hf_refuses_what_the_spec_cannot_say(tmp_path, capsys, extra, word):
    base = MOE if extra["model_type"] == "qwen3_moe" else DENSE
    rc, err = _import(tmp_path, capsys, {**base, **extra})
    assert rc == 1 and word in err, err


def test_import_hf_reads_the_window_and_the_experts(tmp_path, capsys):
    rc, err = _import(tmp_path, capsys, {"model_type": "qwen3", **DENSE})
    assert rc == 0, err
    spec = graphformer.load(tmp_path / "spec.yaml")
    assert [spec.ir.node(f"blocks.{i}.attn").attrs.window for i in range(3)] == [None, 4, 4]
    rc, err = _import(tmp_path, capsys, {"model_type": "qwen3", **DENSE, "rope_parameters": YARN})
    assert rc == 0, err
    attn = graphformer.load(tmp_path / "spec.yaml").ir.node("blocks.0.attn").attrs
    assert (attn.rope_scaling, attn.rope_factor, attn.rope_original_max_len) == ("yarn", 4.0, 16)
    rc, err = _import(tmp_path, capsys, {"model_type": "qwen3_moe", **MOE})
    assert rc == 0, err
    spec = graphformer.load(tmp_path / "spec.yaml")
    names = {n.name for n in spec.ir.nodes()}
    assert [f"blocks.{i}.mlp.moe" in names for i in range(3)] == [False, True, False]
    assert spec.ir.node("blocks.1.mlp.moe").attrs.normalize is False
    rc, err = _import(tmp_path, capsys, {"model_type": "qwen3_moe", **MOE, "decoder_sparse_step": 1,
                                         "mlp_only_layers": [1]})
    assert rc == 0, err
    names = {n.name for n in graphformer.load(tmp_path / "spec.yaml").ir.nodes()}
    assert [f"blocks.{i}.mlp.moe" in names for i in range(3)] == [True, False, True]


# ---------------------------------------------------------------- the language features Qwen3-MoE brought

def test_block_param_names_the_block_a_layer_calls_with_membership_in_a_list(tmp_path):
    """A quoted string as a block param's default, chosen per layer with `repeat_index not in LIST`; the params
    of a block no layer calls still count as read (no GF113); `in` on a non-list is GF222 at its position."""
    from graphformer.base.diagnostics import SpecError
    text = ("graphformer: 1\nname: case\ndims: {B: 2, n: 5}\n"
            "params: {d: 8, wide: 16, narrow: 4, dense: [1, 3], layers: 4}\n"
            "inputs: {x: {shape: [B, n, d]}}\nblocks:\n"
            "  big:\n    inputs: {x: [B, n, d]}\n    nodes:\n      up: {op: linear, out: wide}\n"
            "      down: {op: linear, out: d}\n    outputs: {x: down}\n"
            "  small:\n    inputs: {x: [B, n, d]}\n    nodes:\n      up: {op: linear, out: narrow}\n"
            "      down: {op: linear, out: d}\n    outputs: {x: down}\n"
            "  layer:\n    params: {ffn: \"'small'\"}\n    inputs: {x: [B, n, d]}\n"
            "    nodes:\n      f: {op: ffn}\n    outputs: {x: f}\n"
            "nodes:\n  blocks: {op: layer, repeat: layers, ffn: \"'small' if repeat_index in dense else 'big'\"}\n"
            "outputs: {y: blocks}\n")
    path = tmp_path / "case.yaml"
    path.write_text(text)
    spec = graphformer.load(path)
    widths = [spec.ir.node(f"blocks.{i}.f.up").attrs.out for i in range(4)]
    assert widths == [16, 4, 16, 4]
    path.write_text(text.replace("dense: [1, 3]", "dense: [0, 1, 2, 3]"))   # `big` is called nowhere
    from graphformer.frontend.check import check_file
    assert not [d for d in check_file(str(path)).diagnostics if d.code == "GF113"]
    path.write_text(text.replace("in dense", "in layers"))
    with pytest.raises(SpecError) as e:
        graphformer.load(path)
    assert [d.code for d in e.value.diagnostics if d.is_error] == ["GF222"]
