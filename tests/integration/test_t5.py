"""T5 (issue 13): the relative position bias against transformers' `T5Attention`, then the spec
(specs/t5-base.yaml) against `T5ForConditionalGeneration`: parameter counts on the meta device, outputs at
tiny odd configurations, the weight map, ONNX."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from graphformer.backends.tables import relative_position_buckets

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

from graphformer.base.dims import Dim  # noqa: E402
from graphformer.ir import IRNode  # noqa: E402
from graphformer.ops import REGISTRY  # noqa: E402
from graphformer.ops.base import TensorType  # noqa: E402
from graphformer.backends.torch import LOWERINGS  # noqa: E402


def their_buckets(rel, buckets, max_distance, causal):
    return T5Attention._relative_position_bucket(torch.as_tensor(rel), not causal, buckets, max_distance).numpy()


@pytest.mark.parametrize("causal", [False, True])
def test_published_buckets_equal_transformers(causal):
    """T5, mT5, Flan-T5: 32 buckets, max distance 128; distances far past it share the end buckets."""
    rel = np.arange(-600, 601)
    ours = relative_position_buckets(32, 128, causal)[np.clip(rel, -128, 128) + 128]
    assert (ours == their_buckets(rel, 32, 128, causal)).all()


def test_buckets_differ_from_transformers_only_where_float32_rounding_decides():
    """Over a grid of small configurations the table equals transformers' buckets, except where the exact
    bucket value is an integer and float32 logarithms (numpy's vs torch's) round it either way."""
    odd = []
    for buckets in range(2, 36):
        for max_distance in (*range(2, 24), 27, 31, 40, 49, 64):
            for causal in (False, True):
                exact = (buckets if causal else buckets // 2) // 2
                if exact < 1 or max_distance <= exact:
                    continue
                rel = np.arange(-max_distance - 3, max_distance + 4)
                ours = relative_position_buckets(buckets, max_distance, causal)[np.clip(rel, -max_distance,
                                                                                         max_distance) + max_distance]
                theirs = their_buckets(rel, buckets, max_distance, causal)
                for r in rel[ours != theirs]:
                    per_side = buckets if causal else buckets // 2
                    real = exact + math.log(abs(r) / exact) / math.log(max_distance / exact) * (per_side - exact)
                    assert abs(real - round(real)) < 1e-5, (buckets, max_distance, causal, r, real)
                    odd.append((buckets, max_distance, causal, int(r)))
    assert len(odd) < 20, odd


def _bias_module(heads, buckets, max_distance, causal, n):
    attrs = REGISTRY["relative_position_bias"].attrs(heads=heads, buckets=buckets, max_distance=max_distance,
                                                     causal=causal)
    types = {"x": TensorType((Dim.const(2), Dim.const(n), Dim.const(8)))}
    return LOWERINGS["relative_position_bias"](IRNode("bias", "relative_position_bias", attrs, {"x": "x"}, None),
                                               types)


def _reference(heads, buckets, max_distance, causal):
    cfg = transformers.T5Config(num_heads=heads, d_model=8, d_kv=4, relative_attention_num_buckets=buckets,
                                relative_attention_max_distance=max_distance, is_decoder=causal)
    return T5Attention(cfg, has_relative_attention_bias=True, layer_idx=0)


@pytest.mark.parametrize("heads,buckets,max_distance,causal,n", [
    (3, 8, 20, False, 27), (5, 7, 11, True, 30), (12, 32, 128, False, 300), (1, 4, 3, True, 9),
])
def test_bias_equals_compute_bias(heads, buckets, max_distance, causal, n):
    ref = _reference(heads, buckets, max_distance, causal)
    mod = _bias_module(heads, buckets, max_distance, causal, n)
    with torch.no_grad():
        mod.weight.copy_(torch.randn(buckets, heads))
        ref.relative_attention_bias.weight.copy_(mod.weight)
        got = mod(torch.zeros(2, n, 8))
        want = ref.compute_bias(n, n)
    assert got.shape == (1, heads, n, n)
    assert torch.equal(got, want)


# ---------------------------------------------------------------- shared tables (`tied:` on embedding)

SHARED = """\
graphformer: 1
name: shared
params: {d: 16, vocab: 50}
dims: {B: 2, n: 5, t: 3}
inputs:
  a: {shape: [B, n], dtype: int64}
  b: {shape: [B, t], dtype: int64}
