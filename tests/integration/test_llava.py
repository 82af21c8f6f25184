"""LLaVA (specs/llava.yaml: clip-vit-b32's vision layer + llama's layer, composed by import) against
transformers LlavaForConditionalGeneration built offline from a tiny odd config with random weights:
outputs and gradients, the parameter count at llava-1.5-7b on meta, generation, ONNX Runtime, `import hf`;
and the `scatter_tokens` / `equal` ops and the composition errors on their own."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402
from graphformer.frontend.check import check_file  # noqa: E402
from parity import assert_close, ours  # noqa: E402

T = transformers
SPEC = str(Path(__file__).resolve().parents[2] / "specs" / "llava.yaml")
PATCHES = 16   # (32 // 8)² per image at the tiny preset


def tiny_config(**kw):
    """The tiny preset's sizes as a LlavaConfig: odd head counts, GQA, 3 vision layers, eps and theta off default."""
    vision = T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=32, patch_size=8, layer_norm_eps=1e-5, hidden_act="quick_gelu")
    text = T.LlamaConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                         num_key_value_heads=2, intermediate_size=80, max_position_embeddings=64, rope_theta=500.0,
                         rms_norm_eps=1e-5)
    return T.LlavaConfig(vision_config=vision, text_config=text, image_token_id=96, **kw)


def reference(seed=0, **kw):
    torch.manual_seed(seed)
    ref = T.LlavaForConditionalGeneration(tiny_config(**kw)).eval()
    with torch.no_grad():   # norms and biases away from 1 and 0, so a mix-up shows
        for name, p in ref.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return ref


def prompt(b=2, n=24, seed=3, at=(1, 3)):
    """Token ids with PATCHES image tokens per row, starting at `at[row]`."""
    ids = torch.randint(0, 96, (b, n), generator=torch.Generator().manual_seed(seed))
    for row in range(b):
        ids[row, at[row]:at[row] + PATCHES] = 96
    pixels = torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    return ids, pixels


def test_forward_and_gradients_match_transformers():
    ref = reference()
    spec = graphformer.load(SPEC, "tiny")
    model = ours(spec, ref)
    ids, pixels = prompt()
    mask = torch.ones_like(ids)
    mask[1, :1] = 0      # left padding in row 1
    got = model(tokens=ids, pixels=pixels, mask=mask)
    want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask)
    keep = mask.bool()    # padded positions' outputs are meaningless in both
    assert_close(got["logits"][keep], want.logits[keep], "llava logits")
    features = ref.model.get_image_features(pixel_values=pixels, vision_feature_layer=-2,
                                            vision_feature_select_strategy="default").pooler_output
    assert_close(got["image_features"].reshape(-1, 48), torch.cat(list(features)).reshape(-1, 48), "llava image features")
    got["logits"][keep].pow(2).sum().mul(100).backward()   # gradients of scale ~1
    want.logits[keep].pow(2).sum().mul(100).backward()
    named = dict(model.named_parameters())
    for theirs, mine in [("model.vision_tower.encoder.layers.0.self_attn.q_proj.weight", "vision.layers.0.layer.self_attn.q.weight"),
                         ("model.vision_tower.embeddings.patch_embedding.weight", "vision.patch_embedding.weight"),
                         ("model.multi_modal_projector.linear_1.weight", "linear_1.weight"),
                         ("model.language_model.layers.1.mlp.gate_proj.weight", "blocks.1.mlp.gate.weight"),
                         ("model.language_model.embed_tokens.weight", "tok.weight")]:
        assert_close(named[mine].grad, dict(ref.named_parameters())[theirs].grad, f"llava grad {mine}")


def test_parameter_count_equals_transformers_on_meta():
    spec = graphformer.load(SPEC)
    with torch.device("meta"):
        ref = T.LlavaForConditionalGeneration(T.LlavaConfig(text_config=T.LlamaConfig(vocab_size=32064)))
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == 7_063_427_072


def test_mismatched_image_tokens_are_a_clear_error():
    model = graphformer.build(graphformer.load(SPEC, "tiny"), seed=0).eval()
    ids, pixels = prompt()
    ids[0, 1] = 5   # one image token too few
    with pytest.raises(ValueError, match=r"marks 31 positions but there are 32 feature vectors"):
        model(tokens=ids, pixels=pixels)


