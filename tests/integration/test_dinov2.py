"""Parity of specs/dinov2.yaml with transformers' Dinov2Model and Dinov2WithRegistersModel, and the ops it
added: learned_scale (LayerScale, tanh gates), offset / clamp, mask_tokens, prepend_tokens `at`,
grid_positions (the position table resized to the image's patch grid).

References are built offline from configs with random weights, every parameter perturbed (LayerScale
factors, norm scales, biases, the mask and register tokens all carry information), at small odd
configurations: 5 heads over a width of 40, an MLP ratio of 3, a 5×5 table, images at the table's size,
larger and non-square, smaller, and with remainders the patch drops. fp32, eval mode, max abs error
≤ 1e-5 × the output's scale, forward and every parameter's gradient; ONNX Runtime against both. At the
default sizes, on the meta device: the parameter counts equal the references' and the weight map covers
their whole state dicts, Dinov2ForImageClassification's (`head`: `dinov2.`-prefixed keys and a classifier on
[CLS] beside the patch tokens' mean) included. A tiny Dinov2ForImageClassification saved with save_pretrained
imports with `graphformer import hf` and gives the reference's logits; with registers the head's mean leaves
them out (Dinov2WithRegistersForImageClassification, whose backbone's keys are under `dinov2_with_registers.`:
the `hf` map strips either prefix), and such a checkpoint imports with `graphformer import hf` and gives the
reference's logits too.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import torch.nn.functional as F  # noqa: E402

import cli  # noqa: E402
import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.backends.torch import LOWERINGS  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.ir import IRNode  # noqa: E402
from graphformer.ops import REGISTRY  # noqa: E402
from graphformer.weights.maps import convert_state_dict, read_state_dict  # noqa: E402
from graphformer.backends.torch.weights import load_weights  # noqa: E402
from parity import assert_close, assert_mapped_grads, assert_ort_equals_reference, ort_session, ours, randomize  # noqa: E402
from shape_cases import T as TT  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/dinov2.yaml"
SMALL = dict(hidden_size=40, num_hidden_layers=2, num_attention_heads=5, image_size=35, patch_size=7, mlp_ratio=3,
             layerscale_value=0.5, layer_norm_eps=1e-6)
# (height, width) of the images fed to a model whose table is 5 × 5 patches of 7: the table's own grid, a
# larger non-square one, a smaller one, and sizes the patch does not divide (the remainder is dropped)
SIZES = [(35, 35), (49, 30), (21, 22), (36, 41)]


def reference(registers: bool):
    if registers:
        return randomize(T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(num_register_tokens=3, **SMALL)))
    return randomize(T.Dinov2Model(T.Dinov2Config(**SMALL)))


def spec(registers: bool, size=(35, 35)):
    return load(SPEC, overrides=dict(image=35, patch=7, d_model=40, heads=5, layers=2, d_ff=120, layerscale=0.5,
                                     height=size[0], width=size[1], registers=3 if registers else 0,
                                     antialias=registers))


def pixels(size, batch: int = 2, seed: int = 1):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def random_mask(size, batch: int = 2):
    n = (size[0] // 7) * (size[1] // 7)
    return torch.rand(batch, n, generator=torch.Generator().manual_seed(2)) < 0.4


REFS = {}


def pair(registers: bool, size):
    if registers not in REFS:
        REFS[registers] = reference(registers)
    ref = REFS[registers]
    s = spec(registers, size)
    return s, ref, ours(s, ref)


# ---------------------------------------------------------------- counts and maps at the default sizes

@pytest.mark.parametrize("preset,make,count", [
    (None, lambda: T.Dinov2Model(T.Dinov2Config()), 85_725_696),
    ("dinov2-base-registers", lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig()), 85_820_928),
])
def test_default_counts_and_maps_equal_the_references(preset, make, count):
    with torch.device("meta"):
        ref = make()
    s = load(SPEC, preset=preset)
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == count
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == count


def test_published_classifier_count_and_map_equal_the_reference():
    with torch.device("meta"):
        ref = T.Dinov2ForImageClassification(T.Dinov2Config(num_labels=1000))
    s = load(SPEC, overrides={"head": True})
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 87_262_696
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == 87_262_696


def test_a_built_model_starts_from_the_layerscale_value():
    model = graphformer.build(load(SPEC, preset="tiny", overrides={"layerscale": 1.0e-5}), seed=0)
    assert torch.equal(model.state_dict()["blocks.1.ls2.scale"], torch.full((32,), 1.0e-5))


def test_the_published_image_size_counts_too():
    """facebook/dinov2-base's config.json has image_size 518: a 37 × 37 table."""
    with torch.device("meta"):
        ref = T.Dinov2Model(T.Dinov2Config(image_size=518))
    assert total_params(load(SPEC, overrides={"image": 518}).ir) == sum(p.numel() for p in ref.parameters())


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "registers"])
def test_forward_equals_transformers(registers, size):
    _, ref, model = pair(registers, size)
    x, mask = pixels(size), random_mask(size)
    name = f"{'registers' if registers else 'dinov2'} {size[0]}x{size[1]}"
    with torch.no_grad():
        got, want = model(pixel_values=x), ref(pixel_values=x)
        assert_close(got["last_hidden_state"], want.last_hidden_state, f"{name} last_hidden_state")
        assert_close(got["pooler_output"], want.pooler_output, f"{name} pooler_output")
        got, want = model(pixel_values=x, bool_masked_pos=mask), ref(pixel_values=x, bool_masked_pos=mask)
        assert_close(got["last_hidden_state"], want.last_hidden_state, f"{name} masked")


