"""PaliGemma (specs/paligemma.yaml: a SigLIP tower, a linear projector, Gemma with the image tokens scattered in
and a prefix-LM mask) against transformers PaliGemmaForConditionalGeneration built offline from a tiny odd
config with random weights: logits with a prefix (image + prompt) and a suffix, with and without left padding,
the reference's 1-based positions; gradients through the map; the parameter count at paligemma-3b-pt-224 on
meta; greedy generation whose prompt is the prefix; ONNX Runtime; `import hf`."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from parity import (assert_close, assert_mapped_grads, assert_ort_close, assert_same_tokens,  # noqa: E402
                    ort_session, ours, randomize)

T = transformers
T.logging.set_verbosity_error()
SPEC = Path(__file__).resolve().parents[2] / "specs" / "paligemma.yaml"
PATCHES = 16   # (32 // 8)² per image at the tiny preset
IMAGE_TOKEN = 96


def tiny_config():
    """The tiny preset's sizes: 3 query heads sharing 1 kv head, heads 10 wide (not 48 / 3), theta off default."""
    vision = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=32, patch_size=8, vision_use_head=False)
    text = T.GemmaConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                         num_key_value_heads=1, head_dim=10, intermediate_size=80, max_position_embeddings=64,
                         rope_theta=500.0, pad_token_id=0)
    return T.PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                             projection_dim=48, vocab_size=97)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = randomize(T.PaliGemmaForConditionalGeneration(tiny_config()))
    spec = graphformer.load(SPEC, "tiny")
    return spec, ref, ours(spec, ref)


def batch(b=2, n=24, seed=3):
    """Rows as PaliGemma's processor lays them out: image tokens, then the prompt (token_type_ids 0, the prefix),
    then a suffix (1); row 1 is left-padded by 2 (its pads are 0 too, as the processor's). Returns ids, pixels,
    attention_mask and token_type_ids."""
    ids = torch.randint(0, IMAGE_TOKEN, (b, n), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    types = torch.ones_like(ids)
    for row, (pad, prefix) in enumerate([(0, 20), (2, 21)][:b]):
        ids[row, pad:pad + PATCHES] = IMAGE_TOKEN
        mask[row, :pad] = 0
        types[row, :prefix] = 0
    pixels = torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    return ids, pixels, mask, types


def test_logits_equal_transformers_with_a_prefix_and_a_suffix(pair):
    spec, ref, model = pair
    ids, pixels, mask, types = batch()
    prefix = (types == 0).long()
    keep = mask.bool()   # padded positions' outputs are meaningless in both
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, token_type_ids=types)
        got = model(tokens=ids, pixels=pixels, mask=mask, prefix=prefix)
        assert_close(got["logits"][keep], want.logits[keep], "paligemma logits, left-padded")
        feats = ref.model.get_image_features(pixel_values=pixels).pooler_output
        assert_close(got["image_features"], feats, "paligemma image features")
        # the reference's own positions count from 1 (arange + 1): fed as ours, the same logits
        ones = torch.arange(1, ids.shape[1] + 1).expand_as(ids)
        assert_close(model(tokens=ids, pixels=pixels, mask=mask, prefix=prefix, positions=ones)["logits"][keep],
                     want.logits[keep], "paligemma logits, 1-based positions")
        # no padding; and the prefix bites (a causal prompt gives other logits)
        want = ref(input_ids=ids, pixel_values=pixels, token_type_ids=types).logits
        assert_close(model(tokens=ids, pixels=pixels, prefix=prefix)["logits"], want, "paligemma logits")
        causal = model(tokens=ids, pixels=pixels, prefix=torch.zeros_like(ids))["logits"]
        assert (causal - want).abs().max() > 1e-3


def test_gradients_equal_transformers_through_the_map(pair):
    spec, ref, _ = pair
    model = ours(spec, ref)
    ids, pixels, mask, types = batch()
    keep = mask.bool()
    got = model(tokens=ids, pixels=pixels, mask=mask, prefix=(types == 0).long())["logits"][keep]
    want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, token_type_ids=types).logits[keep]
    weight = torch.randn(want.shape[-1], generator=torch.Generator().manual_seed(2))
    (got * weight).sum().backward()
    (want * weight).sum().backward()
    assert_mapped_grads(model, ref, spec, "paligemma")
    ref.zero_grad()


def test_parameter_count_equals_transformers_on_meta():
    """paligemma-3b-pt-224's published config (SigLIP so400m/14: ff 4304; Gemma-2B; vocab 257216)."""
    vision = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                  num_attention_heads=16, patch_size=14, image_size=224, vision_use_head=False)
    text = dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                num_attention_heads=8, num_key_value_heads=1, vocab_size=257216)
    config = T.PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=257152, vocab_size=257216,
                               projection_dim=2048)
    with torch.device("meta"):
        ref = T.PaliGemmaForConditionalGeneration(config)
    assert total_params(graphformer.load(SPEC).ir) == sum(p.numel() for p in ref.parameters()) == 2_923_466_480


