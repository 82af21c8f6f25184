"""Parity of specs/wav2vec2.yaml with transformers' Wav2Vec2Model, and what it added to the language: `group_norm`,
`conv1d`'s `groups`, `drop_last` and `weight_norm`, and the weight-map rules that build one tensor from two
(`weight_norm: AXIS`, `multiply: AXIS`).

References are built offline from configs with random weights, every parameter perturbed, at small odd
configurations: 5 heads over a width of 40, three convolutions of 12 channels with kernels 4, 3, 2 and strides
3, 2, 2, a positional convolution of 4 groups with an even kernel (6: a frame dropped) and an odd one (5: none),
waveforms whose length leaves samples past the last frame. fp32, eval mode, max abs error ≤ 1e-5 × the
output's scale, forward and every parameter's gradient; ONNX Runtime against both. At the default sizes
(= facebook/wav2vec2-base), on the meta device: the parameter count equals the reference's and the map covers
its whole state dict.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import WeightMapError, convert_state_dict, read_state_dict, to_reference  # noqa: E402
from parity import assert_close, assert_mapped_grads, ort_session, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/wav2vec2.yaml"
CONV = dict(conv_dim=(12, 12, 12), conv_kernel=(4, 3, 2), conv_stride=(3, 2, 2))
HOP, RECEPTIVE = 12, 16          # 3·2·2 samples per frame; 4 + 2·3 + 1·6 samples read by one


def config(pos_kernel: int = 6, **kw):
    return T.Wav2Vec2Config(hidden_size=40, num_hidden_layers=2, num_attention_heads=5, intermediate_size=56,
                            num_conv_pos_embeddings=pos_kernel, num_conv_pos_embedding_groups=4, **{**CONV, **kw})


def spec(pos_kernel: int = 6, path: str = SPEC, **sets):
    return load(path, overrides=dict(conv_dim=12, kernel0=4, stride0=3, conv_kernels=[3, 2], conv_strides=[2, 2],
                                     conv_layers=2, hop=HOP, receptive=RECEPTIVE, d_model=40, heads=5, layers=2,
                                     d_ff=56, pos_kernel=pos_kernel, pos_groups=4, **sets))


def audio(frames: int, extra: int = 5, batch: int = 2, seed: int = 1):
    """A waveform of `frames` frames plus `extra` samples that fill no frame, and a time mask over the frames."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, HOP * (frames - 1) + RECEPTIVE + extra, generator=g)
    return x, torch.rand(batch, frames, generator=g) < 0.3


REFS = {}


def pair(pos_kernel: int = 6):
    if pos_kernel not in REFS:
        REFS[pos_kernel] = randomize(T.Wav2Vec2Model(config(pos_kernel)))
    ref = REFS[pos_kernel]
    s = spec(pos_kernel)
    return s, ref, ours(s, ref)


# ---------------------------------------------------------------- counts and maps at the default sizes

@pytest.mark.slow   # ~8 s to build the reference on meta; the count alone is checked fast by the import test below
def test_default_count_and_map_equal_wav2vec2_base():
    with torch.device("meta"):
        ref = T.Wav2Vec2Model(T.Wav2Vec2Config())     # the defaults are facebook/wav2vec2-base's config
    s = load(SPEC)
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 94_371_712
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == 94_371_712


def test_the_tiny_preset_builds_and_runs():
    s = load(SPEC, preset="tiny")
    model = graphformer.build(s, seed=0).eval()
    with torch.no_grad():
        out = model(**graphformer.example_inputs(s, seed=0))
    assert out["last_hidden_state"].shape == (2, 8, 32) and out["extract_features"].shape == (2, 8, 16)


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("pos_kernel", [6, 5], ids=["even-kernel", "odd-kernel"])
@pytest.mark.parametrize("frames,extra", [(9, 5), (4, 0), (13, 11)])
def test_forward_equals_transformers(pos_kernel, frames, extra):
    _, ref, model = pair(pos_kernel)
    x, mask = audio(frames, extra)
    what = f"k{pos_kernel} t={frames}+{extra}"
    with torch.no_grad():
        got, want = model(input_values=x), ref(x)
        assert_close(got["last_hidden_state"], want.last_hidden_state, f"{what} last_hidden_state")
        assert_close(got["extract_features"], want.extract_features, f"{what} extract_features")
        got, want = model(input_values=x, mask_time_indices=mask), ref(x, mask_time_indices=mask)
        assert_close(got["last_hidden_state"], want.last_hidden_state, f"{what} masked")


