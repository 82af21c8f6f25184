"""Gemma-3 with images (specs/gemma3-vision.yaml: a SigLIP tower, the pooling projector, gemma3's decoder with the
image tokens scattered in, each image's tokens one bidirectional block of `attention`'s `blocks` port) against
transformers Gemma3ForConditionalGeneration built offline from a tiny odd config with random weights: logits
with several images per row, two of them adjacent (one block of 8 tokens, longer than the window of 4: the
window bites inside it), with and without left padding; gradients through the map; greedy generation with an
image prompt and cached steps against a full recompute; ONNX Runtime; the parameter count of gemma-3-4b-it on
meta; `import hf`."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402
from parity import (assert_close, assert_mapped_grads, assert_ort_close, assert_same_tokens,  # noqa: E402
                    ort_session, ours, randomize)

T = transformers
T.logging.set_verbosity_error()
SPEC = Path(__file__).resolve().parents[2] / "specs" / "gemma3-vision.yaml"
IMAGE_TOKEN = 50
PER_IMAGE = 4     # mm_side² at the tiny preset: the 4 × 4 patch grid pooled to 2 × 2


def tiny_config():
    """The tiny preset's sizes: gemma3's tiny text model (3 heads sharing 1 kv head of 10, a window of 4, one
    global layer in three, linear scaling ×4 on the global layers) and a 2-layer SigLIP at 32 pixels."""
    vision = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=32, patch_size=8, vision_use_head=False)
    text = T.Gemma3TextConfig(vocab_size=97, hidden_size=42, num_hidden_layers=6, num_attention_heads=3,
                              num_key_value_heads=1, head_dim=10, intermediate_size=56, max_position_embeddings=64,
                              sliding_window=4, sliding_window_pattern=3, query_pre_attn_scalar=10,
                              rope_theta=5000.0, rope_local_base_freq=300.0,
                              rope_scaling={"rope_type": "linear", "factor": 4.0}, pad_token_id=0)
    return T.Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=PER_IMAGE,
                          image_token_index=IMAGE_TOKEN, attn_implementation="eager")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = randomize(T.Gemma3ForConditionalGeneration(tiny_config()), seed=3)
    spec = graphformer.load(SPEC, "tiny")
    return spec, ref, ours(spec, ref)


def batch(n=24, seed=3):
    """Row 0: two adjacent images (one block of 8), text, a third image; row 1 left-padded by 2, one image.
    Returns ids, pixels [4 images], attention_mask and token_type_ids (1 at the image tokens, as the processor)."""
    ids = torch.randint(1, IMAGE_TOKEN, (2, n), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    ids[0, 2:10] = IMAGE_TOKEN
    ids[0, 15:19] = IMAGE_TOKEN
    ids[1, 5:9] = IMAGE_TOKEN
    mask[1, :2] = 0
    ids[1, :2] = 0
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    return ids, pixels, mask, (ids == IMAGE_TOKEN).long()


def test_logits_equal_transformers_with_images_and_padding(pair):
    spec, ref, model = pair
    ids, pixels, mask, types = batch()
    keep = mask.bool()   # padded positions' outputs are meaningless in both
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, token_type_ids=types)
        got = model(tokens=ids, pixels=pixels, mask=mask)
        assert_close(got["logits"][keep], want.logits[keep], "gemma3-vision logits, left-padded")
        feats = ref.model.get_image_features(pixel_values=pixels).pooler_output
        assert_close(got["image_features"], feats, "gemma3-vision image features")
        want = ref(input_ids=ids, pixel_values=pixels, token_type_ids=types).logits
        assert_close(model(tokens=ids, pixels=pixels)["logits"], want, "gemma3-vision logits")
        # the blocks bite: the reference without token_type_ids is causal everywhere, and differs
        causal = ref(input_ids=ids, pixel_values=pixels).logits
        assert (causal - want).abs().max() > 1e-3


def test_blocks_follow_transformers_mask_order():
    """(causal or one block) and window: the last token of the 8-token block sees the block's later tokens but
    not its first (7 back, beyond the window of 4); runs of distinct values are distinct blocks."""
    from graphformer.backends.torch.core import _sdpa_mask, block_ids
    blocks = torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 2, 3]])
    assert block_ids(blocks).tolist() == [[0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 2, 3]]
    assert block_ids(torch.tensor([[1, 1, 0, 1, 2]])).tolist() == [[1, 1, 0, 2, 3]]
    keep, _ = _sdpa_mask(None, True, 13, 13, window=4, blocks=blocks)
    keep = keep[0, 0]
    assert keep[1, 8] and keep[8, 5] and keep[10, 11] and keep[12, 10]
    assert not keep[8, 1] and not keep[10, 12] and not keep[9, 10]
    # no block, or a lone query (a decode step): SDPA's causal fast path, no mask built
    assert _sdpa_mask(None, True, 5, 5, blocks=torch.zeros(1, 5, dtype=torch.long)) == (None, True)
    assert _sdpa_mask(None, True, 1, 6, blocks=torch.ones(1, 1, dtype=torch.long)) == (None, False)


def test_gradients_equal_transformers_through_the_map(pair):
    spec, ref, _ = pair
    model = ours(spec, ref)
    ids, pixels, mask, types = batch()
    keep = mask.bool()
    got = model(tokens=ids, pixels=pixels, mask=mask)["logits"][keep]
    want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, token_type_ids=types).logits[keep]
    weight = torch.randn(want.shape[-1], generator=torch.Generator().manual_seed(2))
    (got * weight).sum().backward()
    (want * weight).sum().backward()
    assert_mapped_grads(model, ref, spec, "gemma3-vision")
    ref.zero_grad()


@pytest.mark.slow
@pytest.mark.parametrize("padded", [False, True])
def test_greedy_generation_with_images_equals_transformers_and_cached_steps_a_recompute(pair, padded):
    from graphformer.backends.torch.generation import Decoder
    _, ref, model = pair
    ids, pixels, mask, types = batch()
    mask = mask if padded else torch.ones_like(ids)
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    new = 16
    with torch.no_grad():
        want = ref.generate(input_ids=ids, pixel_values=pixels, attention_mask=mask, token_type_ids=types,
                            max_new_tokens=new, do_sample=False)
    got = graphformer.generate(model, ids, new, mask=mask if padded else None, encoder_inputs={"pixels": pixels})
    assert_same_tokens(got, want, f"gemma3-vision greedy{', left-padded' if padded else ''}")
    assert not (got[:, ids.shape[1]:] == IMAGE_TOKEN).any()   # else a recompute would want more images
    b, n = ids.shape
    dec = Decoder(model, b, got.shape[1])
    with torch.no_grad():
        steps = [dec.prompt(ids, mask, {"pixels": pixels})] + [dec.step(got[:, t]) for t in range(n, n + 6)]
        for t, step in enumerate(steps, start=n):
            full = model(tokens=got[:, :t], pixels=pixels,
                         mask=torch.cat([mask, torch.ones(b, t - n, dtype=torch.long)], 1))["logits"][:, -1]
            assert_close(step, full, f"gemma3-vision cached step {t}")


def test_onnx_runtime_equals_torch(pair):
    spec, _, model = pair
    ids, pixels, mask, _ = batch()
    feeds = {"tokens": ids, "pixels": pixels, "mask": mask}
    with torch.no_grad():
        want = model(**feeds)["logits"]
    sess = ort_session(spec, model, inputs=["mask"])
    got = torch.from_numpy(sess.run(["logits"], {k: v.numpy() for k, v in feeds.items()})[0])
    assert_close(got[mask.bool()], want[mask.bool()], "gemma3-vision onnx logits")
    del feeds["mask"]
    with torch.no_grad():
        want = {"logits": model(**feeds)["logits"]}
    assert_ort_close(ort_session(spec, model), feeds, want, "gemma3-vision onnx")


def test_parameter_count_equals_transformers_on_meta():
    """gemma-3-4b-it's published config (SigLIP so400m/14 at 896 pixels; the 4B text model)."""
    vision = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                  num_attention_heads=16, patch_size=14, image_size=896, vision_use_head=False)
    text = dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                num_attention_heads=8, num_key_value_heads=4, vocab_size=262208, sliding_window=1024,
                rope_scaling={"rope_type": "linear", "factor": 8.0})
    config = T.Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=256)
    with torch.device("meta"):
        ref = T.Gemma3ForConditionalGeneration(config)
    assert total_params(graphformer.load(SPEC).ir) == sum(p.numel() for p in ref.parameters()) == 4_300_079_472