nodes:
  shared: {op: embedding, in: a, vocab: vocab, dim: d}
  dec:    {op: embedding, in: b, vocab: vocab, dim: d, tied: shared}
  head:   {op: linear, in: dec, out: vocab, bias: false, tied: shared}
outputs: {x: shared, y: head}
"""


def _spec_text(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_one_table_read_by_two_embeddings_and_a_head(tmp_path):
    import graphformer
    from graphformer.analysis.summary import total_params
    spec = graphformer.load(_spec_text(tmp_path, SHARED))
    assert total_params(spec.ir) == 50 * 16
    model = graphformer.build(spec, seed=0)
    assert list(model.state_dict()) == ["shared.weight"]
    assert model.node_module("dec").weight is model.node_module("shared").weight
    a, b = torch.randint(0, 50, (2, 5)), torch.randint(0, 50, (2, 3))
    out = model(a=a, b=b)
    w = model.node_module("shared").weight
    torch.testing.assert_close(out["y"], w[b] @ w.T)
    out["y"].sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


@pytest.mark.parametrize("edit,message,on_value", [
    ("WIDTH", "tied weight of `shared` is [50, 16] but this node needs [50, 8]", False),
    ("SELF", "`tied: dec` names this node itself", True),
    ("CHAIN", "`dec` has no table of its own: it is tied to `shared`", True),
])
def test_bad_shared_tables_are_gf125(tmp_path, edit, message, on_value):
    import graphformer
    text = {"SELF": SHARED.replace("dim: d, tied: shared}", "dim: d, tied: dec}"),
            "CHAIN": SHARED.replace("bias: false, tied: shared}", "bias: false, tied: dec}")}.get(
        edit, SHARED.replace("dim: d, tied: shared}", "dim: 8, tied: shared}"))
    with pytest.raises(graphformer.SpecError) as err:
        graphformer.load(_spec_text(tmp_path, text))
    (d,) = err.value.diagnostics
    assert d.code == "GF125" and message in d.message
    if on_value:   # the caret is on the value of `tied`
        line = text.splitlines()[d.span.line - 1]
        assert d.span.col == line.index("tied: ") + len("tied: ") + 1


# ---------------------------------------------------------------- specs/t5-base.yaml against transformers

import graphformer  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from parity import assert_close, assert_mapped_grads, ours  # noqa: E402

T5 = Path(__file__).resolve().parents[2] / "specs" / "t5-base.yaml"
V1_1 = dict(ffn="gated_ffn", act="gelu_tanh", tie_embeddings=False, scale_decoder_outputs=0)


def untie_head(ref):
    """transformers 5 ties T5's head to `shared` whenever a model is built from a config (T5Config forces
    `tie_word_embeddings`); `from_pretrained` unties it when the checkpoint's lm_head differs, as every
    v1.1 checkpoint's does. Do the same here: the head gets a weight of its own."""
    ref.lm_head.weight = torch.nn.Parameter(torch.randn_like(ref.lm_head.weight))
    return ref


def t5_cfg(**kw):
    base = dict(vocab_size=97, d_model=40, d_kv=12, d_ff=56, num_layers=2, num_decoder_layers=3, num_heads=5,
                relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0)
    return transformers.T5Config(**{**base, **kw}, attn_implementation="sdpa")


