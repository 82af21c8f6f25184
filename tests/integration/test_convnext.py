"""Parity of specs/convnext.yaml with transformers' ConvNextModel: a patchify stem (`conv2d` 4×4 / 4 and a
channels-first layer norm: `permute`, `norm`, `permute`), stages of 7×7 depthwise convs (`padding: same`), a
channels-last pointwise MLP with GELU and a layer scale (`learned_scale`), downsampling layers, and the pooled
output: the grid's global average (`pool2d` with `output: 1`), layer-normed.

The reference is built offline from a small odd config with random weights, every parameter perturbed (so no
bias is 0, no norm scale 1 and no layer scale 1e-6): widths 8/12/16/20, depths 1/2/1/1. fp32, eval mode, max
abs error ≤ 1e-5 × the output's scale, at two image sizes (H and W are symbols: 32×32 and 45×37, where every
downsampling rounds down): the last hidden state and the pooled output, forward and every parameter's
gradient; ONNX Runtime against the reference at both sizes and two batch sizes, from one export. At
facebook/convnext-tiny-224's config (ConvNextConfig's defaults), on the meta device: the parameter count
equals the reference's and the weight map covers its whole state dict, for ConvNextModel and, with `head`,
ConvNextForImageClassification (the hub's facebook/convnext-* class: `convnext.`-prefixed keys and a
classifier). A tiny ConvNextForImageClassification saved with save_pretrained imports with `graphformer import
hf` (head on, its label count) and gives the reference's logits.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.cli import main  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import assert_close, assert_mapped_grads, assert_ort_equals_reference, imported, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/convnext.yaml"
SMALL = dict(hidden_sizes=[8, 12, 16, 20], depths=[1, 2, 1, 1])
OVERRIDES = dict(hidden1=8, hidden2=12, hidden3=16, hidden4=20, depth1=1, depth2=2, depth3=1, depth4=1)
OUTPUTS = ("last_hidden_state", "pooler_output")


def reference():
    return randomize(T.ConvNextModel(T.ConvNextConfig(**SMALL)))


def spec():
    return load(SPEC, overrides=OVERRIDES)


def image(batch: int = 2, h: int = 32, w: int = 32, seed: int = 1):
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_published_count_and_map_equal_the_reference():
    with torch.device("meta"):
        ref = T.ConvNextModel(T.ConvNextConfig())     # facebook/convnext-tiny-224
    s = load(SPEC, preset="convnext-tiny-224")
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 27_820_128
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == 27_820_128


def test_published_classifier_count_and_map_equal_the_reference():
    with torch.device("meta"):
        ref = T.ConvNextForImageClassification(T.ConvNextConfig(num_labels=1000))   # facebook/convnext-tiny-224
    s = load(SPEC, preset="convnext-tiny-224-cls")
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 28_589_128
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == 28_589_128


def test_a_classification_checkpoint_imports_and_equals_transformers(tmp_path, capsys):
    ref = randomize(T.ConvNextForImageClassification(T.ConvNextConfig(num_labels=7, **SMALL)))
    s, model = imported(ref, tmp_path, capsys)
    assert s.params["head"] is True and s.params["classes"] == 7
    rc = main(["build", str(tmp_path / "spec.yaml"), "--weights", str(tmp_path / "ckpt")])   # as a user would
    out, err = capsys.readouterr()
    assert rc == 0 and "through weight map `hf`" in out, err
    x = image(2, 45, 37)
    with torch.no_grad():
        got, want = model(pixel_values=x), ref(pixel_values=x)
    assert_close(got["logits"], want.logits, "convnext imported logits")


@pytest.mark.parametrize("batch,h,w", [(1, 32, 32), (2, 45, 37)])
def test_forward_equals_transformers(batch, h, w):
    ref = reference()
    model = ours(spec(), ref)
    x = image(batch, h, w)
    with torch.no_grad():
        got, want = model(pixel_values=x), ref(pixel_values=x)
    for name in OUTPUTS:
        assert_close(got[name], getattr(want, name), f"convnext {name} B={batch} {h}×{w}")


def test_gradients_equal_transformers():
    s, ref = spec(), reference()
    model = ours(s, ref)
    x = image(2, 45, 37)
    weight = torch.randn(20, 1, 1, generator=torch.Generator().manual_seed(3))
    pooled = torch.randn(20, generator=torch.Generator().manual_seed(4))
    got = model(pixel_values=x)
    want = ref(pixel_values=x)
    ((got["last_hidden_state"] * weight).sum() + (got["pooler_output"] * pooled).sum()).backward()
    ((want.last_hidden_state * weight).sum() + (want.pooler_output * pooled).sum()).backward()
    assert_mapped_grads(model, ref, s, "convnext")


def test_onnx_runtime_equals_transformers():
    assert_ort_equals_reference(spec(), reference(), [{"pixel_values": image(1, 32, 32, seed=1)},
                                                      {"pixel_values": image(3, 45, 37, seed=3)}],
                                list(OUTPUTS), "convnext onnx")


def test_onnx_runtime_equals_the_classification_reference():
    ref = randomize(T.ConvNextForImageClassification(T.ConvNextConfig(num_labels=7, **SMALL)))
    assert_ort_equals_reference(load(SPEC, overrides={**OVERRIDES, "head": True, "classes": 7}), ref,
                                [{"pixel_values": image(1, 32, 32)}, {"pixel_values": image(3, 45, 37, seed=3)}],
                                ["logits"], "convnext classifier onnx")
