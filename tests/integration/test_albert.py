"""ALBERT against transformers AlbertModel, built offline from tiny configs with perturbed random weights:
one layer shared by 4 repetitions (`share: groups`, groups 1) and 2 groups of 2: last_hidden_state and
pooler with and without padding, gradients, ONNX Runtime, the parameter count on meta at albert-base-v2's
config, each shared tensor held once (state dict, parameters, ONNX initializers), and `import hf`; plus
what `share` means for the summary, the diagram, a causal spec's KV cache and the diagnostics."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import cli  # noqa: E402
import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.backends.torch.weights import load_weights  # noqa: E402
from graphformer.frontend.check import check_file  # noqa: E402
from graphformer.weights.maps import convert_state_dict, read_state_dict  # noqa: E402
from parity import assert_close, assert_mapped_grads, ours, randomize  # noqa: E402

T = transformers
T.logging.set_verbosity_error()
SPECS = Path(__file__).resolve().parents[2] / "specs"
TINY = dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=32)
LAYER_KEYS = 16   # tensors of one ALBERT layer


def reference(groups=1):
    torch.manual_seed(0)
    return randomize(T.AlbertModel(T.AlbertConfig(**TINY, num_hidden_groups=groups)), seed=5)


def spec(groups=1, **sets):
    return graphformer.load(SPECS / "albert.yaml", preset="tiny", overrides={"groups": groups, **sets})


def batch(b=3, n=9, padded=True):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 99, (b, n), generator=gen)
    types = torch.randint(0, 2, (b, n), generator=gen)
    mask = torch.ones(b, n, dtype=torch.long)
    if padded:
        mask[1, 5:] = 0
        mask[2, 2:] = 0
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("padded", [False, True])
def test_outputs_equal_transformers(groups, padded):
    ref = reference(groups)
    model = ours(spec(groups), ref)
    x = batch(padded=padded)
    with torch.no_grad():
        got, want = model(**x), ref(**x)
    real = x["attention_mask"].bool()
    assert_close(got["last_hidden_state"][real], want.last_hidden_state[real], f"albert G={groups} hidden")
    assert_close(got["pooler_output"], want.pooler_output, f"albert G={groups} pooler")


@pytest.mark.parametrize("groups", [1, 2])
def test_gradients_equal_transformers(groups):
    """The shared parameters' gradients add up over the repetitions that use them, as the reference's do."""
    s, ref = spec(groups), reference(groups)
    model = ours(s, ref)
    x = batch()
    real = x["attention_mask"].bool()
    w = torch.randn(32, generator=torch.Generator().manual_seed(2))
    (model(**x)["last_hidden_state"][real] * w).sum().add(model(**x)["pooler_output"].sum()).backward()
    out = ref(**x)
    (out.last_hidden_state[real] * w).sum().add(out.pooler_output.sum()).backward()
    assert_mapped_grads(model, ref, s, f"albert G={groups}")


@pytest.mark.parametrize("groups", [1, 2])
def test_each_shared_tensor_is_held_once(groups):
    s, ref = spec(groups), reference(groups)
    model = ours(s, ref)
    sd = model.state_dict()
    assert len(sd) == len(ref.state_dict()) == 9 + LAYER_KEYS * groups
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters()) == total_params(s.ir)
    owners = [f"encoder.{g * 4 // groups}." for g in range(groups)]
    assert {k.split(".")[1] for k in sd if k.startswith("encoder.")} == {o.split(".")[1] for o in owners}
    # every repetition's module reads its group's Parameter objects
    q = [model.node_module(f"encoder.{i}.attn").q.weight for i in range(4)]
    assert all(q[i] is q[i - i % (4 // groups)] for i in range(4))
    assert (q[0] is q[2]) == (groups == 1)
    # a state dict loads back strictly, and a fresh build draws each shared tensor once
    fresh = graphformer.build(s, seed=3)
    assert fresh.load_state_dict(sd, strict=True).missing_keys == []
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), sd.values()))


def test_parameter_count_equals_transformers_at_albert_base_v2_on_meta():
    s = graphformer.load(SPECS / "albert.yaml")
    with torch.device("meta"):
        ref = T.AlbertModel(T.AlbertConfig(embedding_size=128, hidden_size=768, num_attention_heads=12,
                                           intermediate_size=3072, hidden_act="gelu_new", num_hidden_groups=1))
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 11_683_584
    built = graphformer.build(s, device="meta")
    assert sum(p.numel() for p in built.parameters()) == 11_683_584
    assert len(convert_state_dict(s, ref.state_dict(), "hf")) == len(built.state_dict()) == len(ref.state_dict())


def test_summary_counts_parameters_once_and_flops_per_repetition():
    from graphformer.analysis.budget import budget
    from graphformer.analysis.summary import counted_rows, rolled_up, rows
    shared, unshared = spec(1).ir, spec(4).ir   # groups = layers: every layer its own
    per_layer = sum(r.params for r in rows(unshared) if r.node.startswith("encoder.0."))
    assert total_params(unshared) - total_params(shared) == 3 * per_layer
    assert sum(r.params * r.count for r in counted_rows(shared)) == sum(r.params for r in rows(shared))
    roll = {r[0]: r for r in rolled_up(counted_rows(shared), 1)}
    assert roll["encoder"][3] == per_layer and roll["encoder"][5] == 4
    b1, b4 = budget(shared, dict(B=2, n=8)), budget(unshared, dict(B=2, n=8))
    assert b1.params == total_params(shared) and b1.flops == b4.flops
    assert b1.memory["activations"] == b4.memory["activations"]
    assert b1.memory["optimizer"] < b4.memory["optimizer"]


def test_onnx_runtime_equals_torch_with_one_initializer_per_shared_tensor():
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from graphformer.backends.onnx import to_onnx
    s, ref = spec(2), reference(2)
    proto = to_onnx(s, ref.state_dict(), weights_map="hf")
    assert len(proto.graph.initializer) == len(ref.state_dict())
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = batch()
    with torch.no_grad():
        mine = ours(s, ref)(**x)
    got = sess.run(["last_hidden_state", "pooler_output"], {k: v.numpy() for k, v in x.items()})
    for g, k in zip(got, ["last_hidden_state", "pooler_output"]):
        assert np.abs(g - mine[k].numpy()).max() <= 1e-5 * max(1.0, np.abs(mine[k].numpy()).max())


def test_draw_says_the_repeated_box_is_shared():
    from graphformer.render.diagram import build
    labels = lambda ir, **kw: {c.label for c in build(ir, **kw).clusters.values()}   # noqa: E731
    assert labels(spec(1).ir) == {"layer × 4, shared weights"}
    assert labels(spec(2).ir) == {"layer × 4, 2 shared weight groups"}
    assert "layer 4/4, weights of 3" in labels(spec(2).ir, expand=True)
    assert labels(spec(4).ir) == {"layer × 4, 4 shared weight groups"}


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.slow
def test_import_hf_round_trip_equals_transformers(tmp_path, capsys):
    ref = reference(2)
    ref.save_pretrained(tmp_path / "ckpt")
    rc, _, err = run(capsys, "import", "hf", tmp_path / "ckpt", "-o", tmp_path / "spec.yaml")
    assert rc == 0 and "warning" not in err, err
    s = graphformer.load(tmp_path / "spec.yaml")
    assert (s.params["groups"], s.params["layers"], s.params["embed"]) == (2, 4, 16)
    model = graphformer.build(s).eval()
    load_weights(model, read_state_dict(str(tmp_path / "ckpt")), "hf", s)
    x = batch(padded=False)
    with torch.no_grad():
        assert_close(model(**x)["last_hidden_state"], ref(**x).last_hidden_state, "albert imported")


# ---------------------------------------------------------------- a causal spec with a shared layer

GPT = """\
graphformer: 1
name: shared_gpt
params: {vocab: 97, d_model: 32, heads: 4, layers: 3, window: 4}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
blocks:
  layer:
    params: {w: 0}
    inputs: {x: [B, n, d_model]}
    nodes:
      ln: {op: norm}
      attn: {op: attention, heads: heads, causal: true, window: w}
      res: {op: residual, in: [x, attn]}
    outputs: {x: res}
