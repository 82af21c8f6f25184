"""Weight-map rules beyond rename / transpose / split (docs/weight-maps.md): `reshape`, `scale`, and `zero`
for parameters the reference lacks. numpy state dicts (what safetensors gives without torch), torch ones
where the kind of the result matters; each error names both sides."""
from __future__ import annotations

import numpy as np
import pytest

import graphformer
from graphformer.weights.maps import WeightMapError, convert_state_dict

SPEC = """\
graphformer: 1
name: rules
params: {d: 4, layers: 2}
dims: {B: 2, n: 3}
inputs:
  x: {shape: [B, n, d]}
  a: {shape: [B, d, n]}
blocks:
  layer:
    inputs: {x: [B, n, d]}
    nodes:
      attn: {op: attention, heads: 2}
      up:   {op: linear, out: 6}
    outputs: {y: up}
nodes:
  conv:   {op: conv1d, in: a, out: 5, kernel: 1}
  layers: {op: layer, in: x, repeat: layers}
outputs: {y: layers, c: conv}
weight_maps:
  ref:
    rules:
      - {from: conv.flat, to: conv.weight, reshape: true}
      - {from: conv.b, to: conv.bias, scale: 0.5}
      - {from: "l.{i}.qkv", split: blocks, to: ["layers.{i}.attn.q.weight", "layers.{i}.attn.k.weight",
                                 "layers.{i}.attn.v.weight"], transpose: true, scale: 2}
      - {from: "l.{i}.q_bias", to: "layers.{i}.attn.q.bias"}
      - {from: "l.{i}.v_bias", to: "layers.{i}.attn.v.bias"}
      - {to: "layers.{i}.attn.k.bias", zero: true}
      - {to: ["layers.{i}.attn.o.bias", "layers.{i}.up.bias"], zero: true}
      - {from: "l.{i}.o", to: "layers.{i}.attn.o.weight"}
      - {from: "l.{i}.up", to: "layers.{i}.up.weight"}
"""


def reference(kind=np.float32):
    rng = np.random.default_rng(0)
    sd = {"conv.flat": rng.standard_normal(5 * 4), "conv.b": rng.standard_normal(5)}
    for i in range(2):
        sd |= {f"l.{i}.qkv": rng.standard_normal((4, 12)), f"l.{i}.q_bias": rng.standard_normal(4),
               f"l.{i}.v_bias": rng.standard_normal(4), f"l.{i}.o": rng.standard_normal((4, 4)),
               f"l.{i}.up": rng.standard_normal((6, 4))}
    return {k: v.astype(kind) for k, v in sd.items()}


@pytest.fixture
def spec(tmp_path):
    def load(text=SPEC):
        path = tmp_path / "rules.yaml"
        path.write_text(text)
        return graphformer.load(str(path))
    return load


def test_reshape_scale_and_zero(spec):
    sd = reference()
    out = convert_state_dict(spec(), sd, "ref")
    assert out["conv.weight"].shape == (5, 4, 1)
    np.testing.assert_array_equal(out["conv.weight"].ravel(), sd["conv.flat"])
    np.testing.assert_array_equal(out["conv.bias"], sd["conv.b"] * 0.5)
    np.testing.assert_array_equal(out["layers.1.attn.k.weight"], 2 * sd["l.1.qkv"].T[4:8])
    for name in ("layers.0.attn.k.bias", "layers.1.attn.k.bias", "layers.1.attn.o.bias", "layers.0.up.bias"):
        assert out[name].dtype == np.float32 and not out[name].any()
    assert out["conv.bias"].dtype == np.float32        # scaling keeps the reference's dtype


def test_scale_may_be_arithmetic_over_params(spec):
    text = SPEC.replace("{from: conv.b, to: conv.bias, scale: 0.5}", '{from: conv.b, to: conv.bias, scale: "d ** -0.5"}')
    sd = reference()
    out = convert_state_dict(spec(text), sd, "ref")
    np.testing.assert_allclose(out["conv.bias"], sd["conv.b"] * 4 ** -0.5)
    assert spec(text).ir.weight_maps["ref"].rules[1].scale == 0.5


def test_zeros_take_the_references_kind_dtype_and_device(spec):
    torch = pytest.importorskip("torch")
    sd = {k: torch.from_numpy(v).to(torch.float64) for k, v in reference().items()}
    out = convert_state_dict(spec(), sd, "ref")
    assert out["layers.0.attn.k.bias"].dtype == torch.float64 and out["layers.0.attn.k.bias"].shape == (4,)
    meta = convert_state_dict(spec(), {k: v.to("meta") for k, v in sd.items()}, "ref")
    assert meta["layers.1.up.bias"].device.type == "meta"