def test_greedy_generation_equals_transformers():
    ref = reference()
    model = ours(graphformer.load(SPEC, "tiny"), ref)
    ids, pixels = prompt()
    want = ref.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                        do_sample=False, pad_token_id=0)[:, ids.shape[1]:]
    got = graphformer.generate(model, ids, max_new_tokens=6, encoder_inputs={"pixels": pixels})
    got = got[:, ids.shape[1]:] if got.shape[1] > 6 else got
    assert torch.equal(got, want), (got, want)


def test_onnx_runtime_equals_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec = graphformer.load(SPEC, "tiny")
    model = graphformer.build(spec, seed=0).eval()
    ids, pixels = prompt(at=(0, 5))   # image tokens first in row 0: the running count starts at a mark
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with torch.no_grad():
        want = model(tokens=ids, pixels=pixels, mask=mask)["logits"]
    sess = ort.InferenceSession(to_onnx(spec, model, inputs=["mask"]).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"tokens": ids.numpy(), "pixels": pixels.numpy(), "mask": mask.numpy()})[0]
    assert_close(torch.from_numpy(got)[mask.bool()], want[mask.bool()], "llava onnx logits")


def test_scatter_tokens_is_masked_scatter_in_row_major_order():
    from graphformer.backends.torch.multimodal import ScatterTokens
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 0, 1]], dtype=torch.bool)
    feats = torch.randn(2, 2, 3)
    got = ScatterTokens()(x, mask, feats)
    want = x.masked_scatter(mask[..., None].expand_as(x), feats.reshape(-1, 3))
    assert torch.equal(got, want) and torch.equal(got[1, 4], feats[1, 1]) and torch.equal(got[0, 0], x[0, 0])


def test_import_hf_llava_config(tmp_path):
    ref_dir = tmp_path / "llava"
    reference().save_pretrained(ref_dir)
    out = tmp_path / "imported.yaml"
    from graphformer.cli import main
    assert main(["import", "hf", str(ref_dir), "-o", str(out)]) == 0
    spec = graphformer.load(str(out))
    ref = T.LlavaForConditionalGeneration.from_pretrained(ref_dir).eval()
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters())
    model = ours(spec, ref)
    ids, pixels = prompt()
    with torch.no_grad():
        assert_close(model(tokens=ids, pixels=pixels)["logits"], ref(input_ids=ids, pixel_values=pixels).logits,
                     "llava imported logits")


# ---------------------------------------------------------------- composition errors, at file:line:col

BASE = """\
graphformer: 1
name: case
params: {d: 32, h: 4, ff: 64, eps: 1.0e-5, act: quick_gelu, drop: 0.0}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d]}
imports:
  - from: {src}
    blocks: [{block}]
    params: {{vision_width: d, vision_heads: h, vision_ff: ff, vision_eps: eps, vision_act: act{extra}}}
nodes:
  y: {{op: vision_layer, in: x}}
outputs: {{y: y}}
"""


def codes(tmp_path, **kw):
    args = {"src": "clip-vit-b32", "block": "vision_layer", "extra": ", vision_attn_dropout: drop", **kw}
    path = tmp_path / "case.yaml"
    text = BASE
    for k, v in args.items():
        text = text.replace("{" + k + "}", v)
    path.write_text(text.replace("{{", "{").replace("}}", "}"))
    return [(d.code, d.span.line if d.span else None) for d in check_file(str(path)).diagnostics if d.is_error]


def test_composition_diagnostics(tmp_path):
    assert codes(tmp_path) == []
    assert codes(tmp_path, src="clip-vit-b23") == [("GF235", 8)]
    assert codes(tmp_path, src="../../etc/passwd") [0][0] == "GF145"
    assert codes(tmp_path, block="vision_layr")[0] == ("GF236", 9)
    assert codes(tmp_path, extra="") == [("GF237", 10)]
    assert ("GF238", 10) in codes(tmp_path, extra=", vision_attn_dropout: drop, vision_witdh: d")
    # a bound value is read in this spec's params: its error points at the import
    # (diagnostics sort by file path, so where the checkout and tmp_path live decides which comes first)
    assert ("GF131", 10) in codes(tmp_path, extra=", vision_attn_dropout: nope")
