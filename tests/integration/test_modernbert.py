"""ModernBERT against transformers ModernBertForMaskedLM, built offline from a tiny, deliberately odd config
(3 heads of 14, 4 layers with a global layer every 2nd, a local window of |i − j| ≤ 2 shorter than the
sequence, rotary bases 5000 / 300) with perturbed random weights: logits and hidden states under eager and
SDPA attention, with right and left padding, gradients, ONNX Runtime, the parameter count on meta at the
published config, the per-layer structure against transformers' layer_types, and `import hf`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import cli  # noqa: E402
import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.backends.torch.weights import load_weights  # noqa: E402
from graphformer.weights.maps import convert_state_dict, read_state_dict  # noqa: E402
from parity import assert_close, assert_mapped_grads, ours  # noqa: E402

T = transformers
T.logging.set_verbosity_error()
SPECS = Path(__file__).resolve().parents[2] / "specs"
PAD = 0
TINY = dict(vocab_size=97, hidden_size=42, num_hidden_layers=4, num_attention_heads=3, intermediate_size=56,
            max_position_embeddings=64, local_attention=4, global_attn_every_n_layers=2,
            global_rope_theta=5000.0, local_rope_theta=300.0, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
            cls_token_id=1, sep_token_id=2)


def reference(attn="eager", **kw):
    torch.manual_seed(0)
    ref = T.ModernBertForMaskedLM(T.ModernBertConfig(**{**TINY, **kw}, attn_implementation=attn))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # norm weights away from 1, the decoder bias away from 0: a wrong map can't hide
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return ref.eval()


def spec(**sets):
    return graphformer.load(SPECS / "modernbert.yaml", preset="tiny", overrides=sets)


def batch(b=3, n=11):
    """A mask with right padding (row 1: 4 pads), left padding (row 2: 2 pads) and a full row; the pad id
    at the padded positions and only there (see test_gradients)."""
    ids = torch.randint(1, 97, (b, n), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, :2] = 0
    return ids.masked_fill(mask == 0, PAD), mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_and_hidden_states_equal_transformers_with_and_without_padding(attn):
    ref = reference(attn)
    model = ours(spec(), ref)
    ids, mask = batch()
    with torch.no_grad():
        got, want = model(input_ids=ids), ref(input_ids=ids, output_hidden_states=True)
        assert_close(got["logits"], want.logits, f"modernbert logits ({attn})")
        assert_close(got["last_hidden_state"], ref.model(input_ids=ids).last_hidden_state,
                     f"modernbert hidden ({attn})")
        got = model(input_ids=ids, attention_mask=mask)["logits"]
        want = ref(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()   # transformers' outputs at padded positions are not defined to be anything
    assert_close(got[keep], want[keep], f"modernbert logits, padded ({attn})")


def test_encoder_alone_equals_modernbert_model():
    ref = reference()
    model = ours(spec(head=False), ref.model)
    ids, mask = batch()
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask)
        want = ref.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert "logits" not in got
    assert_close(got["last_hidden_state"][mask.bool()], want[mask.bool()], "modernbert encoder alone")


def test_gradients_equal_transformers_on_real_tokens():
    """Every parameter's gradient, with padding (the pad row at real positions: test_weight_maps_roundtrip)."""
    s, ref = spec(), reference()
    model = ours(s, ref)
    ids, mask = batch()
    weight = torch.randn(97, generator=torch.Generator().manual_seed(2))
    keep = mask.bool()
    (model(input_ids=ids, attention_mask=mask)["logits"][keep] * weight).sum().backward()
    (ref(input_ids=ids, attention_mask=mask).logits[keep] * weight).sum().backward()
    assert_mapped_grads(model, ref, s, "modernbert")


def test_onnx_runtime_equals_torch_and_transformers():
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from graphformer.backends.onnx import to_onnx
    s, ref = spec(), reference()
    sess = ort.InferenceSession(to_onnx(s, ref.state_dict(), weights_map="hf", inputs=["attention_mask"])
                                .SerializeToString(), providers=["CPUExecutionProvider"])
    ids, mask = batch(n=13)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits.numpy()
        mine = ours(s, ref)(input_ids=ids, attention_mask=mask)["logits"].numpy()
    (got,) = sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    real = mask.numpy().astype(bool)
    scale = 1e-5 * max(1.0, np.abs(want).max())
    assert np.abs(got[real] - mine[real]).max() <= scale
    assert np.abs(got[real] - want[real]).max() <= scale


