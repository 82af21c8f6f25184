"""Parity of the vision, audio, multimodal and RL specs with the code they claim to be.

Each reference (transformers ViT, CLIP, AST, Decision Transformer; timm's ViT when timm imports) is built
offline with random weights at a small config that is not the `tiny` preset, every parameter perturbed
so that norm scales and biases carry information, its state dict goes through the spec's weight map
into `graphformer.build(spec)`, and both run on the same inputs in fp32 eval mode (max abs error ≤
1e-5 × the output's scale). At the default sizes, on the meta device: parameter counts equal the
references' and the weight maps cover the references' full state dicts. A checkpoint saved with
save_pretrained imports with `graphformer import hf` (its head set from `architectures`) and gives the
reference's outputs: ViTForImageClassification (logits) and ViTModel (the pooler), ASTForAudioClassification
(logits) and ASTModel.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

import graphformer  # noqa: E402
from parity import assert_close, assert_ort_equals_reference, imported, ours, randomize  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402

transformers.logging.set_verbosity_error()

SPECS = "specs/"


def spec(name: str, **overrides):
    return load(SPECS + f"{name}.yaml", overrides=overrides)


# ---------------------------------------------------------------- ViT

VIT = dict(image=48, patch=8, d_model=60, heads=5, d_ff=100, layers=3, classes=13)


def test_vit_equals_transformers():
    from transformers import ViTConfig, ViTForImageClassification
    ref = randomize(ViTForImageClassification(ViTConfig(
        image_size=48, patch_size=8, hidden_size=60, num_attention_heads=5, intermediate_size=100,
        num_hidden_layers=3, num_labels=13, layer_norm_eps=1e-6)))   # timm's eps, which the spec uses
    model = ours(spec("vit-b16", **VIT), ref)
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        got, want = model(pixel_values=x), ref(pixel_values=x)
        hidden = ref.vit(pixel_values=x).last_hidden_state           # the ViTModel body
    assert_close(got["logits"], want.logits, "vit-b16 logits")
    assert_close(got["last_hidden_state"], hidden, "vit-b16 last_hidden_state")


@pytest.mark.parametrize("cls,output", [("ViTForImageClassification", "logits"), ("ViTModel", "pooler_output")])
def test_vit_checkpoints_import_and_equal_transformers(cls, output, tmp_path, capsys):
    """The head class: the classifier on [CLS], no pooler; the bare model: its pooler, no classifier."""
    ref = randomize(getattr(transformers, cls)(transformers.ViTConfig(
        image_size=24, patch_size=8, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, intermediate_size=56,
        num_labels=7)))
    s, model = imported(ref, tmp_path, capsys)
    head = cls == "ViTForImageClassification"
    assert (s.params["head"], s.params["pooler"]) == (head, not head)
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_close(model(pixel_values=x)[output], getattr(ref(pixel_values=x), output), f"vit {cls} {output}")


def test_vit_equals_timm():
    timm = pytest.importorskip("timm", reason="timm needs an importable torchvision (see GUIDE.md)")
    ref = randomize(timm.create_model("vit_base_patch16_224", pretrained=False, img_size=48, patch_size=8,
                                      embed_dim=60, depth=3, num_heads=5, mlp_ratio=100 / 60, num_classes=13))
    model = ours(spec("vit-b16", **VIT), ref, "timm")
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        assert_close(model(pixel_values=x)["logits"], ref(x), "vit-b16 logits (timm)")


# ---------------------------------------------------------------- CLIP

def test_clip_equals_transformers():
    from transformers import CLIPConfig, CLIPModel
    vocab = 61
    ref = randomize(CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=vocab, max_position_embeddings=20, hidden_size=40, num_attention_heads=5,
                         intermediate_size=72, num_hidden_layers=3, eos_token_id=vocab - 1),
        vision_config=dict(image_size=40, patch_size=8, hidden_size=48, num_attention_heads=6,
                           intermediate_size=80, num_hidden_layers=2),
        projection_dim=28)))
    model = ours(spec("clip-vit-b32", vocab=vocab, text_len=20, text_width=40, text_heads=5, text_ff=72,
                      text_layers=3, image=40, patch=8, vision_width=48, vision_heads=6, vision_ff=80,
                      vision_layers=2, embed=28, eos_token=vocab - 1), ref)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 40, 40, generator=gen)
    ids = torch.randint(0, vocab - 1, (3, 11), generator=gen)
    ids[0, 10] = ids[1, 4] = ids[1, 8] = ids[2, 0] = vocab - 1      # end-of-text: last, twice, first
    with torch.no_grad():
        got, want = model(pixel_values=pixels, input_ids=ids), ref(pixel_values=pixels, input_ids=ids)
    for name in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds"):
        assert_close(got[name], getattr(want, name), f"clip-vit-b32 {name}")


# ---------------------------------------------------------------- AST

def test_ast_equals_transformers():
    from transformers import ASTConfig, ASTModel
    ref = randomize(ASTModel(ASTConfig(
        max_length=100, num_mel_bins=24, patch_size=8, frequency_stride=5, time_stride=6, hidden_size=60,
        num_attention_heads=5, intermediate_size=96, num_hidden_layers=3)))
    model = ours(spec("ast", frames=100, mels=24, patch=8, freq_stride=5, time_stride=6, d_model=60, heads=5,
                      d_ff=96, layers=3), ref)
    x = torch.randn(2, 100, 24)
    with torch.no_grad():
        got, want = model(input_values=x), ref(input_values=x)
    assert got["last_hidden_state"].shape[1] == 4 * 16 + 2     # (24-8)//5+1 = 4 by (100-8)//6+1 = 16, + 2
    assert_close(got["last_hidden_state"], want.last_hidden_state, "ast last_hidden_state")
    assert_close(got["pooler_output"], want.pooler_output, "ast pooler_output")


@pytest.mark.parametrize("cls,output", [("ASTForAudioClassification", "logits"), ("ASTModel", "pooler_output")])
def test_ast_checkpoints_import_and_equal_transformers(cls, output, tmp_path, capsys):
    """ASTForAudioClassification: a layer norm and a linear layer on the pooled output."""
    ref = randomize(getattr(transformers, cls)(transformers.ASTConfig(
        max_length=40, num_mel_bins=16, patch_size=8, frequency_stride=4, time_stride=6, hidden_size=40,
        num_attention_heads=5, intermediate_size=56, num_hidden_layers=2, layer_norm_eps=1e-6, num_labels=9)))
    s, model = imported(ref, tmp_path, capsys)
    assert s.params["head"] is (cls == "ASTForAudioClassification") and s.params["classes"] == 9
    x = torch.randn(2, 40, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_close(model(input_values=x)[output], getattr(ref(input_values=x), output), f"ast {cls} {output}")


def test_ast_classifier_in_onnx_runtime_equals_transformers():
    ref = randomize(transformers.ASTForAudioClassification(transformers.ASTConfig(
        max_length=40, num_mel_bins=16, patch_size=8, frequency_stride=4, time_stride=6, hidden_size=40,
        num_attention_heads=5, intermediate_size=56, num_hidden_layers=2, num_labels=9)))
    s = spec("ast", frames=40, mels=16, patch=8, freq_stride=4, time_stride=6, d_model=40, heads=5, d_ff=56,
             layers=2, head=True, classes=9)
    feeds = [{"input_values": torch.randn(b, 40, 16, generator=torch.Generator().manual_seed(b))} for b in (1, 3)]
    assert_ort_equals_reference(s, ref, feeds, ["logits"], "ast classifier onnx")


def test_ast_waveform_front_end_feeds_the_same_body():
    """ast-waveform.yaml = spectrogram op + ast.yaml's block: same weights, same output as ast.yaml on the
    spectrogram it computes (the block is shared, not copied)."""
    overrides = dict(frames=64, mels=16, patch=8, freq_stride=4, time_stride=8, d_model=32, heads=4, d_ff=64,
                     layers=2)
    wave_spec = spec("ast-waveform", samples=63 * 32, sample_rate=8000, n_fft=64, hop=32, **overrides)
    wave = graphformer.build(wave_spec, seed=0).eval()
    body = graphformer.build(spec("ast", **overrides), seed=1).eval()
    body.load_state_dict(wave.state_dict())
    audio = torch.randn(2, 63 * 32)
    with torch.no_grad():
        features = wave.node_module("fbank")(audio).transpose(1, 2)          # [B, frames, mels]
        assert_close(wave(waveform=audio)["pooler_output"], body(input_values=features)["pooler_output"],
                     "ast-waveform vs ast on its features")


# ---------------------------------------------------------------- Decision Transformer

def test_decision_transformer_equals_transformers():
    from transformers import DecisionTransformerConfig, DecisionTransformerModel
    ref = randomize(DecisionTransformerModel(DecisionTransformerConfig(
        state_dim=7, act_dim=3, hidden_size=48, max_ep_len=60, n_positions=40, n_head=4, n_inner=80, n_layer=3)))
    model = ours(spec("decision-transformer", state_dim=7, act_dim=3, d_model=48, max_ep_len=60, n_positions=40,
                      heads=4, d_ff=80, layers=3), ref)
    gen = torch.Generator().manual_seed(0)
    b, t = 3, 9
    inputs = dict(states=torch.randn(b, t, 7, generator=gen), actions=torch.randn(b, t, 3, generator=gen),
                  returns_to_go=torch.randn(b, t, 1, generator=gen), timesteps=torch.randint(0, 60, (b, t), generator=gen))
    with torch.no_grad():
        got, want = model(**inputs), ref(**inputs)
    for name in ("state_preds", "action_preds", "return_preds"):
        assert_close(got[name], getattr(want, name), f"decision-transformer {name}")


# ---------------------------------------------------------------- counts and full maps at default size

def _reference(name: str) -> nn.Module:
    t = transformers
    return {
        "vit-b16": lambda: t.ViTForImageClassification(t.ViTConfig(num_labels=1000)),
        "clip-vit-b32": lambda: t.CLIPModel(t.CLIPConfig()),
        "ast": lambda: t.ASTModel(t.ASTConfig()),
        "ast-audioset": lambda: t.ASTForAudioClassification(t.ASTConfig(num_labels=527)),
        "decision-transformer": lambda: t.DecisionTransformerModel(t.DecisionTransformerConfig()),
    }[name]()


@pytest.mark.parametrize("name,count", [("vit-b16", 86_567_656), ("clip-vit-b32", 151_277_313),
                                        ("ast", 86_187_264), ("ast-audioset", 86_594_063),
                                        ("decision-transformer", 1_256_854)])
def test_default_size_counts_and_maps_equal_the_reference(name, count):
    with torch.device("meta"):
        ref = _reference(name)
    s = load(SPECS + "ast.yaml", preset="audioset") if name == "ast-audioset" else spec(name)
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == count
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == count