def test_gradients_equal_transformers():
    s = spec()
    ref = randomize(T.Wav2Vec2Model(config()))
    model = ours(s, ref)
    x, mask = audio(9)
    weight = torch.randn(40, generator=torch.Generator().manual_seed(3))
    (model(input_values=x, mask_time_indices=mask)["last_hidden_state"] * weight).sum().backward()
    (ref(x, mask_time_indices=mask).last_hidden_state * weight).sum().backward()
    assert {"pos_conv.weight_g", "pos_conv.weight_v", "norm0.weight"} <= dict(model.named_parameters()).keys()
    assert_mapped_grads(model, ref, s, "wav2vec2")


def test_the_map_reads_what_save_pretrained_writes_and_the_older_weight_g_layout(tmp_path):
    s, ref, _ = pair()
    ref.save_pretrained(tmp_path)
    saved = read_state_dict(str(tmp_path))
    assert "encoder.pos_conv_embed.conv.parametrizations.weight.original1" in saved
    want = convert_state_dict(s, ref.state_dict(), "hf")
    older = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                  "weight_v"): v for k, v in saved.items()}
    for sd in (saved, older, {f"wav2vec2.{k}": v for k, v in ref.state_dict().items()}):   # ForCTC's prefix
        got = convert_state_dict(s, sd, "hf")
        assert set(got) == set(want) and all(torch.equal(torch.as_tensor(got[k]), want[k]) for k in want)


def test_a_built_model_starts_with_the_weight_equal_to_v():
    """Like torch's weight_norm: g = ‖v‖ at init, so the first weight is v itself."""
    model = graphformer.build(load(SPEC, preset="tiny"), seed=0)
    conv = model.get_submodule("pos_conv")
    v, g = conv.weight_v.detach(), conv.weight_g.detach()
    assert g.shape == (1, 1, 4) and torch.allclose(torch._weight_norm(v, g, 2), v)


# ---------------------------------------------------------------- ONNX

def test_onnx_runtime_equals_transformers():
    s, ref, model = pair()
    sess = ort_session(s, model, opset=18, inputs=["mask_time_indices"])
    for frames, extra, batch in ((9, 5, 2), (4, 0, 1), (13, 11, 3)):
        x, mask = audio(frames, extra, batch)
        hidden, feats = sess.run(["last_hidden_state", "extract_features"],
                                 {"input_values": x.numpy(), "mask_time_indices": mask.numpy()})
        with torch.no_grad():
            want = ref(x, mask_time_indices=mask)
        assert_close(torch.from_numpy(hidden), want.last_hidden_state, f"onnx t={frames} B={batch}")
        assert_close(torch.from_numpy(feats), want.extract_features, f"onnx features t={frames} B={batch}")


# ---------------------------------------------------------------- the ops against torch.nn

def _built(text: str, tmp_path, **dims):
    path = tmp_path / "zoo.yaml"
    path.write_text(text)
    s = load(str(path))
    return s, graphformer.build(s, seed=3).eval()


OPS = """
graphformer: 1
name: zoo
dims: {B: 2, t: 11}
inputs:
  x: {shape: [B, 6, t]}
  img: {shape: [B, 6, 3, t]}
nodes:
  grouped: {op: conv1d, in: x, out: 9, kernel: 3, groups: 3, padding: 2, dilation: 2, stride: 2}
  normed:  {op: conv1d, in: x, out: 4, kernel: 4, groups: 2, padding: 2, weight_norm: 0, drop_last: 2, bias: false}
  gn:      {op: group_norm, in: x, groups: 2, eps: 1.0e-3}
  gn4:     {op: group_norm, in: img, groups: 3}
  gn_bare: {op: group_norm, in: x, groups: 6, affine: false}
outputs: {grouped: grouped, normed: normed, gn: gn, gn4: gn4, gn_bare: gn_bare}
"""


