"""SigLIP (specs/siglip.yaml: PaliGemma's SigLIP vision tower, imported, read through an attention-pooling head;
a bidirectional text tower pooled at its last token through a linear head; exp(logit_scale) · cosine + logit_bias)
against transformers SiglipModel built offline from a tiny odd config with random weights: all four outputs with
and without a padding mask, gradients through the map (the fused in_proj of nn.MultiheadAttention split), the
parameter counts of siglip-base-patch16-224 and siglip-so400m-patch14-384 on meta, ONNX Runtime, `import hf`.
Not a decoder: nothing to generate."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from parity import assert_close, assert_mapped_grads, assert_ort_close, imported, ort_session, ours, randomize  # noqa: E402

T = transformers
T.logging.set_verbosity_error()
SPEC = Path(__file__).resolve().parents[2] / "specs" / "siglip.yaml"
OUTPUTS = ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds")


def tiny_config():
    """The tiny preset's sizes: text 40 wide (heads 10 wide) projected to 32, the vision width."""
    text = T.SiglipTextConfig(vocab_size=99, max_position_embeddings=16, hidden_size=40, intermediate_size=72,
                              num_hidden_layers=2, num_attention_heads=4, projection_size=32,
                              bos_token_id=None, eos_token_id=None, pad_token_id=0)
    vision = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=32, patch_size=8)
    return T.SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = randomize(T.SiglipModel(tiny_config()))
    spec = graphformer.load(SPEC, "tiny")
    return spec, ref, ours(spec, ref)


def batch(seed=3):
    """3 texts of 12 tokens, right-padded to max_length as SigLIP's processor does (row 1 by 4, row 2 by 1), and
    2 images. Returns ids, mask, pixels."""
    ids = torch.randint(2, 99, (3, 12), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row, pad in ((1, 4), (2, 1)):
        ids[row, -pad:], mask[row, -pad:] = 0, 0
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    return ids, mask, pixels


def test_outputs_equal_transformers_with_and_without_a_padding_mask(pair):
    _, ref, model = pair
    ids, mask, pixels = batch()
    with torch.no_grad():
        for feeds in ({"attention_mask": mask}, {}):
            want = ref(input_ids=ids, pixel_values=pixels, **feeds)
            got = model(input_ids=ids, pixel_values=pixels, **feeds)
            for name in OUTPUTS:
                assert_close(got[name], getattr(want, name), f"siglip {name}{' masked' if feeds else ''}")
        # the mask bites: the padded rows' embeddings change with it
        assert (model(input_ids=ids, pixel_values=pixels)["text_embeds"][1]
                - model(input_ids=ids, pixel_values=pixels, attention_mask=mask)["text_embeds"][1]).abs().max() > 1e-3


def test_gradients_equal_transformers_through_the_map(pair):
    spec, ref, _ = pair
    model = ours(spec, ref)
    ids, mask, pixels = batch()
    got = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    weight = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
    for out in (got, want):   # the logits and both embeddings, so that every parameter has a gradient
        loss = (out["logits_per_text"] * weight).sum() + out["text_embeds"].sum() + out["image_embeds"].sum()
        loss.backward()
    assert_mapped_grads(model, ref, spec, "siglip")
    ref.zero_grad()


SO400M = ({"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16, "num_hidden_layers": 27},
          {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304, "num_attention_heads": 16,
           "num_hidden_layers": 27, "patch_size": 14})


@pytest.mark.parametrize("preset,text,vision,count", [
    ("siglip-base-patch16-224", {}, {}, 203_155_970),
    ("siglip-so400m-patch14-384", *SO400M, 877_960_498),   # 384 = 27 · 14 + 6: the convolution drops the rest
])
def test_parameter_count_equals_transformers_on_meta(preset, text, vision, count):
    with torch.device("meta"):
        ref = T.SiglipModel(T.SiglipConfig(text_config=text, vision_config=vision))
    assert total_params(graphformer.load(SPEC, preset).ir) == sum(p.numel() for p in ref.parameters()) == count


def test_onnx_runtime_equals_torch(pair):
    spec, _, model = pair
    ids, mask, pixels = batch()
    for feeds, export in (({"input_ids": ids, "pixel_values": pixels, "attention_mask": mask},
                           {"inputs": ["attention_mask"]}),
                          ({"input_ids": ids, "pixel_values": pixels}, {})):
        with torch.no_grad():
            out = model(**feeds)
        assert_ort_close(ort_session(spec, model, **export), feeds, {k: out[k] for k in OUTPUTS}, "siglip onnx")


def test_import_hf_siglip_checkpoint(pair, tmp_path, capsys):
    """The spec `import hf` writes from the reference's save_pretrained directory, loaded through `hf` from the
    checkpoint's own tensors, gives the reference's outputs and holds its count."""
    _, ref, _ = pair
    spec, model = imported(ref, tmp_path, capsys)
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters())
    ids, mask, pixels = batch()
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        got = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    for name in OUTPUTS:
        assert_close(got[name], getattr(want, name), f"siglip imported {name}")


PUBLISHED = {   # google/siglip-so400m-patch14-384's config.json, the fields that set params
    "model_type": "siglip", "initializer_factor": 1.0,
    "text_config": {"model_type": "siglip_text_model", "hidden_size": 1152, "intermediate_size": 4304,
                    "num_attention_heads": 16, "num_hidden_layers": 27},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "image_size": 384,
                      "intermediate_size": 4304, "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14},
}


@pytest.mark.parametrize("config,preset", [({"model_type": "siglip"}, "siglip-base-patch16-224"),
                                           (PUBLISHED, "siglip-so400m-patch14-384")])
def test_import_hf_reads_the_published_configs_as_the_presets(config, preset):
    from graphformer.frontend.hf import convert_config
    imported_ = convert_config(config)
    want = graphformer.load(SPEC, preset).params
    assert {k: v for k, v in imported_.params.items() if want[k] != v} == {}


@pytest.mark.parametrize("change,named", [
    ({"vision_config": {**PUBLISHED["vision_config"], "vision_use_head": False}}, "vision_config.vision_use_head"),
    ({"text_config": {**PUBLISHED["text_config"], "projection_size": 768}}, "projection_size"),
    ({"vision_config": {**PUBLISHED["vision_config"], "model_type": "clip_vision_model"}}, "clip_vision_model"),
])
def test_import_hf_refuses_what_the_spec_does_not_say(change, named):
    from graphformer.frontend.hf import HFImportError, convert_config
    with pytest.raises(HFImportError, match=named):
        convert_config({**PUBLISHED, **change})


def test_compare_against_the_saved_reference(pair, tmp_path, capsys):
    """`graphformer compare` on a save_pretrained directory: all four outputs, logits_per_image a transposed
    (non-contiguous) tensor on both sides."""
    from graphformer.cli import main
    _, ref, _ = pair
    ref.save_pretrained(tmp_path / "ckpt")
    rc = main(["compare", str(SPEC), "--preset", "tiny", "--reference", str(tmp_path / "ckpt"), "--padded"])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out + err, out + err
    assert "4 of 4 outputs within" in out, out
