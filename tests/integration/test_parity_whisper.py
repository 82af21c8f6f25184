"""Whisper (specs/whisper-base.yaml) against transformers WhisperForConditionalGeneration, built offline from
a WhisperConfig with random weights: the parameter count of whisper-base on the meta device, and encoder
output, decoder output, logits and gradients at a tiny, deliberately odd configuration (7 mel bins, width 40,
5 encoder heads and 4 decoder heads, unequal feed-forward widths and layer counts)."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from parity import assert_close, ours  # noqa: E402

SPEC = Path(__file__).resolve().parents[2] / "specs" / "whisper-base.yaml"
WHISPER_BASE = dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                    decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048)
ODD = dict(vocab_size=97, num_mel_bins=7, d_model=40, encoder_layers=2, decoder_layers=3, encoder_attention_heads=5,
           decoder_attention_heads=4, encoder_ffn_dim=72, decoder_ffn_dim=56, max_source_positions=9,
           max_target_positions=13, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
ODD_SETS = dict(mels=7, vocab=97, d_model=40, encoder_layers=2, decoder_layers=3, encoder_heads=5, decoder_heads=4,
                encoder_ffn=72, decoder_ffn=56, audio_len=9, text_len=13)


def pair(attn: str = "sdpa"):
    torch.manual_seed(0)
    ref = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**ODD, attn_implementation=attn))
    spec = graphformer.load(SPEC, preset="tiny", overrides=ODD_SETS)
    return spec, ref.eval(), ours(spec, ref)


def batch(b=3, n=11, low=0):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(b, 7, 18, generator=gen), torch.randint(low, 97, (b, n), generator=gen)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_outputs_equal_transformers(attn):
    spec, ref, model = pair(attn)
    features, ids = batch()
    with torch.no_grad():
        got = model(input_features=features, decoder_input_ids=ids)
        want = ref(input_features=features, decoder_input_ids=ids, output_hidden_states=True)
    assert_close(got["encoder_hidden"], want.encoder_last_hidden_state, f"whisper {attn} encoder output")
    assert_close(got["hidden"], want.decoder_hidden_states[-1], f"whisper {attn} decoder output")
    assert_close(got["logits"], want.logits, f"whisper {attn} logits")


def test_gradients_equal_transformers():
    spec, ref, model = pair()
    # no pad token (id 0) in the input here: the pad row at real positions (`pad_token`) is
    # test_weight_maps_roundtrip's
    features, ids = batch(low=1)
    weight = torch.randn(97, generator=torch.Generator().manual_seed(2))
    (model(input_features=features, decoder_input_ids=ids)["logits"] * weight).sum().backward()
    (ref(input_features=features, decoder_input_ids=ids).logits * weight).sum().backward()
    # the frozen encoder positions have no gradient on either side
    grads = {k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in ref.named_parameters()}
    theirs = convert_state_dict(spec, grads, "hf")
    trained = {k: p for k, p in model.named_parameters() if p.requires_grad}
    assert set(theirs) - set(trained) == {"enc_pos.weight"}
    for k, p in trained.items():
        assert_close(p.grad, theirs[k], f"whisper grad {k}")


def test_a_fresh_build_holds_whispers_sinusoids_frozen():
    spec = graphformer.load(SPEC, preset="tiny")
    model = graphformer.build(spec, seed=0)
    table = model.node_module("enc_pos").weight
    want = transformers.models.whisper.modeling_whisper.sinusoids(16, 32)
    assert not table.requires_grad
    torch.testing.assert_close(table, want, rtol=0, atol=1e-6)
    assert "enc_pos.weight" in model.state_dict()


def test_parameter_count_equals_transformers_whisper_base_on_meta():
    spec = graphformer.load(SPEC)
    with torch.device("meta"):
        ref = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**WHISPER_BASE))
    theirs = sum(p.numel() for p in ref.parameters())
    assert total_params(spec.ir) == theirs == 72_593_920
    converted = convert_state_dict(spec, ref.state_dict(), "hf")
    assert sum(t.numel() for t in converted.values()) == theirs


def test_the_hf_map_reads_whisper_model_without_the_head():
    spec, ref, _ = pair()
    converted = convert_state_dict(spec, ref.model.state_dict(), "hf")    # WhisperModel: no `model.`, no proj_out
    torch.testing.assert_close(converted["tok.weight"], ref.proj_out.weight)


def test_onnx_runtime_equals_transformers():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, ref, model = pair()
    proto = to_onnx(spec, model)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    features, ids = batch(b=2, n=5)
    enc, logits = session.run(["encoder_hidden", "logits"],
                              {"input_features": features.numpy(), "decoder_input_ids": ids.numpy()})
    with torch.no_grad():
        want = ref(input_features=features, decoder_input_ids=ids)
    assert_close(torch.from_numpy(enc), want.encoder_last_hidden_state, "whisper onnx encoder output")
    assert_close(torch.from_numpy(logits), want.logits, "whisper onnx logits")


def test_the_frozen_positions_have_no_gradient_or_optimizer_state_in_the_budget():
    from graphformer.analysis.budget import budget
    spec = graphformer.load(SPEC)
    b = budget(spec.ir, {"B": 1, "n": 8})
    assert b.params - b.trainable_params == 1500 * 512
    assert b.memory["grads"] == 4 * b.trainable_params and b.memory["optimizer"] == 8 * b.trainable_params


def test_greedy_tokens_equal_transformers_generate():
    """Encoder–decoder generation (the path T5 uses, the split read from the graph): the spectrogram encoder
    runs once, and 12 greedy tokens (the decoder's 13 positions) equal transformers' cached greedy search.
    GenerationMixin.generate is transformers' own greedy loop; Whisper's override adds language, task and
    timestamp logic a bare config has no tables for. The weights are perturbed so that tokens vary."""
    spec, ref, _ = pair()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    model = ours(spec, ref)
    features, _ = batch()
    start = torch.full((3, 1), 3, dtype=torch.long)                 # decoder_start_token_id
    got = graphformer.generate(model, start, 12, encoder_inputs={"input_features": features})
    ref.generation_config.eos_token_id = None
    with torch.no_grad():
        want = transformers.GenerationMixin.generate(ref, input_features=features, decoder_input_ids=start,
                                                     max_new_tokens=12, do_sample=False)
    assert len(set(got[:, 1:].flatten().tolist())) > 3                # not one token repeated
    assert torch.equal(got, want)
