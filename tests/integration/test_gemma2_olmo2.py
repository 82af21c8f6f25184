"""Gemma-2 and OLMo-2 against transformers (Gemma2ForCausalLM, Olmo2ForCausalLM), built offline from tiny,
deliberately odd configs with perturbed random weights (no norm weight at its init): logits with and
without left padding, gradients, greedy generation with the KV cache, ONNX Runtime, parameter counts
on meta at the published configs. Then the language features they brought, one at a time: the
attention soft-cap and its bite, the bidirectional window against transformers' mask function, q/k
norm over the whole projection, per-layer expressions and lists, `when` on an expression, and the
switched-off node that passes its input through."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from parity import (assert_close, assert_greedy_tokens, assert_lm_grads, assert_lm_logits,  # noqa: E402
                    assert_onnx_logits, lm_batch, ours, prompts)

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"

# tiny and odd: 3 heads sharing 1 kv head, head_dim 10 (3 · 10 ≠ 42), window 4 < the sequence, a soft-cap
# of 2 that bites (the scaled logits reach well past it), query scale 10^-0.5 ≠ head_dim^-0.5
GEMMA2 = dict(vocab_size=97, hidden_size=42, num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=1,
              head_dim=10, intermediate_size=56, max_position_embeddings=64, sliding_window=4,
              query_pre_attn_scalar=10, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
              rms_norm_eps=1e-6, rope_theta=500.0, pad_token_id=0)
OLMO2 = dict(vocab_size=97, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=1,
             intermediate_size=56, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=500.0, pad_token_id=0)
CASES = {
    "gemma2": (T.Gemma2ForCausalLM, T.Gemma2Config, GEMMA2),
    "olmo2": (T.Olmo2ForCausalLM, T.Olmo2Config, OLMO2),
}


def reference(case, **kw):
    cls, cfg, base = CASES[case]
    torch.manual_seed(0)
    # eager: transformers' SDPA path has no soft-cap (Gemma2 refuses it)
    ref = cls(cfg(**{**base, **kw}, attn_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # Gemma's norm weights start at 0 (1 + w = 1): perturb every parameter
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return ref


def pair(case, **sets):
    ref = reference(case)
    spec = graphformer.load(SPECS / f"{case}.yaml", preset="tiny", overrides=sets)
    return spec, ref, ours(spec, ref)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers_with_and_without_padding(case):
    spec, ref, model = pair(case)
    ids, mask = lm_batch()
    assert_lm_logits(model, ref, ids, mask, case)


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_transformers(case):
    spec, ref, model = pair(case)
    assert_lm_grads(model, ref, spec, lm_batch()[0], case)


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_tokens_equal_transformers_generate(case):
    spec, ref, model = pair(case)
    for padded in (False, True):
        assert_greedy_tokens(model, ref, *prompts(padded=padded), 20, f"{case}, padded={padded}")


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


META = [("gemma2", None, "Gemma2ForCausalLM", "Gemma2Config", {}, 2_614_341_888),
        ("gemma2", "gemma-2-9b", "Gemma2ForCausalLM", "Gemma2Config",
         dict(hidden_size=3584, num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8,
              intermediate_size=14336), 9_241_705_984),
        ("olmo2", None, "Olmo2ForCausalLM", "Olmo2Config",
         dict(vocab_size=100352, max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=500000.0),
         7_298_617_344)]


@pytest.mark.parametrize("name,preset,cls,cfg,kw,published", META, ids=[f"{m[0]}-{m[1]}" for m in META])
def test_parameter_counts_equal_transformers_on_meta(name, preset, cls, cfg, kw, published):
    spec = graphformer.load(SPECS / f"{name}.yaml", preset=preset)
    with torch.device("meta"):
        ref = getattr(T, cls)(getattr(T, cfg)(**kw))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == published
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(
        dict(graphformer.build(spec, device="meta").named_parameters()))


def test_layers_alternate_sliding_and_global_as_transformers_layer_types():
    spec = graphformer.load(SPECS / "gemma2.yaml", preset="gemma-2-9b")
    windows = [spec.ir.node(f"blocks.{i}.attn").attrs.window for i in range(42)]
    types = T.Gemma2Config(num_hidden_layers=42).layer_types
    assert windows == [4096 if t == "sliding_attention" else None for t in types]


def test_soft_caps_and_the_window_bite():
    """Without the caps, or with a window as long as the sequence, the same weights give other logits."""
    ids, _ = lm_batch(n=12)
    ref = reference("gemma2")
    with torch.no_grad():
        base = ours(graphformer.load(SPECS / "gemma2.yaml", preset="tiny"), ref)(tokens=ids)["logits"]
        for sets in ({"attn_softcap": 1e6}, {"final_softcap": 1e6}, {"sliding_window": 64}):
            other = ours(graphformer.load(SPECS / "gemma2.yaml", preset="tiny", overrides=sets), ref)
            assert (other(tokens=ids)["logits"] - base).abs().max() > 1e-3, sets


# ---------------------------------------------------------------- the language features, one at a time

def write(tmp_path, text: str) -> Path:
    path = tmp_path / "case.yaml"
    path.write_text("graphformer: 1\nname: case\ndims: {B: 2, n: 9}\n" + text)
    return path


def codes_at(path, **kw) -> list[tuple[str, int, int]]:
    with pytest.raises(SpecError) as e:
        graphformer.load(path, **kw)
    return [(d.code, d.span.line, d.span.col) for d in e.value.diagnostics if d.is_error]


def test_bidirectional_window_is_transformers_sliding_window_bidirectional_overlay(tmp_path):
    """ModernBERT's local layers: |i − j| ≤ local_attention // 2, i.e. `window: local_attention // 2 + 1`."""
    from transformers.masking_utils import sliding_window_bidirectional_overlay
    path = write(tmp_path, "params: {d: 24}\ninputs: {x: {shape: [B, n, d]}}\n"
                           "nodes: {attn: {op: attention, heads: 2, window: 3}}\noutputs: {y: attn}\n")
    model = graphformer.build(graphformer.load(path), seed=0).eval()
    attn = model.node_module("attn")
    x = torch.randn(2, 9, 24, generator=torch.Generator().manual_seed(0))
    inside = sliding_window_bidirectional_overlay(2)
    keep = torch.tensor([[inside(0, 0, i, j) for j in range(9)] for i in range(9)])
    q, k, v = (getattr(attn, p)(x).view(2, 9, 2, 12).transpose(1, 2) for p in "qkv")
    want = attn.o(torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
                  .transpose(1, 2).reshape(2, 9, 24))
    with torch.no_grad():
        assert_close(model(x=x)["y"], want.detach(), "bidirectional window")


