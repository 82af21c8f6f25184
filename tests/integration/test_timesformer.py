"""Parity of specs/timesformer.yaml (divided space–time attention, written with reshape / permute / tile)
with transformers' TimesformerModel and TimesformerForVideoClassification.

References are built offline from a tiny odd config with random weights, every parameter perturbed (so no
bias is 0 and no norm scale 1): 3 heads over a width of 27, 3 frames of a 15-pixel image in 5-pixel
patches (9 patches), an MLP of 41. fp32, eval mode, max abs error ≤ 1e-5 × the output's scale, forward and
every parameter's gradient; ONNX Runtime against the reference at two batch sizes. At the published
facebook/timesformer-base-finetuned-k400 config, on the meta device: the parameter counts equal the
references' and the weight map covers their whole state dicts.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import assert_close, assert_mapped_grads, assert_ort_equals_reference, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/timesformer.yaml"
SMALL = dict(image_size=15, patch_size=5, num_frames=3, hidden_size=27, num_hidden_layers=2,
             num_attention_heads=3, intermediate_size=41, layer_norm_eps=1e-6)
OVERRIDES = dict(image=15, patch=5, frames=3, d_model=27, heads=3, layers=2, d_ff=41)
# facebook/timesformer-base-finetuned-k400's config.json (its other fields are TimesformerConfig's defaults)
PUBLISHED = dict(image_size=224, patch_size=16, num_frames=8, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, hidden_act="gelu", qkv_bias=True,
                 layer_norm_eps=1e-6, attention_type="divided_space_time", num_labels=400)


def reference(head: bool = False):
    config = T.TimesformerConfig(num_labels=5, **SMALL)
    return randomize((T.TimesformerForVideoClassification if head else T.TimesformerModel)(config))


def spec(head: bool = False):
    return load(SPEC, overrides={**OVERRIDES, "head": head, "classes": 5})


def video(batch: int = 2, seed: int = 1):
    return torch.randn(batch, 3, 3, 15, 15, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- counts and maps at the published config

@pytest.mark.parametrize("preset,make,count", [
    (None, lambda: T.TimesformerModel(T.TimesformerConfig(**PUBLISHED)), 121_258_752),
    ("k400", lambda: T.TimesformerForVideoClassification(T.TimesformerConfig(**PUBLISHED)), 121_566_352),
])
def test_published_counts_and_maps_equal_the_references(preset, make, count):
    with torch.device("meta"):
        ref = make()
    s = load(SPEC, preset=preset)
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == count
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == count


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("batch", [1, 2])
def test_forward_equals_transformers(batch):
    ref = reference()
    model = ours(spec(), ref)
    x = video(batch)
    with torch.no_grad():
        assert_close(model(pixel_values=x)["last_hidden_state"], ref(pixel_values=x).last_hidden_state,
                     f"timesformer B={batch}")


def test_the_classifier_equals_transformers():
    ref = reference(head=True)
    model = ours(spec(head=True), ref)
    x = video(3)
    with torch.no_grad():
        assert_close(model(pixel_values=x)["logits"], ref(pixel_values=x).logits, "timesformer logits")


def test_gradients_equal_transformers():
    s, ref = spec(), reference()
    model = ours(s, ref)
    x = video(2)
    weight = torch.randn(27, generator=torch.Generator().manual_seed(3))
    (model(pixel_values=x)["last_hidden_state"] * weight).sum().backward()
    (ref(pixel_values=x).last_hidden_state * weight).sum().backward()
    assert_mapped_grads(model, ref, s, "timesformer")


def test_onnx_runtime_equals_transformers():
    ref = reference()
    assert_ort_equals_reference(spec(), ref, [{"pixel_values": video(b, seed=b)} for b in (1, 3)],
                                ["last_hidden_state"], "timesformer onnx")


# ---------------------------------------------------------------- import hf

def test_import_hf_reads_a_saved_classifier(tmp_path, capsys):
    """save_pretrained of a tiny TimesformerForVideoClassification → `import hf` → the spec with its weights
    equals it; an attention type the spec doesn't compute is refused, naming the field."""
    import cli
    import graphformer
    from graphformer.backends.torch.weights import load_weights
    from graphformer.weights.maps import read_state_dict
    ref = reference(head=True)
    ref.save_pretrained(tmp_path / "ckpt")
    assert cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "spec.yaml")]) == 0
    assert cli.main(["check", str(tmp_path / "spec.yaml")]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "Traceback" not in err, err
    model = graphformer.build(graphformer.load(str(tmp_path / "spec.yaml")), seed=1).eval()
    load_weights(model, read_state_dict(str(tmp_path / "ckpt")), "hf")
    x = video(2)
    with torch.no_grad():
        assert_close(model(pixel_values=x)["logits"], ref(pixel_values=x).logits, "import hf logits")
    config = tmp_path / "ckpt" / "config.json"
    config.write_text(config.read_text().replace('"divided_space_time"', '"joint_space_time"'))
    assert cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "joint.yaml")]) == 1
    err = capsys.readouterr().err
    assert "attention_type" in err and "Traceback" not in err and not (tmp_path / "joint.yaml").exists()