def test_blocks_diagnostics(tmp_path):
    """GF322: blocks on an attention that is not causal; GF323: a required `blocks` input a decoder cannot feed."""
    from graphformer.analysis.decoding import plan_decoder
    from graphformer.base.codes import CODES
    for code in ("GF322", "GF323"):
        (tmp_path / f"{code}.yaml").write_text(CODES[code].example)
    with pytest.raises(SpecError) as err:
        graphformer.load(tmp_path / "GF322.yaml")
    assert err.value.diagnostics[0].code == "GF322"
    with pytest.raises(SpecError) as err:
        plan_decoder(graphformer.load(tmp_path / "GF323.yaml").ir)
    assert err.value.diagnostics[0].code == "GF323"


def test_import_hf_round_trip(pair, tmp_path):
    """The imported spec holds the reference's count and, loaded through `hf` from the reloaded checkpoint (its
    legacy on-disk names), its logits."""
    _, ref, _ = pair
    ref.save_pretrained(tmp_path / "ckpt")
    from graphformer.cli import main
    assert main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "spec.yaml")]) == 0
    spec = graphformer.load(tmp_path / "spec.yaml")
    again = T.Gemma3ForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    assert total_params(spec.ir) == sum(p.numel() for p in again.parameters())
    model = ours(spec, again)
    ids, pixels, _, types = batch()
    with torch.no_grad():
        assert_close(model(tokens=ids, pixels=pixels)["logits"],
                     ref(input_ids=ids, pixel_values=pixels, token_type_ids=types).logits, "gemma3-vision imported")