@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "registers"])
def test_gradients_equal_transformers(registers):
    size = (49, 30)   # the positions are resized: their gradient flows back through the interpolation
    s, ref, model = pair(registers, size)
    ref = reference(registers)   # a fresh one: gradients accumulate
    model = ours(s, ref)
    x, mask = pixels(size), random_mask(size)
    weight = torch.randn(40, generator=torch.Generator().manual_seed(3))
    (model(pixel_values=x, bool_masked_pos=mask)["last_hidden_state"] * weight).sum().backward()
    (ref(pixel_values=x, bool_masked_pos=mask).last_hidden_state * weight).sum().backward()
    assert_mapped_grads(model, ref, s, f"dinov2 registers={registers}")


def test_the_map_reads_the_save_pretrained_layout(tmp_path):
    ref = reference(False)
    ref.save_pretrained(tmp_path)
    s, saved = spec(False), read_state_dict(str(tmp_path))
    assert "encoder.layer.0.attention.attention.query.weight" in saved     # the hub's names, not the module's
    got = convert_state_dict(s, saved, "hf")
    want = convert_state_dict(s, ref.state_dict(), "hf")
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(torch.as_tensor(got[k]), want[k]), k


# ---------------------------------------------------------------- ONNX

@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "registers"])
def test_onnx_runtime_equals_transformers(registers):
    for size in SIZES[1:3]:
        s, ref, model = pair(registers, size)
        sess = ort_session(s, model, opset=18, inputs=["bool_masked_pos"])
        for batch in (1, 3):
            x, mask = pixels(size, batch), random_mask(size, batch)
            (hidden,) = sess.run(["last_hidden_state"], {"pixel_values": x.numpy(), "bool_masked_pos": mask.numpy()})
            with torch.no_grad():
                want = ref(pixel_values=x, bool_masked_pos=mask).last_hidden_state
            assert_close(torch.from_numpy(hidden), want, f"onnx {registers} {size} B={batch}")


def test_an_antialiased_resize_is_refused_below_opset_18():
    from graphformer.backends.onnx import to_onnx
    s = spec(True, (49, 30))
    with pytest.raises(SpecError) as e:
        to_onnx(s, None, opset=17)
    (d,) = e.value.diagnostics
    assert d.code == "GF233" and d.node == "pos" and d.span is not None