def test_parameter_count_equals_transformers_on_meta():
    s = graphformer.load(SPECS / "modernbert.yaml")
    with torch.device("meta"):
        ref = T.ModernBertForMaskedLM(T.ModernBertConfig())
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 149_655_232
    assert len(convert_state_dict(s, ref.state_dict(), "hf")) == len(
        dict(graphformer.build(s, device="meta").named_parameters()))


def test_layers_follow_transformers_layer_types_windows_and_thetas():
    s = graphformer.load(SPECS / "modernbert.yaml")
    cfg = T.ModernBertConfig()
    nodes = {n.name for n in s.ir.nodes()}
    for i, kind in enumerate(cfg.layer_types):
        a = s.ir.node(f"layers.{i}.attn").attrs
        local = kind == "sliding_attention"
        assert a.window == (cfg.sliding_window + 1 if local else None), i   # the reference's own +1
        assert a.rope_theta == cfg.rope_parameters[kind]["rope_theta"], i
        assert (f"layers.{i}.attn_norm" in nodes) == (i > 0)   # layer 0: nn.Identity


def test_the_window_and_the_rotary_bases_bite():
    """A window as long as the sequence, or the two bases swapped, give other logits from the same weights."""
    ref = reference()
    ids, _ = batch(n=12)
    with torch.no_grad():
        base = ours(spec(), ref)(input_ids=ids)["logits"]
        for sets in ({"local_attention": 64}, {"global_rope_theta": 300.0, "local_rope_theta": 5000.0}):
            assert (ours(spec(**sets), ref)(input_ids=ids)["logits"] - base).abs().max() > 1e-3, sets


# ---------------------------------------------------------------- import hf

def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.slow
def test_import_hf_round_trip_equals_transformers(tmp_path, capsys):
    ref = reference("sdpa", norm_bias=True, mlp_bias=True, attention_bias=True, classifier_bias=True,
                    classifier_activation="gelu_new")
    ref.save_pretrained(tmp_path / "ckpt")
    rc, _, err = run(capsys, "import", "hf", tmp_path / "ckpt", "-o", tmp_path / "spec.yaml")
    assert rc == 0 and "warning" not in err, err
    s = graphformer.load(tmp_path / "spec.yaml")
    assert {k: s.params[k] for k in ("global_every", "local_attention", "global_rope_theta", "local_rope_theta",
                                     "head_act", "norm_bias")} == \
        {"global_every": 2, "local_attention": 4, "global_rope_theta": 5000.0, "local_rope_theta": 300.0,
         "head_act": "gelu_tanh", "norm_bias": True}
    model = graphformer.build(s).eval()
    load_weights(model, read_state_dict(str(tmp_path / "ckpt")), "hf", s)
    ids, mask = batch()
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask)["logits"]
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert_close(got[mask.bool()], want[mask.bool()], "modernbert imported")


def test_import_hf_reads_hub_style_fields_and_refuses_other_layer_patterns(tmp_path, capsys):
    from graphformer.frontend.hf import convert_config
    hub = {"model_type": "modernbert", "architectures": ["ModernBertForMaskedLM"], "num_hidden_layers": 22,
           "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0, "local_rope_theta": 10000.0,
           "local_attention": 128, "reference_compile": True, "position_embedding_type": "absolute"}
    got = convert_config(hub)
    assert not got.unread and got.params["global_every"] == 3 and got.params["local_rope_theta"] == 10000.0
    for bad, field in ((dict(layer_types=["sliding_attention", "full_attention"], num_hidden_layers=2),
                        "layer_types"),
                       (dict(rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0}}),
                        "rope_type"),
                       (dict(global_rope_theta=-1.0), "global_rope_theta")):
        path = tmp_path / "config.json"
        path.write_text(json.dumps({"model_type": "modernbert", **bad}))
        rc, _, err = run(capsys, "import", "hf", path, "-o", tmp_path / "out.yaml")
        assert rc == 1 and field in err, err
        assert not (tmp_path / "out.yaml").exists()