def test_the_ops_equal_torch_nn(tmp_path):
    s, model = _built(OPS, tmp_path)
    sd = model.state_dict()
    x, img = torch.randn(2, 6, 11), torch.randn(2, 6, 3, 11)
    grouped = torch.nn.Conv1d(6, 9, 3, stride=2, padding=2, dilation=2, groups=3)
    normed = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(6, 4, 4, padding=2, groups=2, bias=False), dim=0)
    gn, gn4, bare = torch.nn.GroupNorm(2, 6, eps=1e-3), torch.nn.GroupNorm(3, 6), torch.nn.GroupNorm(6, 6, affine=False)
    with torch.no_grad():
        grouped.weight.copy_(sd["grouped.weight"]), grouped.bias.copy_(sd["grouped.bias"])
        normed.parametrizations.weight.original0.copy_(sd["normed.weight_g"])
        normed.parametrizations.weight.original1.copy_(sd["normed.weight_v"])
        for mod, name in ((gn, "gn"), (gn4, "gn4")):
            mod.weight.copy_(torch.randn(6)), mod.bias.copy_(torch.randn(6))
            model.get_submodule(name).weight.copy_(mod.weight), model.get_submodule(name).bias.copy_(mod.bias)
        got = model(x=x, img=img)
        assert_close(got["grouped"], grouped(x), "grouped conv")
        assert_close(got["normed"], normed(x)[..., :-2], "weight-normed conv, 2 frames dropped")
        assert_close(got["gn"], gn(x), "group norm")
        assert_close(got["gn4"], gn4(img), "group norm, 4-D")
        assert_close(got["gn_bare"], bare(x), "group norm without affine")
    assert sd["normed.weight_g"].shape == (4, 1, 1) and sd["normed.weight_v"].shape == (4, 3, 4)
    # ONNX Runtime equals the torch build, at another length
    sess = ort_session(s, model, opset=18)
    x, img = torch.randn(3, 6, 17), torch.randn(3, 6, 3, 17)
    with torch.no_grad():
        want = model(x=x, img=img)
    for name, y in zip(s.outputs, sess.run(list(s.outputs), {"x": x.numpy(), "img": img.numpy()})):
        assert_close(torch.from_numpy(y), want[name], f"onnx {name}")


@pytest.mark.parametrize("node,code", [
    ("{op: conv1d, in: x, out: 8, kernel: 3, groups: 4}", "GF267"),        # 6 input channels
    ("{op: conv1d, in: x, out: 9, kernel: 3, groups: 3}", None),
    ("{op: conv1d, in: x, out: 7, kernel: 3, groups: 3}", "GF267"),        # 7 output channels
    ("{op: group_norm, in: x, groups: 4}", "GF267"),
    ("{op: conv1d, in: x, out: 6, kernel: 3, drop_last: 9}", "GF268"),     # 9 frames, all dropped
])
def test_bad_groups_and_drop_last_are_reported_where_written(tmp_path, node, code):
    path = tmp_path / "bad.yaml"
    path.write_text(f"graphformer: 1\nname: bad\ndims: {{B: 2}}\ninputs:\n  x: {{shape: [B, 6, 11]}}\n"
                    f"nodes:\n  n: {node}\noutputs: {{y: n}}\n")
    if code is None:
        load(str(path))
        return
    with pytest.raises(SpecError) as e:
        load(str(path))
    (d,) = e.value.diagnostics
    assert d.code == code and d.span is not None and d.span.line == 7, d


# ---------------------------------------------------------------- building a tensor from two: the map rules