def test_cli_export_refuses_before_reading_weights(tmp_path, capsys):
    rc = cli.main(["export", SPEC, "--preset", "dinov2-base-registers", "--weights", str(tmp_path / "none.safetensors"),
                   "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 1 and "GF233" in err and "Traceback" not in err, err
    assert not (tmp_path / "m.onnx").exists()


# The resize on its own, against torch.nn.functional.interpolate, where ONNX computes the size at run time
# (a symbolic image), for both modes with and without antialiasing.
GRID_ZOO = """
graphformer: 1
name: grid-zoo
params: {d: 6}
dims: {B: 2, H: 20, W: 12}
inputs:
  x:   {shape: [B, (H // 4) * (W // 4), d]}
  img: {shape: [B, 3, H, W]}
nodes:
  cubic:    {op: grid_positions, in: {x: x, image: img}, table: 3, patch: 4, prefix: 0}
  cls:      {op: prepend_tokens, in: x, count: 2}
  cubic_aa: {op: grid_positions, in: {x: cls, image: img}, table: 4, patch: 4, prefix: 2, antialias: true}
  linear:   {op: grid_positions, in: {x: x, image: img}, table: 5, patch: 4, prefix: 0, mode: bilinear}
  linear_aa: {op: grid_positions, in: {x: x, image: img}, table: 2, patch: 4, prefix: 0, mode: bilinear,
              antialias: true}
outputs: {cubic: cubic, cubic_aa: cubic_aa, linear: linear, linear_aa: linear_aa}
"""


def test_grid_positions_in_onnx_at_runtime_sizes(tmp_path):
    path = tmp_path / "grid-zoo.yaml"
    path.write_text(GRID_ZOO)
    s = load(str(path))
    model = graphformer.build(s, seed=3).eval()
    sess = ort_session(s, model, opset=18)
    for dims in ({"B": 2, "H": 20, "W": 12}, {"B": 1, "H": 9, "W": 30}, {"B": 2, "H": 16, "W": 16},
                 {"B": 1, "H": 4, "W": 7}):
        inputs = graphformer.example_inputs(s, dims=dims, seed=1)
        with torch.no_grad():
            want = model(**inputs)
        got = sess.run(list(s.outputs), {k: v.numpy() for k, v in inputs.items()})
        for name, y in zip(s.outputs, got):
            assert_close(torch.from_numpy(y), want[name], f"{name} at {dims}")


def lowered(op: str, attrs: dict, types: dict):
    node = IRNode("n", op, REGISTRY[op].attrs.model_validate(attrs), {p: f"in.{p}" for p in types}, None)
    module = LOWERINGS[op](node, types)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    return module


def test_grid_positions_equal_interpolate_by_hand():
    """The table's grid [S, S, d] is resized as an image with d channels (transformers' layout)."""
    mod = lowered("grid_positions", {"table": 3, "patch": 4}, {"x": TT(2, 11, 6), "image": TT(2, 3, 8, 22)})
    x, image = torch.randn(2, 11, 6), torch.zeros(2, 3, 8, 22)     # a 2 × 5 grid
    table = mod.weight.detach()
    grid = table[1:].reshape(1, 3, 3, 6).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(2, 5), mode="bicubic", align_corners=False)
    want = x + torch.cat([table[:1], resized.permute(0, 2, 3, 1).reshape(10, 6)])
    torch.testing.assert_close(mod(x, image), want, rtol=0, atol=0)
    # at the table's own grid nothing is resized
    same = lowered("grid_positions", {"table": 3, "patch": 4}, {"x": TT(2, 10, 6), "image": TT(2, 3, 12, 12)})
    x = torch.randn(2, 10, 6)
    assert torch.equal(same(x, torch.zeros(2, 3, 12, 13)), x + same.weight)


# ---------------------------------------------------------------- the element-wise ops and learned scales

def test_learned_scales_and_constants_equal_formulas():
    x = torch.randn(2, 5, 8) * 3
    ls = lowered("learned_scale", {"init": 0.25}, {"x": TT(2, 5, 8)})
    with torch.no_grad():
        ls.init_parameters()
    assert torch.equal(ls.scale, torch.full((8,), 0.25))
    assert torch.equal(ls(x), x * 0.25)
    gate = lowered("learned_scale", {"per": "scalar", "act": "tanh", "init": 0.0}, {"x": TT(2, 5, 8)})
    with torch.no_grad():
        gate.init_parameters()
    assert gate.scale.shape == () and torch.equal(gate(x), torch.zeros_like(x))   # a gate starts closed
    with torch.no_grad():
        gate.scale.fill_(0.7)
    torch.testing.assert_close(gate(x), x * np.tanh(0.7), rtol=1e-6, atol=0)
    assert torch.equal(lowered("offset", {"by": -1.5}, {"x": TT(2, 5, 8)})(x), x - 1.5)
    assert torch.equal(lowered("clamp", {"min": -1.0, "max": 2.0}, {"x": TT(2, 5, 8)})(x), x.clamp(-1.0, 2.0))
    assert torch.equal(lowered("clamp", {"max": 0.0}, {"x": TT(2, 5, 8)})(x), x.clamp(max=0.0))
    capped = lowered("softcap", {"cap": 2.0}, {"x": TT(2, 5, 8)})(x)
    assert torch.equal(capped, torch.tanh(x / 2.0) * 2.0) and capped.abs().max() < 2.0


def test_mask_tokens_and_registers_after_cls():
    masked = lowered("mask_tokens", {}, {"x": TT(2, 4, 3), "mask": TT(2, 4, dtype="bool")})
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, False, False, True], [False] * 4])
    y = masked(x, mask)
    assert torch.equal(y[0, 0], masked.token.detach()) and torch.equal(y[0, 1:3], x[0, 1:3]) and torch.equal(y[1], x[1])
    assert torch.equal(masked(x), x)
    regs = lowered("prepend_tokens", {"count": 2, "at": 1}, {"x": TT(2, 4, 3)})
    y = regs(x)
    assert torch.equal(y[:, :1], x[:, :1]) and torch.equal(y[:, 3:], x[:, 1:])
    assert torch.equal(y[1, 1:3], regs.tokens.detach())


# ---------------------------------------------------------------- import hf

