"""GPT-NeoX (Pythia) and BLOOM against transformers, built offline from tiny odd configs with perturbed random
weights and loaded through each spec's own `hf` map: logits with and without padding (BLOOM's ALiBi also
with a hole in the mask), gradients, greedy generation with the KV cache, ONNX Runtime with and without
past keys, parameter counts at the published sizes on meta. And the two halves of the issue's finding:
ALiBi's slopes, and fused weight maps that must state their layout (`split: blocks | heads`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.backends.tables import alibi_slopes  # noqa: E402
from graphformer.weights.maps import convert_state_dict, to_reference  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from parity import (assert_cached_steps, assert_close, assert_greedy_tokens, assert_lm_grads,  # noqa: E402
                    assert_lm_logits, assert_same_tokens, hf_greedy, imported, lm_batch, ours, prompts)

T = transformers
T.logging.set_verbosity_error()
SPECS = Path(__file__).resolve().parents[2] / "specs"
V = 97


def neox_cfg(**kw):
    return {**dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, intermediate_size=56,
                   max_position_embeddings=64, layer_norm_eps=1e-5, tie_word_embeddings=False,
                   rope_parameters={"rope_type": "default", "rope_theta": 300.0, "partial_rotary_factor": 0.5}), **kw}


# (spec, --set overrides, reference class, config)
CASES = {
    "neox": ("gpt-neox", {}, T.GPTNeoXForCausalLM, T.GPTNeoXConfig, neox_cfg()),
    "neox-sequential": ("gpt-neox", {"layer": "sequential_layer", "heads": 4, "rope_dims": 10},
                        T.GPTNeoXForCausalLM, T.GPTNeoXConfig,
                        neox_cfg(use_parallel_residual=False, num_attention_heads=4,
                                 rope_parameters={"rope_type": "default", "rope_theta": 300.0,
                                                  "partial_rotary_factor": 1.0})),
    "bloom": ("bloom", {}, T.BloomForCausalLM, T.BloomConfig, dict(vocab_size=V, hidden_size=36, n_layer=2, n_head=6)),
    "bloom-5-heads": ("bloom", {"heads": 5, "d_model": 40}, T.BloomForCausalLM, T.BloomConfig,
                      dict(vocab_size=V, hidden_size=40, n_layer=2, n_head=5)),
}


def reference(case):
    _, _, cls, cfg_cls, kw = CASES[case]
    torch.manual_seed(0)
    ref = cls(cfg_cls(**kw))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():   # norm scales and biases away from 1 and 0, so a wrong map can't hide
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return ref.eval()


def pair(case):
    name, sets = CASES[case][:2]
    ref = reference(case)
    spec = graphformer.load(SPECS / f"{name}.yaml", preset="tiny", overrides=sets)
    return spec, ref, ours(spec, ref)


# ---------------------------------------------------------------- ALiBi's slopes

@pytest.mark.parametrize("heads", [1, 2, 3, 5, 6, 8, 12, 16, 20, 48, 112])
def test_alibi_slopes_are_blooms(heads):
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes
    want = _get_alibi_slopes(heads, "cpu").numpy()
    got = alibi_slopes(heads)
    assert got.dtype == np.float32 and got.shape == (heads,)
    # torch's float32 pow may differ from the correctly rounded power in the last bit
    np.testing.assert_allclose(got, want, rtol=1.2e-7, atol=0)


# ---------------------------------------------------------------- forward and backward

@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers_with_and_without_padding(case):
    spec, ref, model = pair(case)
    ids, mask = lm_batch(V)
    holed = mask.clone()
    holed[0, 5] = 0   # a hole: BLOOM's positions count the real tokens only
    with torch.no_grad():
        assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits, f"{case} logits")
        for m, what in [(mask, "left-padded"), (holed, "with a hole")]:
            got, want = model(tokens=ids, mask=m)["logits"], ref(input_ids=ids, attention_mask=m).logits
            keep = m.bool()    # padded positions' outputs are meaningless in both
            assert_close(got[keep], want[keep], f"{case} logits, {what}")


@pytest.mark.parametrize("case", ["neox", "bloom"])
def test_gradients_equal_transformers(case):
    spec, ref, model = pair(case)
    ids, mask = lm_batch(V)
    assert_lm_grads(model, ref, spec, ids, case, mask=mask)


# ---------------------------------------------------------------- generation

@pytest.mark.slow
@pytest.mark.parametrize("case,padded", [("neox", False), ("neox", True), ("bloom", False), ("bloom", True),
                                         ("bloom-5-heads", True)])
def test_greedy_tokens_equal_transformers_generate(case, padded):
    spec, ref, model = pair(case)
    assert_greedy_tokens(model, ref, *prompts(padded=padded), 30, f"{case}, padded={padded}")


def test_bloom_cached_steps_equal_a_full_recompute():
    """ALiBi in the cache: each new query against every cached key, positions counted over real tokens."""
    spec, ref, model = pair("bloom")
    assert_cached_steps(model, *prompts(padded=True), 12, "bloom")


# ---------------------------------------------------------------- ONNX

@pytest.mark.parametrize("name", ["bloom", "gpt-neox"])
def test_onnx_runtime_equals_torch_with_a_padding_mask(name):
    ort = pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    case = "bloom" if name == "bloom" else "neox"
    spec, ref, model = pair(case)
    sess = ort.InferenceSession(to_onnx(spec, model, inputs=["mask"]).SerializeToString(), providers=["CPUExecutionProvider"])
    ids, mask = lm_batch(V)
    mask[0, 5] = 0
    for n in (11, 4):
        feed = {"tokens": ids[:, :n].numpy(), "mask": mask[:, :n].numpy()}
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, sess.run(None, feed)))["logits"]
        with torch.no_grad():
            want = model(tokens=ids[:, :n], mask=mask[:, :n])["logits"]
        keep = mask[:, :n].bool().numpy()
        assert_close(torch.from_numpy(got[keep]), want[mask[:, :n].bool()], f"{name} onnx n={n}")


def test_onnx_with_past_bloom_greedy_tokens_equal_transformers():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    spec, ref, _ = pair("bloom")
    dec = OrtDecoder(session(to_onnx(spec, ref.state_dict(), weights_map="hf", with_past=True)))
    ids, mask = prompts(padded=True)
    assert_same_tokens(dec.greedy(ids, mask, 12), hf_greedy(ref, ids, mask, 12)[:, 8:], "bloom onnx")


# ---------------------------------------------------------------- counts at the published sizes

@pytest.mark.parametrize("name,cls,cfg,published", [
    ("gpt-neox", "GPTNeoXForCausalLM", dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                                            num_attention_heads=8, intermediate_size=2048), 70_426_624),
    ("bloom", "BloomForCausalLM", dict(vocab_size=250880, hidden_size=1024, n_layer=24, n_head=16), 559_214_592),
])
def test_parameter_counts_equal_transformers_on_meta(name, cls, cfg, published):
    spec = graphformer.load(SPECS / f"{name}.yaml")
    with torch.device("meta"):
        ref = getattr(T, cls)(getattr(T, cls.replace("ForCausalLM", "Config"))(**cfg))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == published
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(
        dict(graphformer.build(spec, device="meta").named_parameters()))


# ---------------------------------------------------------------- the weight map's split layouts

def _with_split(name: str, old: str, new: str, tmp_path) -> Path:
    text = (SPECS / f"{name}.yaml").read_text().replace(old, new)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_the_gpt2_style_split_loads_neox_silently_wrong(tmp_path):
    """The issue's finding, kept visible: `split: blocks` on a per-head layout loads and is wrong."""
    spec, ref, model = pair("neox")
    wrong = graphformer.load(_with_split("gpt-neox", "split: heads, heads: heads", "split: blocks", tmp_path),
                             preset="tiny")
    ids, _ = lm_batch(V)
    with torch.no_grad():
        want = ref(input_ids=ids).logits
        bad = ours(wrong, ref)(tokens=ids)["logits"]
    assert (bad - want).abs().max() > 0.1