nodes:
  tok: {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  blocks: {op: layer, repeat: layers, share: true, w: "window if repeat_index % 2 == 1 else 0"}
  ln_f: {op: norm}
  head: {op: linear, out: vocab}
outputs: {logits: head}
"""


def test_a_shared_causal_layer_keeps_one_cache_slot_per_repetition(tmp_path):
    """Repetitions that share parameters but not attributes (a window every second layer) build, and
    generation with a KV cache equals recomputing the whole sequence at each step."""
    path = tmp_path / "gpt.yaml"
    path.write_text(GPT)
    assert check_file(str(path)).ok
    model = graphformer.build(str(path), seed=0).eval()
    assert len([k for k in model.state_dict() if k.startswith("blocks.")]) == 10   # one layer: norm 2, attention 8
    assert model.node_module("blocks.1.attn").window != model.node_module("blocks.0.attn").window
    prompt = torch.randint(0, 97, (2, 3), generator=torch.Generator().manual_seed(0))
    out = graphformer.generate(model, prompt, 5)
    ids = prompt
    with torch.no_grad():
        for _ in range(5):
            ids = torch.cat([ids, model(tokens=ids)["logits"][:, -1:].argmax(-1)], 1)
    assert torch.equal(out, ids)


CALL = 'blocks: {op: layer, repeat: layers, share: true, w: "window if repeat_index % 2 == 1 else 0"}'
CASES = [
    ("blocks: {op: layer, repeat: layers, share: 2}", "GF270", "2 groups of the 3 repetitions"),
    ("blocks: {op: layer, share: true}", "GF270", "does not `repeat`"),
    ("blocks: {op: layer, repeat: layers, share: 0}", "GF270", "at least 1"),
    ("blocks: {op: layer, repeat: layers, share: nope}", "GF131", None),
]


@pytest.mark.parametrize("call, code, text", CASES)
def test_share_misuse_is_reported_at_the_call(tmp_path, call, code, text):
    path = tmp_path / "gpt.yaml"
    assert CALL in GPT
    path.write_text(GPT.replace(CALL, call))
    diags = [d for d in check_file(str(path)).diagnostics if d.is_error]
    assert [d.code for d in diags] == [code], diags
    assert diags[0].span is not None and diags[0].span.line == 18
    assert text is None or text in diags[0].message


def test_share_on_a_primitive_and_parameters_that_differ(tmp_path):
    path = tmp_path / "gpt.yaml"
    path.write_text(GPT.replace("ln_f: {op: norm}", "ln_f: {op: norm, share: true}"))
    assert [d.code for d in check_file(str(path)).diagnostics if d.is_error] == ["GF270"]
    path.write_text(GPT.replace("ln: {op: norm}", "ln: {op: norm, bias: b}").replace("params: {w: 0}", "params: {w: 0, b: true}")
                    .replace("w: \"window", "b: \"repeat_index == 0\", w: \"window"))
    diags = [d for d in check_file(str(path)).diagnostics if d.is_error]
    assert [d.code for d in diags] == ["GF271"] and "blocks.1.ln.bias" in diags[0].message and diags[0].help