PUBLISHED = {   # google/gemma-3-4b-it's config.json, the fields that set params
    "model_type": "gemma3", "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256,
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False},
}


def test_import_hf_reads_the_published_config_as_the_defaults():
    from graphformer.frontend.hf import convert_config
    imported = convert_config(PUBLISHED)
    defaults = graphformer.load(SPEC).params
    assert imported.params["mm_side"] == 16 and imported.params["rope_factor"] == 8.0
    assert {k: v for k, v in imported.params.items() if defaults[k] != v} == {}


@pytest.mark.parametrize("change,named", [
    ({"text_config": {**PUBLISHED["text_config"], "model_type": "gemma2"}}, "gemma2"),
    ({"vision_config": {**PUBLISHED["vision_config"], "vision_use_head": True}}, "vision_config.vision_use_head"),
    ({"mm_tokens_per_image": 200}, "mm_tokens_per_image"),
    ({"mm_tokens_per_image": 49}, "mm_tokens_per_image"),     # 7 does not divide the 64-patch side
    ({"image_token_index": 262208}, "image_token_index"),
    ({"text_config": {**PUBLISHED["text_config"], "use_bidirectional_attention": True}}, "use_bidirectional"),
])
def test_import_hf_refuses_what_the_spec_does_not_say(change, named):
    from graphformer.frontend.hf import HFImportError, convert_config
    with pytest.raises(HFImportError, match=named):
        convert_config({**PUBLISHED, **change})


BLOCKS_LM = """\
graphformer: 1
name: blocks-lm
params: {vocab: 30, d: 24, heads: 2}
dims: {B: 2, n: 10}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  mask: {shape: [B, n], dtype: int64, optional: true}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d}
  marked: {op: equal, in: tokens, to: 5}
  attn1:  {op: attention, in: {x: tok, mask: mask, blocks: marked}, heads: heads, causal: true, rope: true, window: 3}
  attn2:  {op: attention, in: {x: attn1, mask: mask, blocks: marked}, heads: heads, causal: true, rope: true}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""


def test_onnx_blocks_with_and_without_past_equal_torch(tmp_path):
    """The ONNX lowering's blocks (runs numbered by a cumulative sum, the past's keys in none, under a window
    that bites inside a block of 6) against torch: the whole sequence, and a decoder step graph's greedy loop
    against graphformer.generate."""
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    (tmp_path / "lm.yaml").write_text(BLOCKS_LM)
    spec = graphformer.load(tmp_path / "lm.yaml")
    model = graphformer.build(spec, seed=4).eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():   # weights of scale 1: logits of order 1, not the init's near-zero ones
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5 * 2)
    ids = torch.randint(6, 30, (2, 10), generator=torch.Generator().manual_seed(1))
    ids[0, 1:7] = 5
    ids[1, 3:5] = 5
    ids[1, 6:8] = 5
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with torch.no_grad():
        want = {"logits": model(tokens=ids, mask=mask)["logits"]}
    assert want["logits"].abs().max() > 0.3
    assert_ort_close(ort_session(spec, model, inputs=["mask"]), {"tokens": ids, "mask": mask}, want, "blocks onnx")
    dec = OrtDecoder(session(to_onnx(spec, model.state_dict(), with_past=True)))
    assert_same_tokens(dec.greedy(ids, mask, 8), graphformer.generate(model, ids, 8, mask=mask)[:, 10:],
                       "blocks onnx with past")
