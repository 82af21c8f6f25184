"""Parity of specs/vivit.yaml (tubelet embedding: `patch_embed` with `tubelet`, a 3-D convolution) with
transformers' VivitModel and VivitForVideoClassification.

References are built offline from a tiny odd config with random weights, every parameter perturbed (so no
bias is 0 and no norm scale 1): 3 heads over a width of 27, 6 frames of a 15-pixel image in 3×5×5
tubelets (2 × 3 × 3 = 18 tokens), an MLP of 41. fp32, eval mode, max abs error ≤ 1e-5 × the output's
scale: last_hidden_state and the pooler, the classifier's logits, every parameter's gradient; ONNX Runtime
against the reference at two batch sizes, and a tubelet embedding exported with symbolic frames and sides
run at two video sizes. At the published google/vivit-b-16x2-kinetics400 config, on the meta device: the
parameter counts equal the references' and the weight map covers their whole state dicts.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.base.dims import parse  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import assert_close, assert_mapped_grads, assert_ort_equals_reference, ort_session, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/vivit.yaml"
SMALL = dict(image_size=15, tubelet_size=[3, 5, 5], num_frames=6, hidden_size=27, num_hidden_layers=2,
             num_attention_heads=3, intermediate_size=41)
OVERRIDES = dict(image=15, patch=5, tubelet=3, frames=6, d_model=27, heads=3, layers=2, d_ff=41)


def reference(head: bool = False):
    config = T.VivitConfig(num_labels=5, **SMALL)
    return randomize((T.VivitForVideoClassification if head else T.VivitModel)(config))


def spec(head: bool = False):
    return load(SPEC, overrides={**OVERRIDES, "head": head, "pooler": not head, "classes": 5})


def video(batch: int = 2, seed: int = 1):
    return torch.randn(batch, 6, 3, 15, 15, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- counts and maps at the published config

@pytest.mark.parametrize("preset,make,count", [
    (None, lambda: T.VivitModel(T.VivitConfig()), 89_236_992),
    ("k400", lambda: T.VivitForVideoClassification(T.VivitConfig(num_labels=400)), 88_954_000),
])
def test_published_counts_and_maps_equal_the_references(preset, make, count):
    with torch.device("meta"):
        ref = make()
    s = load(SPEC, preset=preset)
    assert s.ir.node("patch_embed").shape.shape[1].value == 3136          # 16 × 14 × 14 tubelets
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
        got, want = model(pixel_values=x), ref(pixel_values=x)
    assert_close(got["last_hidden_state"], want.last_hidden_state, f"vivit B={batch}")
    assert_close(got["pooler_output"], want.pooler_output, f"vivit pooler B={batch}")


def test_the_classifier_equals_transformers():
    ref = reference(head=True)
    model = ours(spec(head=True), ref)
    x = video(3)
    with torch.no_grad():
        assert_close(model(pixel_values=x)["logits"], ref(pixel_values=x).logits, "vivit logits")


def test_gradients_equal_transformers():
    s, ref = spec(), reference()
    model = ours(s, ref)
    x = video(2)
    weight = torch.randn(27, generator=torch.Generator().manual_seed(3))
    out = model(pixel_values=x)
    theirs_out = ref(pixel_values=x)
    ((out["last_hidden_state"] * weight).sum() + out["pooler_output"].sum()).backward()
    ((theirs_out.last_hidden_state * weight).sum() + theirs_out.pooler_output.sum()).backward()
    assert_mapped_grads(model, ref, s, "vivit")


def test_onnx_runtime_equals_transformers():
    ref = reference()
    assert_ort_equals_reference(spec(), ref, [{"pixel_values": video(b, seed=b)} for b in (1, 3)],
                                ["last_hidden_state", "pooler_output"], "vivit onnx")


TUBELETS = """\
graphformer: 1
name: tubelets
dims: {B: 2, T: 4, H: 8, W: 12}
inputs:
  video: {shape: [B, 3, T, H, W]}
nodes:
  tubelets: {op: patch_embed, in: video, tubelet: 2, patch: 4, dim: 6}
outputs: {tokens: tubelets}
"""


def test_symbolic_frames_and_sides_export_and_run_at_other_sizes(tmp_path):
    """Frames, height and width stay symbolic through check, the torch build and ONNX (named dynamic axes):
    one export runs at two video sizes, equal to torch.nn.Conv3d."""
    path = tmp_path / "tubelets.yaml"
    path.write_text(TUBELETS)
    s = graphformer.load(str(path))
    assert s.ir.node("tubelets").shape.shape == tuple(parse(d) for d in ("B", "(T // 2)*(H // 4)*(W // 4)", "6"))
    model = graphformer.build(s, seed=0).eval()
    sess = ort_session(s, model)
    conv = torch.nn.Conv3d(3, 6, (2, 4, 4), stride=(2, 4, 4))
    conv.load_state_dict(model.tubelets.state_dict())
    for shape in ((2, 3, 4, 8, 12), (1, 3, 6, 16, 4)):
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[2]))
        with torch.no_grad():
            want = conv(x).flatten(2).transpose(1, 2)
            assert_close(model(video=x)["tokens"], want, f"torch {shape}")
        (got,) = sess.run(["tokens"], {"video": x.numpy()})
        assert_close(torch.from_numpy(got), want, f"onnx {shape}")


def test_draw_labels_the_tubelet():
    from graphformer.render.diagram import attr_detail
    node = load(SPEC, preset="tiny").ir.node("patch_embed")
    assert attr_detail("patch_embed", node.attrs) == "2×8×8 → 32"


# ---------------------------------------------------------------- import hf

def test_import_hf_reads_a_saved_classifier(tmp_path, capsys):
    """save_pretrained of a tiny VivitForVideoClassification → `import hf` → the spec with its weights
    equals it (hidden_act gelu_fast read as gelu_tanh); a non-square tubelet is refused, naming the field."""
    import cli
    from graphformer.backends.torch.weights import load_weights
    from graphformer.weights.maps import read_state_dict
    ref = reference(head=True)
    assert ref.config.hidden_act == "gelu_fast"
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
    config.write_text(config.read_text().replace('"tubelet_size": [\n    3,\n    5,\n    5\n  ]',
                                                 '"tubelet_size": [3, 5, 4]'))
    assert '"tubelet_size": [3, 5, 4]' in config.read_text()
    assert cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "bad.yaml")]) == 1
    err = capsys.readouterr().err
    assert "tubelet_size" in err and "Traceback" not in err and not (tmp_path / "bad.yaml").exists()