def test_a_plain_weight_spec_loads_weight_norm_through_a_rule(tmp_path):
    """A spec whose positional conv has a plain weight: `from: [g, v], weight_norm: 2` builds it. Equal to the
    reference; written back as g = ‖w‖, v = w, which loads into the reference and computes the same, and reading
    that back gives the spec's weight bit for bit."""
    text = open(SPEC).read().replace("weight_norm: 2, drop_last", "drop_last").replace(
        "      - {from: encoder.pos_conv_embed.conv.parametrizations.weight.original0, to: pos_conv.weight_g}\n"
        "      - {from: encoder.pos_conv_embed.conv.parametrizations.weight.original1, to: pos_conv.weight_v}\n"
        "      - {from: encoder.pos_conv_embed.conv.weight_g, to: pos_conv.weight_g}\n"
        "      - {from: encoder.pos_conv_embed.conv.weight_v, to: pos_conv.weight_v}\n",
        "      - {from: [encoder.pos_conv_embed.conv.parametrizations.weight.original0,\n"
        "                encoder.pos_conv_embed.conv.parametrizations.weight.original1], weight_norm: 2,\n"
        "         to: pos_conv.weight}\n")
    path = tmp_path / "wav2vec2-plain.yaml"
    path.write_text(text)
    s = spec(path=str(path))
    ref = randomize(T.Wav2Vec2Model(config()))
    model = ours(s, ref)
    x, mask = audio(9)
    with torch.no_grad():
        assert_close(model(input_values=x)["last_hidden_state"], ref(x).last_hidden_state, "plain weight")
    sd = ref.state_dict()
    w = model.state_dict()["pos_conv.weight"]
    back = to_reference(s, model.state_dict(), "hf", reference=sd)
    assert list(back) == list(sd)
    g, v = (back[f"encoder.pos_conv_embed.conv.parametrizations.weight.original{k}"] for k in (0, 1))
    assert g.shape == (1, 1, 6) and torch.equal(v, w)       # not the reference's own factors: v's length is free
    assert torch.equal(convert_state_dict(s, back, "hf")["pos_conv.weight"], w)    # spec → ref → spec: exact
    again = randomize(T.Wav2Vec2Model(config()), seed=5)
    again.load_state_dict(back)
    with torch.no_grad():
        assert_close(again(x).last_hidden_state, ref(x).last_hidden_state, "written back")
    # numpy arrays (a safetensors file read without torch) take the same rule
    arrays = convert_state_dict(s, {k: t.numpy() for k, t in sd.items()}, "hf")
    assert np.allclose(arrays["pos_conv.weight"], w.numpy(), atol=1e-6)


RULES = """
graphformer: 1
name: rules
params: {d: 4}
dims: {B: 2, n: 3}
inputs:
  x: {shape: [B, n, d]}
nodes:
  up: {op: linear, out: 6}
outputs: {y: up}
weight_maps:
  ref:
    rules:
      - RULE
      - {from: b, to: up.bias}
"""


def _rules(tmp_path, rule: str):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace("RULE", rule))
    return load(str(path))


def test_multiply_folds_a_per_channel_scale(tmp_path):
    """LayerScale folded into the layer before it: its weight's rows and its bias, one scale feeding both."""
    path = tmp_path / "fold.yaml"
    path.write_text(RULES.replace("RULE", "{from: [w, gamma], multiply: 0, to: up.weight}").replace(
        "{from: b, to: up.bias}", "{from: [b, gamma], multiply: 0, to: up.bias}"))
    s = load(str(path))
    sd = {"w": torch.randn(6, 4), "gamma": torch.randn(6), "b": torch.randn(6)}
    got = convert_state_dict(s, sd, "ref")
    assert torch.equal(got["up.weight"], sd["w"] * sd["gamma"][:, None])
    assert torch.equal(got["up.bias"], sd["b"] * sd["gamma"])
    back = to_reference(s, got, "ref", reference=sd)
    assert torch.equal(back["w"], got["up.weight"]) and torch.equal(back["gamma"], torch.ones(6))
    assert torch.equal(back["b"], got["up.bias"])
    again = convert_state_dict(s, back, "ref")
    assert torch.equal(again["up.weight"], got["up.weight"]) and torch.equal(again["up.bias"], got["up.bias"])
    sd = {"w": torch.randn(6, 4), "gamma": torch.randn(6), "b": torch.randn(6)}
    s = _rules(tmp_path, "{from: [w, gamma], multiply: 1, to: up.weight}")       # per input column
    got = convert_state_dict(s, {**sd, "gamma": torch.arange(4.0)}, "ref")
    assert torch.equal(got["up.weight"], sd["w"] * torch.arange(4.0))
    with pytest.raises(WeightMapError, match=r"rule `w` \(multiply along axis 0\).*\[6, 4\], \[5\]"):
        convert_state_dict(_rules(tmp_path, "{from: [w, gamma], multiply: 0, to: up.weight}"),
                           {**sd, "gamma": torch.randn(5)}, "ref")