def test_a_reference_tensor_where_the_map_declares_zeros(spec):
    sd = reference()
    rules = SPEC.replace('      - {from: "l.{i}.o", to', '      - {from: "l.{i}.k_bias", to: "layers.{i}.attn.k.bias"}\n'
                                                         '      - {from: "l.{i}.o", to')
    zero = convert_state_dict(spec(rules), {**sd, "l.0.k_bias": np.zeros(4, np.float32)}, "ref")
    assert not zero["layers.0.attn.k.bias"].any()       # a zero tensor agrees with the declaration
    with pytest.raises(WeightMapError) as e:
        convert_state_dict(spec(rules), {**sd, "l.1.k_bias": np.ones(4, np.float32)}, "ref")
    assert str(e.value) == ("reference tensor `l.1.k_bias` sets spec parameter `layers.1.attn.k.bias`, which map "
                            "`ref` declares absent (`zero: true`), to values that are not all zero")


def test_reshape_of_a_different_element_count_says_so(spec):
    sd = reference()
    sd["conv.flat"] = sd["conv.flat"][:18]
    with pytest.raises(WeightMapError) as e:
        convert_state_dict(spec(), sd, "ref")
    assert str(e.value) == ("shape mismatch: spec parameter `conv.weight` is [5, 4, 1] but reference tensor "
                            "`conv.flat` gives [18] (reshape: 18 elements for 20)")


def test_without_reshape_only_unit_axes_may_differ(spec):
    text = SPEC.replace("{from: conv.flat, to: conv.weight, reshape: true}", "{from: conv.flat, to: conv.weight}")
    with pytest.raises(WeightMapError, match=r"`conv.weight` is \[5, 4, 1\] but reference tensor `conv.flat` "
                                             r"gives \[20\]$"):
        convert_state_dict(spec(text), reference(), "ref")


@pytest.mark.parametrize("rule,message", [
    ('{from: x, to: conv.bias, zero: true}', "`zero: true` declares parameters the reference lacks: it takes no `from`"),
    ('{to: conv.bias}', "a rule reads a reference tensor named by `from`, or sets zeros with `zero: true`"),
    ('{to: conv.bias, zero: true, scale: 2}', "`zero: true` has no tensor to transpose, unstack, reshape or scale"),
    ('{to: "e.{e}.bias", zero: true}', "with `zero: true` the placeholder is `{i}`"),
    ('{from: x, to: conv.bias, scale: .inf}', "`scale` must be a finite number"),
    ('{from: x, to: conv.bias, scale: "d ** -"}', "GF130"),
    ('{from: x, to: conv.bias, scale: "heads * 2"}', "`heads` is not a numeric param"),
    ('{from: x, to: conv.bias, scale: true}', "scale"),
])
def test_rule_mistakes_are_spec_errors_at_their_line(spec, rule, message):
    text = SPEC.replace("      - {from: conv.b, to: conv.bias, scale: 0.5}", f"      - {rule}")
    with pytest.raises(graphformer.SpecError) as e:
        spec(text)
    assert message in str(e.value) or message in [d.code for d in e.value.diagnostics]
    assert "rules.yaml:23:" in str(e.value)                # the rule's own line


def test_to_reference_inverts_reshape_scale_and_zero(spec):
    from graphformer.weights.maps import to_reference
    s, sd = spec(), reference()
    ours = convert_state_dict(s, sd, "ref")
    back = to_reference(s, ours, "ref", reference=sd)
    assert set(back) == set(sd)                          # no key for the zero-filled parameters
    for k, v in sd.items():
        np.testing.assert_allclose(back[k], v, rtol=1e-6, err_msg=k)
    # without the reference, `reshape: true` can't know the stored shape (GF301) until the rule says it
    with pytest.raises(WeightMapError, match="GF301"):
        to_reference(s, ours, "ref")
    s = spec(SPEC.replace("reshape: true}", "reshape: true, stored_shape: [20]}"))
    back = to_reference(s, ours, "ref")
    assert back["conv.flat"].shape == (20,)
    again = convert_state_dict(s, back, "ref")
    for k, v in ours.items():
        np.testing.assert_allclose(again[k], v, rtol=1e-6, err_msg=k)