def t5_pair(v1_1=False, sets=None, **kw):
    torch.manual_seed(0)
    cfg = t5_cfg(feed_forward_proj="gated-gelu", tie_word_embeddings=False, **kw) if v1_1 else t5_cfg(**kw)
    ref = transformers.T5ForConditionalGeneration(cfg).eval()
    if v1_1:
        untie_head(ref)
    spec = graphformer.load(T5, preset="tiny", overrides={**(V1_1 if v1_1 else {}), **(sets or {})})
    return spec, ref, ours(spec, ref)


@pytest.mark.parametrize("preset,v1_1,published", [("t5-base", False, 222_903_552),
                                                   ("t5-v1_1-base", True, 247_577_856)])
def test_parameter_counts_equal_transformers_on_meta(preset, v1_1, published):
    spec = graphformer.load(T5, preset=preset)
    kw = dict(vocab_size=32128, d_model=768, d_kv=64, num_heads=12, num_layers=12)
    kw |= dict(d_ff=2048, feed_forward_proj="gated-gelu", tie_word_embeddings=False) if v1_1 else dict(d_ff=3072)
    with torch.device("meta"):
        ref = transformers.T5ForConditionalGeneration(transformers.T5Config(**kw))
        if v1_1:
            untie_head(ref)
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == published
    # the map covers the reference exactly (shapes only: meta tensors)
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(dict(graphformer.build(spec, device="meta")
                                                                             .named_parameters()))


def test_one_table_in_the_state_dict():
    spec = graphformer.load(T5, preset="tiny")
    keys = list(graphformer.build(spec, device="meta").state_dict())
    assert [k for k in keys if k.endswith("embed.weight") or k.startswith(("shared", "lm_head"))] == ["shared.weight"]
    untied = graphformer.load(T5, preset="tiny", overrides={"tie_embeddings": False})
    assert "lm_head.weight" in graphformer.build(untied, device="meta").state_dict()


@pytest.mark.parametrize("v1_1", [False, True], ids=["t5", "t5-v1_1"])
def test_outputs_equal_transformers_with_encoder_padding(v1_1):
    spec, ref, model = t5_pair(v1_1)
    gen = torch.Generator().manual_seed(1)
    ids, dec = torch.randint(0, 97, (3, 11), generator=gen), torch.randint(0, 97, (3, 6), generator=gen)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0     # right padding, as T5 tokenizers pad
    mask[2, :2] = 0
    with torch.no_grad():
        got = model(tokens=ids, decoder_tokens=dec, mask=mask)
        want = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        assert_close(got["logits"], want.logits, f"t5 v1_1={v1_1} logits")
        keep = mask.bool()
        assert_close(got["encoder_hidden"][keep], want.encoder_last_hidden_state[keep], f"t5 v1_1={v1_1} encoder")
        plain = model(tokens=ids, decoder_tokens=dec)["logits"]
        assert_close(plain, ref(input_ids=ids, decoder_input_ids=dec).logits, f"t5 v1_1={v1_1} unpadded")


def test_gradients_equal_transformers():
    spec, ref, model = t5_pair(v1_1=True)
    gen = torch.Generator().manual_seed(1)
    ids, dec = torch.randint(0, 97, (2, 9), generator=gen), torch.randint(0, 97, (2, 5), generator=gen)
    weight = torch.randn(97, generator=gen)
    (model(tokens=ids, decoder_tokens=dec)["logits"] * weight).sum().backward()
    (ref(input_ids=ids, decoder_input_ids=dec).logits * weight).sum().backward()
    assert_mapped_grads(model, ref, spec, "t5 v1_1")