def test_weight_norm_keeps_a_zero_slice_zero_on_the_way_back(tmp_path):
    s = _rules(tmp_path, "{from: [g, v], weight_norm: 0, to: up.weight}")
    w = torch.randn(6, 4)
    w[2] = 0
    back = to_reference(s, {"up.weight": w, "up.bias": torch.zeros(6)}, "ref")
    assert back["g"].shape == (6, 1) and back["g"][2, 0] == 0 and torch.equal(back["v"][2], torch.ones(4))
    assert torch.equal(convert_state_dict(s, back, "ref")["up.weight"], w)


@pytest.mark.parametrize("rule", [
    "{from: [g, v, u], weight_norm: 0, to: up.weight}",
    "{from: [g, v], weight_norm: 0, concat: 0, to: up.weight}",
    "{from: [g, v], multiply: 0, split: blocks, to: [up.weight, up.bias]}",
])
def test_a_malformed_building_rule_is_gf269(tmp_path, rule):
    with pytest.raises(SpecError) as e:
        _rules(tmp_path, rule)
    assert [d.code for d in e.value.diagnostics] == ["GF269"] and e.value.diagnostics[0].span.line == 14


# ---------------------------------------------------------------- import hf

def test_import_hf_of_a_save_pretrained_directory_equals_transformers(tmp_path, capsys):
    import cli
    ref = randomize(T.Wav2Vec2Model(config()))
    ref.save_pretrained(tmp_path / "ckpt")
    rc = cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "spec.yaml")])
    err = capsys.readouterr().err
    assert rc == 0 and "warning" not in err, err      # every field save_pretrained writes is known
    s = load(str(tmp_path / "spec.yaml"))
    assert s.params["conv_kernels"] == [3, 2] and s.params["hop"] == HOP and s.params["receptive"] == RECEPTIVE
    model = graphformer.build(s).eval()
    graphformer.load_weights(model, read_state_dict(str(tmp_path / "ckpt")), "hf")
    x, mask = audio(9)
    with torch.no_grad():
        assert_close(model(input_values=x, mask_time_indices=mask)["last_hidden_state"],
                     ref(x, mask_time_indices=mask).last_hidden_state, "imported")


def test_import_hf_at_the_published_config_counts_wav2vec2_base(tmp_path, capsys):
    import cli
    T.Wav2Vec2Config().save_pretrained(tmp_path)
    assert cli.main(["summary", str(tmp_path)]) == 0      # a directory with a config.json is a spec source
    assert "94,371,712" in capsys.readouterr().out


@pytest.mark.parametrize("field,value", [("feat_extract_norm", "layer"), ("do_stable_layer_norm", True),
                                         ("conv_dim", [12, 16, 12]), ("apply_spec_augment", False)])
def test_import_hf_refuses_what_the_spec_cant_say(tmp_path, capsys, field, value):
    import cli
    config(**{field: value}).save_pretrained(tmp_path)
    rc = cli.main(["import", "hf", str(tmp_path), "-o", str(tmp_path / "spec.yaml")])
    err = capsys.readouterr().err
    assert rc == 1 and field in err and "Traceback" not in err, err
    assert not (tmp_path / "spec.yaml").exists()
