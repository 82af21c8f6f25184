"""Encoder–decoders exported with past keys and values (`to_seq2seq`, `graphformer export --with-past`), in the
layout optimum's seq2seq classes load: the encoder's `last_hidden_state` equals the torch build's encoder
output, and every decoder step (a prompt of three tokens on decoder_model.onnx, then a chunk of two and
single tokens on decoder_with_past_model.onnx) gives the logits of the torch build run on the whole sequence,
within 1e-5 × their scale; from a transformers save_pretrained directory, exported in one command, a greedy
loop over the three graphs in ONNX Runtime gives transformers' `generate` tokens (T5 v1.0 and v1.1, Whisper).
optimum itself runs the same directories in tests/slow/test_optimum.py."""
from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import cli  # noqa: E402
import graphformer as gf  # noqa: E402
import seq2seq_refs as refs  # noqa: E402
from graphformer.backends.onnx import ExportError, to_onnx, to_seq2seq  # noqa: E402
from graphformer.backends.onnx.seq2seq import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTOL = 1e-5
V1_1 = {"ffn": "gated_ffn", "act": "gelu_tanh", "tie_embeddings": False, "scale_decoder_outputs": 0}
CASES = {"t5": ("t5-base", {}), "t5-v1_1": ("t5-base", V1_1), "whisper": ("whisper-base", {})}


def build(name: str, overrides: dict):
    spec = gf.load(os.path.join(ROOT, "specs", f"{name}.yaml"), "tiny", overrides)
    model = gf.build(spec, seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return spec, model


def sessions(models: dict) -> dict:
    return {k: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for k, m in models.items()}


def run(sess, feed: dict) -> dict:
    names = {i.name for i in sess.get_inputs()}
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {k: v for k, v in feed.items() if k in names})))


def close(got: np.ndarray, want: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= RTOL * scale, (np.abs(got - want).max(), scale)


def test_the_three_graphs_have_optimums_names_and_pass_the_checker():
    spec, model = build("t5-base", {})
    models = to_seq2seq(spec, model)
    assert list(models) == [ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE]
    for m in models.values():
        onnx.checker.check_model(m, full_check=True)
        onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
    names = {k: ([i.name for i in m.graph.input], [o.name for o in m.graph.output]) for k, m in models.items()}
    assert names[ENCODER_FILE] == (["input_ids", "attention_mask"], ["last_hidden_state"])
    layers = range(3)
    dec = [f"present.{i}.decoder.{kind}" for i in layers for kind in ("key", "value")]
    enc = [f"present.{i}.{side}.{kind}" for i in layers for side in ("decoder", "encoder") for kind in ("key", "value")]
    assert names[DECODER_FILE] == (["input_ids", "encoder_attention_mask", "encoder_hidden_states"], ["logits"] + enc)
    pasts = [p.replace("present", "past_key_values") for p in enc]
    assert names[DECODER_WITH_PAST_FILE] == (pasts + ["input_ids", "encoder_attention_mask"], ["logits"] + dec)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in models[DECODER_WITH_PAST_FILE].graph.input}
    # d_kv (12) · heads (5) = 60, not d_model (40): the cache's width is the head's
    assert shapes["past_key_values.0.decoder.key"] == ["B", 5, "past", 12]
    assert shapes["past_key_values.2.encoder.value"] == ["B", 5, "n", 12]
    assert {v.name for v in models[DECODER_WITH_PAST_FILE].graph.initializer} <= \
        {v.name for v in models[DECODER_FILE].graph.initializer}   # no cross-attention k/v projections with past
    assert not any(".cross.k." in v.name for v in models[DECODER_WITH_PAST_FILE].graph.initializer)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_step_equals_the_torch_build_on_the_whole_sequence(case):
    name, overrides = CASES[case]
    spec, model = build(name, overrides)
    sess = sessions(to_seq2seq(spec, model))
    rng = np.random.default_rng(0)
    if name == "t5-base":
        mask = np.array([[1] * 9, [1] * 6 + [0] * 3], np.int64)
        enc_feed = {"input_ids": rng.integers(2, 97, (2, 9)), "attention_mask": mask}
        torch_enc, tokens = {"tokens": enc_feed["input_ids"], "mask": mask}, "decoder_tokens"
        step = {"encoder_attention_mask": mask}
    else:
        enc_feed = {"input_features": rng.standard_normal((2, 8, 32)).astype(np.float32)}
        torch_enc, tokens, step = dict(enc_feed), "decoder_input_ids", {}
    torch_enc = {k: torch.tensor(v) for k, v in torch_enc.items()}
    hidden = run(sess[ENCODER_FILE], enc_feed)["last_hidden_state"]
    seq = rng.integers(2, 97, (2, 3))
    out = run(sess[DECODER_FILE], {**step, "input_ids": seq, "encoder_hidden_states": hidden})
    with torch.no_grad():
        full = model(**torch_enc, **{tokens: torch.tensor(seq)})
    close(hidden, full["encoder_hidden"].numpy())
    close(out["logits"], full["logits"].numpy())
    past = {}
    for chunk in (2, 1, 1, 1, 1, 1):
        past.update({k.replace("present", "past_key_values"): v for k, v in out.items() if k.startswith("present")})
        new = np.concatenate([out["logits"][:, -1:].argmax(-1), rng.integers(2, 97, (2, chunk - 1))], 1)
        seq = np.concatenate([seq, new], 1)
        out = run(sess[DECODER_WITH_PAST_FILE], {**step, **past, "input_ids": new})
        with torch.no_grad():
            full = model(**torch_enc, **{tokens: torch.tensor(seq)})["logits"].numpy()
        close(out["logits"], full[:, -chunk:])
        assert out["present.0.decoder.key"].shape[2] == seq.shape[1]
    assert seq.shape[1] == 3 + 7


@pytest.mark.parametrize("kind", sorted(refs.MODELS))
def test_export_of_a_transformers_directory_generates_the_tokens_of_transformers(kind, tmp_path, capsys):
    ckpt, out = tmp_path / kind, tmp_path / "out"
    refs.MODELS[kind](ckpt)
    assert cli.main(["export", str(ckpt), "--with-past", "-o", f"{out}/"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "wrote beside it: config.json, generation_config.json" in err, err
    assert sorted(os.listdir(out)) == ["config.json", DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE,
                                       "generation_config.json"]
    got = refs.OrtSeq2Seq(out).generate(refs.encoder_inputs(kind))
    want = refs.reference_tokens(kind, ckpt)
    assert got == want, (got, want)
    assert len({t for row in want for t in row}) > 3, want   # not one token repeated: the weights say something


def test_a_file_output_is_refused_and_a_spec_gets_a_note_about_config(tmp_path, capsys):
    spec = os.path.join(ROOT, "specs", "whisper-base.yaml")
    assert cli.main(["export", spec, "--preset", "tiny", "--with-past", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "give a directory" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()
    assert cli.main(["export", spec, "--preset", "tiny", "--with-past", "-o", str(tmp_path / "w")]) == 0
    err = capsys.readouterr().err
    assert "config.json" in err and "note:" in err
    assert sorted(os.listdir(tmp_path / "w")) == [DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE]


def test_the_one_graph_api_points_at_the_three_graph_one():
    spec, model = build("whisper-base", {})
    with pytest.raises(ExportError, match="to_seq2seq"):
        to_onnx(spec, model, with_past=True)