def test_a_bias_with_other_heads_than_its_attention_is_an_error_at_the_attention(tmp_path):
    text = T5.read_text().replace("enc_bias:  {op: relative_position_bias, in: shared, heads: heads,",
                                  "enc_bias:  {op: relative_position_bias, in: shared, heads: 8,")
    path = _spec_text(tmp_path, text, "t5-bad.yaml")
    result = graphformer.frontend.check.check_file(str(path), preset="tiny")
    d = next(d for d in result.diagnostics if d.is_error)
    line = text.splitlines()[d.span.line - 1]
    assert d.code == "GF120" and d.node == "encoder.0.attn" and line[d.span.col - 1:].startswith("attn:")
    assert "dimension 1 (heads, or 1) of `bias` is `8`, expected `5`" in d.message
    assert "`heads` (5)" in d.help
    assert any("`enc_bias` produces [1, 8, n, n]" in label.message for label in d.labels)


# ---------------------------------------------------------------- generation: encoder once, cross keys once

from graphformer.backends.torch.generation import Decoder, GenerationError, plan_generation  # noqa: E402

GEN_LAYERS = {"layers": 3, "decoder_layers": 2}   # transformers' generate sizes its cache by num_layers


def gen_pair(v1_1=False):
    """A tiny T5 whose greedy tokens vary (T5's init of the shared table, std 1, makes a random model repeat
    one token): the table is scaled down, and v1.1's own head is random."""
    spec, ref, _ = t5_pair(v1_1, sets=GEN_LAYERS, num_layers=3, num_decoder_layers=2)
    with torch.no_grad():
        ref.shared.weight.mul_(0.1)
    return spec, ref, ours(spec, ref)


def encoder_batch():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(2, 97, (3, 11), generator=gen)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    return ids, mask


def hf_generate(ref, ids, mask, new):
    ref.generation_config.eos_token_id = None     # run every step: random weights say nothing of EOS
    ref.generation_config.decoder_start_token_id = 0
    with torch.no_grad():
        return ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False)


START = torch.zeros(3, 1, dtype=torch.long)       # T5's decoder starts from the pad token, id 0


@pytest.mark.parametrize("v1_1", [False, True], ids=["t5", "t5-v1_1"])
def test_greedy_tokens_equal_transformers_generate(v1_1):
    spec, ref, model = gen_pair(v1_1)
    ids, mask = encoder_batch()
    got = graphformer.generate(model, START, 40, encoder_inputs={"tokens": ids, "mask": mask})
    want = hf_generate(ref, ids, mask, 40)
    assert got.shape == (3, 41) and len(set(want[:, 1:].flatten().tolist())) > 3   # not one token repeated
    assert torch.equal(got, want)


def test_logits_at_every_step_equal_a_full_recompute():
    spec, ref, model = gen_pair()
    ids, mask = encoder_batch()
    seq = graphformer.generate(model, START, 20, encoder_inputs={"tokens": ids, "mask": mask})
    dec = Decoder(model, 3, seq.shape[1])
    with torch.no_grad():
        steps = [dec.prompt(START, encoder_inputs={"tokens": ids, "mask": mask})]
        steps += [dec.step(seq[:, t]) for t in range(1, seq.shape[1] - 1)]
        for t, got in enumerate(steps, start=1):
            want = model(tokens=ids, mask=mask, decoder_tokens=seq[:, :t])["logits"][:, -1]
            assert_close(got, want, f"t5 step {t}")


def test_the_encoder_runs_once_and_cross_attention_projects_its_context_once():
    spec, ref, model = gen_pair()
    ids, mask = encoder_batch()
    calls = {"encoder": 0, "cross_k": 0, "self_k": 0}
    model.node_module("encoder.0.attn").register_forward_hook(lambda *a: calls.__setitem__("encoder",
                                                                                           calls["encoder"] + 1))
    model.node_module("decoder.1.cross").k.register_forward_hook(lambda *a: calls.__setitem__("cross_k",
                                                                                              calls["cross_k"] + 1))
    model.node_module("decoder.1.attn").k.register_forward_hook(lambda *a: calls.__setitem__("self_k",
                                                                                             calls["self_k"] + 1))
    graphformer.generate(model, START, 12, encoder_inputs={"tokens": ids, "mask": mask})
    assert calls == {"encoder": 1, "cross_k": 1, "self_k": 12}