@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "registers"])
def test_import_hf_then_build_with_the_checkpoint(registers, tmp_path, capsys):
    ref = reference(registers)
    ref.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "spec.yaml"
    rc = cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 0 and "warning" not in err, err
    s = graphformer.load(str(out), overrides={"height": 49, "width": 30})
    assert s.params["registers"] == (3 if registers else 0) and s.params["antialias"] is registers
    model = graphformer.build(s).eval()
    load_weights(model, read_state_dict(str(tmp_path / "ckpt")), "hf", s)
    x = pixels((49, 30))
    with torch.no_grad():
        assert_close(model(pixel_values=x)["last_hidden_state"], ref(pixel_values=x).last_hidden_state,
                     f"imported {registers}")


@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "registers"])
def test_a_classification_checkpoint_imports_and_equals_transformers(registers, tmp_path, capsys):
    if registers:
        ref = randomize(T.Dinov2WithRegistersForImageClassification(T.Dinov2WithRegistersConfig(
            num_register_tokens=3, num_labels=6, **SMALL)))
    else:
        ref = randomize(T.Dinov2ForImageClassification(T.Dinov2Config(num_labels=6, **SMALL)))
    ref.save_pretrained(tmp_path / "ckpt")
    rc = cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "spec.yaml")])
    err = capsys.readouterr().err
    assert rc == 0 and "warning" not in err, err
    s = graphformer.load(str(tmp_path / "spec.yaml"), overrides={"height": 49, "width": 30})
    assert s.params["head"] is True and s.params["classes"] == 6
    assert s.params["registers"] == (3 if registers else 0)
    model = graphformer.build(s).eval()
    load_weights(model, read_state_dict(str(tmp_path / "ckpt")), "hf", s)
    x = pixels((49, 30))
    with torch.no_grad():
        assert_close(model(pixel_values=x)["logits"], ref(pixel_values=x).logits, f"dinov2 imported logits {registers}")


def test_the_head_leaves_the_registers_out_of_the_mean():
    ref = randomize(T.Dinov2WithRegistersForImageClassification(T.Dinov2WithRegistersConfig(
        num_register_tokens=3, num_labels=4, **SMALL)))
    weights = ref.state_dict()                  # `dinov2_with_registers.`-prefixed: the map strips it
    s = load(SPEC, overrides=dict(image=35, patch=7, d_model=40, heads=5, layers=2, d_ff=120, layerscale=0.5,
                                  registers=3, antialias=True, head=True, classes=4))
    model = graphformer.build(s, seed=1).eval()
    load_weights(model, weights, "hf")
    x = pixels((35, 35))
    with torch.no_grad():
        assert_close(model(pixel_values=x)["logits"], ref(pixel_values=x).logits, "dinov2 registers logits")


def test_onnx_runtime_equals_the_classification_reference():
    ref = randomize(T.Dinov2ForImageClassification(T.Dinov2Config(num_labels=6, **SMALL)))
    s = load(SPEC, overrides=dict(image=35, patch=7, d_model=40, heads=5, layers=2, d_ff=120, layerscale=0.5,
                                  head=True, classes=6))
    assert_ort_equals_reference(s, ref, [{"pixel_values": pixels((35, 35), b, seed=b)} for b in (1, 3)], ["logits"],
                                "dinov2 classifier onnx")


@pytest.mark.parametrize("cfg,field", [
    ({"model_type": "dinov2", "use_swiglu_ffn": True}, "use_swiglu_ffn"),
    ({"model_type": "dinov2", "use_mask_token": False}, "use_mask_token"),
    ({"model_type": "dinov2", "image_size": [224, 112]}, "image_size"),
    ({"model_type": "dinov2_with_registers", "num_register_tokens": -1}, "num_register_tokens"),
])
def test_refused_dinov2_configs_name_the_field(cfg, field, tmp_path, capsys):
    import json
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    rc = cli.main(["import", "hf", str(path), "-o", str(tmp_path / "out.yaml")])
    err = capsys.readouterr().err
    assert rc == 1 and field in err and "Traceback" not in err, err


def test_non_finite_constants_are_refused_where_written(tmp_path, capsys):
    """inf and nan never reach a module (nor the generated forward, which holds the numbers' reprs)."""
    path = tmp_path / "case.yaml"
    path.write_text("graphformer: 1\nname: case\ndims: {B: 2, n: 3}\ninputs:\n  x: {shape: [B, n, 8]}\nnodes:\n"
                    "  a: {op: offset, by: .inf}\n  b: {op: softcap, cap: .nan}\n"
                    "  c: {op: learned_scale, init: -.inf}\n"
                    "outputs: {y: c}\n")
    rc = cli.main(["check", str(path)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("error[GF102]") == 3 and "case.yaml:7:23" in err and "Traceback" not in err, err
