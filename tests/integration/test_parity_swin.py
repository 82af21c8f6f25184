"""Parity of specs/swin-t.yaml with transformers' SwinForImageClassification.

The reference is built offline from a SwinConfig with random weights (every parameter perturbed, so
norm scales, biases and the relative position tables all carry information) at small odd configurations
that exercise what Swin does with sizes: an image that the patch doesn't divide and grids that the
window doesn't divide (both padded), a stage whose grid is exactly one window (not shifted), odd grids
before patch merging (padded), odd depths (a shifted layer last or not at all). transformers' Swin fails where a stage's grid is smaller than its
window, so every configuration keeps the last grid at least one window across. fp32, eval mode, max abs
error ≤ 1e-5 × the output's scale. At the default size, on the meta device: the parameter count equals
the reference's (28,288,354) and the weight map covers its whole state dict, in both key layouts; with
`head: false`, SwinModel's (27,519,354). A SwinModel checkpoint saved with save_pretrained imports with
`graphformer import hf` as the spec without its classifier (SwinForImageClassification's import is in
tests/integration/test_import_hf.py) and gives the reference's pooled output.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

from parity import assert_close, imported, ort_session, ours, randomize  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402

transformers.logging.set_verbosity_error()

SPEC = "specs/swin-t.yaml"


# image, patch, window, embed, depths, heads, classes. Stage grids (ceil-halved):
CONFIGS = {
    # 17 → 9 → 5 → 3: padded to 18 and 6, a 9×9 grid that divides, a last stage of one window
    "window3": (68, 4, 3, 12, (2, 1, 3, 2), (3, 3, 6, 6), 7),
    # 9 → 5 → 3 → 2 with window 2: every stage but the last padded, the last one window
    "window2": (36, 4, 2, 6, (1, 2, 1, 1), (1, 2, 3, 3), 5),
    # a 31² image at patch 3 (padded to 33): 11 → 6 → 3 → 2, window 2 shifted by 1 but in the last stage
    "patch3": (31, 3, 2, 10, (2, 2, 2, 1), (2, 2, 4, 4), 3),
}


def overrides(config: str) -> dict:
    image, patch, window, embed, depths, heads, classes = CONFIGS[config]
    return dict(image=image, patch=patch, window=window, embed=embed, classes=classes, eps=1e-6,
                **{f"depth{i + 1}": d for i, d in enumerate(depths)},
                **{f"heads{i + 1}": h for i, h in enumerate(heads)})


def reference(config: str) -> nn.Module:
    from transformers import SwinConfig, SwinForImageClassification
    image, patch, window, embed, depths, heads, classes = CONFIGS[config]
    return randomize(SwinForImageClassification(SwinConfig(
        image_size=image, patch_size=patch, window_size=window, embed_dim=embed, depths=list(depths),
        num_heads=list(heads), num_labels=classes, layer_norm_eps=1e-6)))   # not the eps of every norm


@pytest.mark.parametrize("config", list(CONFIGS))
def test_swin_equals_transformers(config):
    image = CONFIGS[config][0]
    ref = reference(config)
    model = ours(load(SPEC, overrides=overrides(config)), ref)
    x = torch.randn(3, 3, image, image, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(pixel_values=x), ref(pixel_values=x)
        body = ref.swin(pixel_values=x)
    assert_close(got["logits"], want.logits, f"swin-t {config} logits")
    assert_close(got["last_hidden_state"], body.last_hidden_state, f"swin-t {config} last_hidden_state")
    assert_close(got["pooler_output"], body.pooler_output, f"swin-t {config} pooler_output")


def test_default_size_count_and_map_equal_the_reference():
    from transformers import SwinConfig, SwinForImageClassification
    with torch.device("meta"):
        ref = SwinForImageClassification(SwinConfig(num_labels=1000))
    s = load(SPEC)
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 28_288_354
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == 28_288_354


def test_swin_model_count_and_map_equal_the_reference():
    from transformers import SwinConfig, SwinModel
    with torch.device("meta"):
        ref = SwinModel(SwinConfig())
    s = load(SPEC, overrides={"head": False})
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 27_519_354
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == 27_519_354


def test_a_swin_model_checkpoint_imports_without_the_classifier(tmp_path, capsys):
    from transformers import SwinConfig, SwinModel
    image, patch, window, embed, depths, heads, _ = CONFIGS["window2"]
    ref = randomize(SwinModel(SwinConfig(image_size=image, patch_size=patch, window_size=window, embed_dim=embed,
                                         depths=list(depths), num_heads=list(heads), layer_norm_eps=1e-6)))
    s, model = imported(ref, tmp_path, capsys)
    assert s.params["head"] is False
    x = torch.randn(2, 3, image, image, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(pixel_values=x), ref(pixel_values=x)
    assert "logits" not in got
    assert_close(got["pooler_output"], want.pooler_output, "swin-t imported SwinModel pooler_output")


def _hub_layout(state: dict) -> dict:
    """The keys save_pretrained writes and the hub holds (transformers 4 names, the index buffer saved)."""
    renames = [("attention.q_proj", "attention.self.query"), ("attention.k_proj", "attention.self.key"),
               ("attention.v_proj", "attention.self.value"), ("attention.o_proj", "attention.output.dense"),
               ("attention.relative_position_bias.relative_position_bias_table",
                "attention.self.relative_position_bias_table"),
               ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]
    out = {}
    for key, value in state.items():
        for new, old in renames:
            key = key.replace(new, old)
        out[key] = value
        if key.endswith("attention.self.relative_position_bias_table"):
            window = int(round((value.shape[0] ** 0.5 + 1) / 2))
            out[key.replace("bias_table", "index")] = torch.zeros(window ** 2, window ** 2, dtype=torch.long)
    return out


def test_the_map_reads_the_save_pretrained_layout():
    ref, s = reference("window2"), load(SPEC, overrides=overrides("window2"))
    want = convert_state_dict(s, ref.state_dict(), "hf")
    got = convert_state_dict(s, _hub_layout(ref.state_dict()), "hf")
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("config", ["window3", "patch3"])
def test_onnx_runtime_equals_transformers_where_sizes_do_not_fit(config):
    """tests/integration/test_onnx_export.py runs the tiny preset, whose grids all divide; here the padded windows,
    the odd patch merging and the unshifted last stage go through ONNX Runtime too."""
    ref, s = reference(config), load(SPEC, overrides=overrides(config))
    sess = ort_session(s, ours(s, ref))
    image = CONFIGS[config][0]
    for batch in (1, 3):
        x = torch.randn(batch, 3, image, image, generator=torch.Generator().manual_seed(batch))
        logits, hidden = sess.run(["logits", "last_hidden_state"], {"pixel_values": x.numpy()})
        with torch.no_grad():
            want = ref(pixel_values=x)
            body = ref.swin(pixel_values=x)
        assert_close(torch.from_numpy(logits), want.logits, f"swin-t {config} onnx logits, B={batch}")
        assert_close(torch.from_numpy(hidden), body.last_hidden_state, f"swin-t {config} onnx hidden, B={batch}")