def test_the_split_comes_from_the_graph_not_from_names(tmp_path):
    """Renamed inputs and nodes (no `tokens`, `decoder_tokens`, `shared`, `encoder`, `cross`): same plan."""
    text = T5.read_text()
    for old, new in (("decoder_tokens", "target_ids"), ("tokens", "source_ids"), ("shared", "table"),
                     ("encoder", "stack_a"), ("decoder", "stack_b"), ("cross: {", "xattn: {"), ("enc_", "a_"),
                     ("dec_", "b_")):
        text = text.replace(old, new)
    spec = graphformer.load(_spec_text(tmp_path, text, "renamed.yaml"), preset="tiny")
    plan = plan_generation(spec)
    assert plan.tokens == "target_ids" and plan.encoder_inputs == ["source_ids", "mask"]
    assert plan.cross == ["stack_b.0.xattn", "stack_b.1.xattn", "stack_b.2.xattn"]
    assert plan.offset == ["b_bias"] and "a_bias" in plan.encoder
    assert not any(n.startswith("stack_b") for n in plan.encoder)
    model = graphformer.build(spec, seed=0).eval()
    ids, mask = encoder_batch()
    out = graphformer.generate(model, START, 5, encoder_inputs={"source_ids": ids, "mask": mask})
    assert out.shape == (3, 6)


def test_compiled_decode_step_is_traced_once():
    pytest.importorskip("torch._dynamo")
    spec, ref, model = gen_pair()
    ids, mask = encoder_batch()
    feed = {"tokens": ids, "mask": mask}
    want = graphformer.generate(model, START, 10, encoder_inputs=feed)
    torch._dynamo.reset()
    # fullgraph: a graph break raises here and fails the test (it is what the test exists to catch)
    got = graphformer.generate(model, START, 10, encoder_inputs=feed, compile="eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = graphformer.generate(model, START, 8, encoder_inputs=feed, compile="eager")
    assert torch.equal(got, want) and torch.equal(again, want[:, :9])


def test_encoder_inputs_are_checked():
    spec, ref, model = gen_pair()
    ids, mask = encoder_batch()
    with pytest.raises(GenerationError, match=r"is an encoder–decoder: give its encoder input `tokens` as "
                                              r"encoder_inputs"):
        graphformer.generate(model, START, 2)
    with pytest.raises(GenerationError, match="`decoder_tokens`, which is not an encoder input"):
        graphformer.generate(model, START, 2, encoder_inputs={"tokens": ids, "decoder_tokens": ids})
    with pytest.raises(GenerationError, match="prompts' batch 3"):
        graphformer.generate(model, START, 2, encoder_inputs={"tokens": ids[:2]})


def test_cli_generates_what_transformers_generates(tmp_path, capsys):
    from graphformer.cli import main as cli_main
    spec, ref, model = gen_pair(v1_1=True)
    torch.save(ref.state_dict(), tmp_path / "t5.pt")
    ids, _ = encoder_batch()
    argv = ["generate", str(T5), "--preset", "tiny", "--set", "layers=3", "decoder_layers=2", "ffn=gated_ffn",
            "act=gelu_tanh", "tie_embeddings=false", "scale_decoder_outputs=0", "--weights", str(tmp_path / "t5.pt"),
            "--weights-map", "hf", "--prompt-ids", "0", "--max-new-tokens", "16"]
    rc = cli_main(argv + ["--encoder-ids", "tokens=" + ",".join(map(str, ids[0].tolist()))])
    out = capsys.readouterr()
    assert rc == 0, out.err
    want = hf_generate(ref, ids[:1], torch.ones_like(ids[:1]), 16)[0, 1:].tolist()
    assert [int(t) for t in out.out.split()] == want
    assert cli_main(argv) == 2 and "--encoder-ids INPUT=IDS" in capsys.readouterr().err
