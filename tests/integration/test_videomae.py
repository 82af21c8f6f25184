"""Parity of specs/videomae.yaml (tubelets, fixed interleaved sinusoids, no [CLS], query and value biases
only) with transformers' VideoMAEModel, on every tubelet (no `bool_masked_pos`).

References are built offline from a tiny odd config with random weights, every parameter perturbed: 3 heads
over a width of 30, 6 frames of a 15-pixel image in 3×5×5 tubelets (18 tokens), an MLP of 41; with and
without the final norm (use_mean_pooling). fp32, eval mode, ≤ 1e-5 × the output's scale: forward,
gradients, ONNX Runtime. At the published config on the meta device: the parameter count and the map, of
VideoMAEModel and of VideoMAEForVideoClassification (`head`; MCG-NJU/videomae-base-finetuned-kinetics's
class: `videomae.`-prefixed keys, `fc_norm`, `classifier`) with either pooling. A tiny
VideoMAEForVideoClassification saved with save_pretrained imports with `graphformer import hf` and gives the
reference's logits, with mean pooling (fc_norm) and without (the first token after the final norm).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import assert_close, assert_mapped_grads, assert_ort_equals_reference, imported, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/videomae.yaml"
SMALL = dict(image_size=15, patch_size=5, tubelet_size=3, num_frames=6, hidden_size=30, num_hidden_layers=2,
             num_attention_heads=3, intermediate_size=41)
OVERRIDES = dict(image=15, patch=5, tubelet=3, frames=6, d_model=30, heads=3, layers=2, d_ff=41)


def reference(final_norm: bool = False):
    return randomize(T.VideoMAEModel(T.VideoMAEConfig(use_mean_pooling=not final_norm, **SMALL)))


def spec(final_norm: bool = False):
    return load(SPEC, overrides={**OVERRIDES, "final_norm": final_norm})


def video(batch: int = 2, seed: int = 1):
    return torch.randn(batch, 6, 3, 15, 15, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("final_norm,count", [(False, 86_225_664), (True, 86_227_200)])
def test_published_count_and_map_equal_the_reference(final_norm, count):
    with torch.device("meta"):
        ref = T.VideoMAEModel(T.VideoMAEConfig(use_mean_pooling=not final_norm))
    s = load(SPEC, overrides={"final_norm": final_norm})
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == count
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == count


@pytest.mark.parametrize("mean", [True, False])
def test_published_classifier_count_and_map_equal_the_reference(mean):
    with torch.device("meta"):   # videomae-base-finetuned-kinetics: 400 labels
        ref = T.VideoMAEForVideoClassification(T.VideoMAEConfig(num_labels=400, use_mean_pooling=mean))
    s = load(SPEC, preset="kinetics", overrides={} if mean else {"final_norm": True, "pooling": "cls"})
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 86_534_800
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == 86_534_800


@pytest.mark.parametrize("mean", [True, False], ids=["mean-fc_norm", "first-token"])
def test_a_classification_checkpoint_imports_and_equals_transformers(mean, tmp_path, capsys):
    ref = randomize(T.VideoMAEForVideoClassification(T.VideoMAEConfig(use_mean_pooling=mean, num_labels=5, **SMALL)))
    s, model = imported(ref, tmp_path, capsys)
    assert (s.params["head"], s.params["classes"], s.params["pooling"]) == (True, 5, "mean" if mean else "cls")
    x = video(2)
    with torch.no_grad():
        assert_close(model(pixel_values=x)["logits"], ref(pixel_values=x).logits, f"videomae imported mean={mean}")


@pytest.mark.parametrize("final_norm", [False, True])
def test_forward_and_gradients_equal_transformers(final_norm):
    s, ref = spec(final_norm), reference(final_norm)
    model = ours(s, ref)
    x = video(2)
    with torch.no_grad():
        assert_close(model(pixel_values=x)["last_hidden_state"], ref(pixel_values=x).last_hidden_state,
                     f"videomae final_norm={final_norm}")
    weight = torch.randn(30, generator=torch.Generator().manual_seed(3))
    (model(pixel_values=x)["last_hidden_state"] * weight).sum().backward()
    (ref(pixel_values=x).last_hidden_state * weight).sum().backward()
    assert_mapped_grads(model, ref, s, f"videomae final_norm={final_norm}")


def test_hub_bias_names_load():
    """The hub's checkpoints name the biases `q_bias` / `v_bias`: the map reads them as well."""
    ref = reference()
    sd = {k.replace("attention.query.bias", "attention.q_bias").replace("attention.value.bias", "attention.v_bias"): v
          for k, v in ref.state_dict().items()}
    assert any(k.endswith("q_bias") for k in sd)
    theirs = convert_state_dict(spec(), sd, "hf")
    assert set(theirs) == set(convert_state_dict(spec(), ref.state_dict(), "hf"))


def test_onnx_runtime_equals_transformers():
    ref = reference()
    assert_ort_equals_reference(spec(), ref, [{"pixel_values": video(b, seed=b)} for b in (1, 3)],
                                ["last_hidden_state"], "videomae onnx")


@pytest.mark.parametrize("mean", [True, False], ids=["mean-fc_norm", "first-token"])
def test_onnx_runtime_equals_the_classification_reference(mean):
    ref = randomize(T.VideoMAEForVideoClassification(T.VideoMAEConfig(use_mean_pooling=mean, num_labels=5, **SMALL)))
    s = load(SPEC, overrides={**OVERRIDES, "head": True, "classes": 5, "final_norm": not mean,
                              "pooling": "mean" if mean else "cls"})
    assert_ort_equals_reference(s, ref, [{"pixel_values": video(b, seed=b)} for b in (1, 3)], ["logits"],
                                f"videomae classifier onnx mean={mean}")