def test_a_fused_split_without_a_layout_is_gf225_at_its_line(tmp_path):
    path = _with_split("bloom", "split: heads, heads: heads,\n", "\n", tmp_path)
    with pytest.raises(SpecError) as e:
        graphformer.load(path, preset="tiny")
    d = e.value.diagnostics[0]
    assert d.code == "GF225" and d.span.line > 0 and d.span.col > 0


@pytest.mark.parametrize("case", ["neox", "bloom"])
def test_to_reference_round_trip_is_bit_identical(case):
    spec, ref, model = pair(case)
    sd = {k: v.detach() for k, v in ref.state_dict().items()}
    back = to_reference(spec, convert_state_dict(spec, sd, "hf"), "hf", reference=sd)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert torch.equal(back[k], v), k


def test_split_heads_on_numpy_weight_and_bias(tmp_path):
    """[heads, 3, head_dim] rows: part k of head h is rows h·3·hd + k·hd ... + hd; the inverse gives them back."""
    text = """\
graphformer: 1
name: t
params: {d: 12, heads: 2}
inputs: {x: {shape: [2, 3, d]}}
nodes:
  attn: {op: attention, heads: heads}
outputs: {y: attn}
weight_maps:
  ref:
    rules:
      - {from: qkv.w, split: heads, heads: heads, to: [attn.q.weight, attn.k.weight, attn.v.weight]}
      - {from: qkv.b, split: heads, heads: heads, to: [attn.q.bias, attn.k.bias, attn.v.bias]}
      - {from: o.w, to: attn.o.weight}
      - {from: o.b, to: attn.o.bias}
"""
    (tmp_path / "t.yaml").write_text(text)
    spec = graphformer.load(tmp_path / "t.yaml")
    w = np.arange(36 * 12, dtype=np.float32).reshape(36, 12)
    b = np.arange(36, dtype=np.float32)
    sd = {"qkv.w": w, "qkv.b": b, "o.w": np.zeros((12, 12), np.float32), "o.b": np.zeros(12, np.float32)}
    out = convert_state_dict(spec, sd, "ref")
    rows = b.reshape(2, 3, 6)
    for k, part in enumerate("qkv"):
        np.testing.assert_array_equal(out[f"attn.{part}.bias"], rows[:, k].reshape(12))
        np.testing.assert_array_equal(out[f"attn.{part}.weight"], w.reshape(2, 3, 6, 12)[:, k].reshape(12, 12))
    back = to_reference(spec, out, "ref", reference=sd)
    assert all(np.array_equal(back[k], sd[k]) for k in sd)


# ---------------------------------------------------------------- import hf

@pytest.mark.parametrize("case", ["neox", "neox-sequential", "bloom-5-heads"])
def test_import_hf_then_checkpoint_equals_transformers(case, tmp_path, capsys):
    ref = reference(case)
    spec, model = imported(ref, tmp_path, capsys)
    assert_lm_logits(model, ref, *lm_batch(V), f"{case} imported")