def test_softcap_must_be_positive_at_its_position(tmp_path):
    path = write(tmp_path, "params: {d: 24, cap: 0.0}\ninputs: {x: {shape: [B, n, d]}}\nnodes:\n"
                           "  attn: {op: attention, heads: 2, softcap: -1.0}\n"
                           "  out:  {op: softcap, in: x, cap: cap}\noutputs: {y: attn, z: out}\n")
    assert codes_at(path) == [("GF220", 7, 44), ("GF220", 8, 35)]


def test_per_layer_list_indexed_by_repeat_index(tmp_path):
    text = ("params: {d: 24, layers: 3, windows: [2, 0, 5], kinds: [local, global, local]}\n"
            "inputs: {x: {shape: [B, n, d]}}\nblocks:\n  layer:\n    params: {window: 0, first: false}\n"
            "    inputs: {x: [B, n, d]}\n    nodes:\n"
            "      ln:   {op: norm, when: not first}\n"
            "      attn: {op: attention, heads: 2, window: window}\n"
            "    outputs: {x: attn}\n"
            "nodes:\n  blocks: {op: layer, repeat: layers, window: 'windows[repeat_index]',\n"
            "           first: \"repeat_index == 0 and kinds[repeat_index] == 'local'\"}\noutputs: {y: blocks}\n")
    spec = graphformer.load(write(tmp_path, text))
    assert [spec.ir.node(f"blocks.{i}.attn").attrs.window for i in range(3)] == [2, None, 5]
    # layer 0's norm is switched off and passes x through to the attention
    assert "blocks.0.ln" not in {n.name for n in spec.ir.nodes()} and "blocks.1.ln" in {n.name for n in spec.ir.nodes()}
    assert spec.ir.node("blocks.0.attn").inputs["x"] == "x"
    assert codes_at(write(tmp_path, text), overrides={"layers": 4}) == [("GF221", 15, 48), ("GF221", 16, 42)]
    # a per-layer list set with the repeat count: as a list, or as --set's comma-separated text
    for windows in ([3, 3, 0, 0], "3,3,0,0"):
        spec = graphformer.load(write(tmp_path, text), overrides={"layers": 4, "windows": windows,
                                                                   "kinds": ["local"] * 4})
        assert [spec.ir.node(f"blocks.{i}.attn").attrs.window for i in range(4)] == [3, 3, None, None]


def test_when_takes_a_boolean_expression_and_refuses_a_number(tmp_path):
    text = ("params: {d: 24, layers: 2}\ninputs: {x: {shape: [B, n, d]}}\nblocks:\n  layer:\n"
            "    params: {index: 0}\n    inputs: {x: [B, n, d]}\n    nodes:\n"
            "      ln:  {op: norm, when: index > 0}\n      lin: {op: linear, out: d}\n    outputs: {x: lin}\n"
            "nodes:\n  blocks: {op: layer, repeat: layers, index: repeat_index}\noutputs: {y: blocks}\n")
    spec = graphformer.load(write(tmp_path, text))
    assert [n.name for n in spec.ir.nodes() if n.op == "norm"] == ["blocks.1.ln"]
    assert codes_at(write(tmp_path, text.replace("index > 0", "index + 1"))) == [("GF201", 11, 29)]
    assert codes_at(write(tmp_path, text.replace("index > 0", "index > 0 and 3"))) == [("GF222", 11, 43)]


def test_qk_norm_over_the_whole_projection_differs_from_per_head(tmp_path):
    """OLMo-2's norm sees all heads at once: its weight spans heads·head_dim (kv_heads·head_dim for k)."""
    spec = graphformer.load(SPECS / "olmo2.yaml", preset="tiny")
    shapes = {k: tuple(v.shape) for k, v in graphformer.build(spec, device="meta").named_parameters()}
    assert shapes["blocks.0.attn.q_norm.weight"] == (40,) and shapes["blocks.0.attn.k_norm.weight"] == (8,)


def test_embedding_scale_is_rounded_to_the_table_dtype_as_transformers():
    """Gemma's sqrt(3072) is 55.5 in bfloat16 (transformers casts its embed_scale to the weight's dtype)."""
    from graphformer.backends.torch.core import scaled
    y = torch.ones(2, dtype=torch.bfloat16)
    assert scaled(y, 3072 ** 0.5)[0].item() == 55.5
    assert scaled(y.float(), 3072 ** 0.5)[0].item() == torch.tensor(3072 ** 0.5).item()