@pytest.mark.parametrize("padded", [False, True])
def test_greedy_generation_equals_transformers(pair, padded):
    """The prompt (image tokens and text, token_type_ids 0) is the prefix; each new token is causal."""
    _, ref, model = pair
    ids, pixels, mask, _ = batch()
    mask = mask if padded else torch.ones_like(ids)
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    with torch.no_grad():
        want = ref.generate(input_ids=ids, pixel_values=pixels, attention_mask=mask,
                            token_type_ids=torch.zeros_like(ids), max_new_tokens=6, do_sample=False)
    got = graphformer.generate(model, ids, 6, mask=mask if padded else None, encoder_inputs={"pixels": pixels})
    assert_same_tokens(got, want, f"paligemma greedy{', left-padded' if padded else ''}")


def test_onnx_runtime_equals_torch(pair):
    spec, _, model = pair
    ids, pixels, mask, types = batch()
    feeds = {"tokens": ids, "pixels": pixels, "prefix": (types == 0).long(), "mask": mask}
    with torch.no_grad():
        want = {"logits": model(**feeds)["logits"]}
    sess = ort_session(spec, model, inputs=["mask"])
    got = torch.from_numpy(sess.run(["logits"], {k: v.numpy() for k, v in feeds.items()})[0])
    assert_close(got[mask.bool()], want["logits"][mask.bool()], "paligemma onnx logits")
    del feeds["mask"]
    with torch.no_grad():
        want = {"logits": model(**feeds)["logits"]}
    assert_ort_close(ort_session(spec, model), feeds, want, "paligemma onnx")


def test_import_hf_paligemma_config(pair, tmp_path):
    """The imported spec holds the reference's count and, loaded through `hf` from the reloaded reference's state
    dict, its logits (the directory's own names, `language_model.model.*`: tests/integration/test_checkpoint_names.py)."""
    _, ref, _ = pair
    ref.save_pretrained(tmp_path / "ckpt")
    from graphformer.cli import main
    assert main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "spec.yaml")]) == 0
    spec = graphformer.load(tmp_path / "spec.yaml")
    again = T.PaliGemmaForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    assert total_params(spec.ir) == sum(p.numel() for p in again.parameters())
    model = ours(spec, again)
    ids, pixels, _, types = batch()
    with torch.no_grad():
        assert_close(model(tokens=ids, pixels=pixels, prefix=(types == 0).long())["logits"],
                     ref(input_ids=ids, pixel_values=pixels, token_type_ids=types).logits,
                     "paligemma imported logits")


PUBLISHED = {   # google/paligemma-3b-pt-224's config.json, the fields that set params
    "model_type": "paligemma", "image_token_index": 257152, "projection_dim": 2048, "hidden_size": 2048,
    "vocab_size": 257216, "pad_token_id": 0,
    "text_config": {"model_type": "gemma", "hidden_size": 2048, "intermediate_size": 16384, "num_attention_heads": 8,
                    "num_hidden_layers": 18, "num_image_tokens": 256, "num_key_value_heads": 1, "vocab_size": 257216},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                      "num_attention_heads": 16, "num_hidden_layers": 27, "num_image_tokens": 256, "patch_size": 14,
                      "projection_dim": 2048, "projector_hidden_act": "gelu_fast", "vision_use_head": False},
}


def test_import_hf_reads_the_published_config_as_the_defaults():
    from graphformer.frontend.hf import convert_config
    imported = convert_config(PUBLISHED)
    defaults = graphformer.load(SPEC).params
    assert imported.params["vision_ff"] == 4304 and imported.params["vocab"] == 257216
    assert {k: v for k, v in imported.params.items() if defaults[k] != v} == {}


@pytest.mark.parametrize("change,named", [
    ({"text_config": {**PUBLISHED["text_config"], "model_type": "gemma2"}}, "gemma2"),
    ({"projection_dim": 1024}, "projection_dim"),
    ({"image_token_index": 257216}, "image_token_index"),
])
def test_import_hf_refuses_what_the_spec_does_not_say(change, named):
    from graphformer.frontend.hf import HFImportError, convert_config
    with pytest.raises(HFImportError, match=named):
        convert_config({**PUBLISHED, **change})


def test_a_vision_tower_with_its_pooling_head(pair):
    """`vision_use_head: true` (SiglipVisionConfig's default) is imported: the head's weights are counted and
    loaded (specs/siglip.yaml's head, defined here), its output `vision_pooled` is the tower's pooler_output,
    and the logits, which don't read it, are the reference's."""
    from graphformer.frontend.hf import convert_config
    assert convert_config({**PUBLISHED, "vision_config": {**PUBLISHED["vision_config"], "vision_use_head": True}}
                          ).params["vision_use_head"] is True
    config = tiny_config()
    config.vision_config.vision_use_head = True
    torch.manual_seed(0)
    ref = randomize(T.PaliGemmaForConditionalGeneration(config))
    spec = graphformer.load(SPEC, "tiny", overrides={"vision_use_head": True})
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters())
    model = ours(spec, ref)
    ids, pixels, _, types = batch()
    with torch.no_grad():
        got = model(tokens=ids, pixels=pixels, prefix=(types == 0).long())
        assert_close(got["logits"], ref(input_ids=ids, pixel_values=pixels, token_type_ids=types).logits,
                     "paligemma logits, vision head on")
        assert_close(got["vision_pooled"], ref.model.vision_tower(pixels).pooler_output, "paligemma vision_pooled")

