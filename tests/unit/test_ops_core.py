"""Table-driven shape rules of the core ops: attrs + input shapes → output shape, or an error code."""
from __future__ import annotations

import pytest

from graphformer.ops import REGISTRY
from shape_cases import T, check_case

CASES = [
    # op, attrs, inputs, expected shape (tuple of str) or error code
    ("embedding", {"vocab": 10, "dim": 8}, {"ids": T("B", "n", dtype="int64")}, ("B", "n", "8")),
    ("embedding", {"vocab": 10, "dim": 8}, {"ids": T("B", "n")}, "GF122"),
    ("positional", {"kind": "learned", "max_len": 16}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("positional", {"kind": "learned", "max_len": 16}, {"x": T("B", 17, 8)}, "GF120"),
    ("positional", {"kind": "sinusoidal", "max_len": 16}, {"x": T("B", "n", 7)}, "GF123"),
    ("positional", {"kind": "sinusoidal", "sinusoid": "halves", "stored": True, "max_len": 16}, {"x": T("B", "n", 8)},
     ("B", "n", "8")),
    ("positional", {"kind": "sinusoidal", "sinusoid": "halves", "max_len": 16}, {"x": T("B", "n", 2)}, "GF102"),
    ("positional", {"kind": "learned", "stored": True, "max_len": 16}, {"x": T("B", "n", 8)}, "GF102"),
    ("positional", {"kind": "learned", "sinusoid": "halves", "max_len": 16}, {"x": T("B", "n", 8)}, "GF102"),
    ("positional", {"max_len": 16}, {"x": T("B", 8)}, "GF121"),
    ("linear", {"out": 5}, {"x": T("B", "n", 8)}, ("B", "n", "5")),
    ("linear", {"out": 5}, {"x": T("B", "n", "d")}, "GF124"),
    ("linear", {"out": 5}, {"x": T(3)}, ("5",)),
    ("attention", {"heads": 4}, {"x": T("B", "n", 32)}, ("B", "n", "32")),
    ("attention", {"heads": 5}, {"x": T("B", "n", 32)}, "GF123"),
    ("attention", {"heads": 4}, {"x": T("B", 32)}, "GF121"),
    ("attention", {"heads": 4}, {"x": T("B", "n", 32), "mask": T("B", "n", dtype="int64")}, ("B", "n", "32")),
    ("attention", {"heads": 4}, {"x": T("B", "n", 32), "mask": T("B", "m", dtype="bool")}, "GF120"),
    ("attention", {"heads": 4}, {"x": T("B", "n", 32), "mask": T("B", "n")}, "GF122"),
    # a prefix LM's prefix [B, n]: bool or 0/1 int, with `causal` only
    ("attention", {"heads": 4, "causal": True}, {"x": T("B", "n", 32), "prefix": T("B", "n", dtype="int64")},
     ("B", "n", "32")),
    ("attention", {"heads": 4, "causal": True, "window": 4}, {"x": T("B", "n", 32), "prefix": T("B", "n", dtype="bool")},
     ("B", "n", "32")),
    ("attention", {"heads": 4}, {"x": T("B", "n", 32), "prefix": T("B", "n", dtype="int64")}, "GF288"),
    ("attention", {"heads": 4, "causal": True}, {"x": T("B", "n", 32), "prefix": T("B", "m", dtype="int64")}, "GF120"),
    ("attention", {"heads": 4, "causal": True}, {"x": T("B", "n", 32), "prefix": T("B", "n")}, "GF122"),
    ("attention", {"heads": 4, "causal": True}, {"x": T("B", "n", 32), "prefix": T("B", dtype="int64")}, "GF121"),
    # bidirectional blocks [B, n]: bool or int (runs of equal non-zero values), with `causal` only
    ("attention", {"heads": 4, "causal": True, "window": 4}, {"x": T("B", "n", 32), "blocks": T("B", "n", dtype="bool")},
     ("B", "n", "32")),
    ("attention", {"heads": 4, "causal": True}, {"x": T("B", "n", 32), "blocks": T("B", "n", dtype="int64")},
     ("B", "n", "32")),
    ("attention", {"heads": 4}, {"x": T("B", "n", 32), "blocks": T("B", "n", dtype="int64")}, "GF322"),
    ("attention", {"heads": 4, "causal": True}, {"x": T("B", "n", 32), "blocks": T("B", "m", dtype="int64")}, "GF120"),
    ("attention", {"heads": 4, "causal": True}, {"x": T("B", "n", 32), "blocks": T("B", "n")}, "GF122"),
    ("attention", {"heads": 4, "causal": True}, {"x": T("B", "n", 32), "blocks": T("B", dtype="bool")}, "GF121"),
    ("cross_attend", {"heads": 2}, {"query": T("B", "n", 16), "context": T("B", "m", 24)}, ("B", "n", "16")),
    ("cross_attend", {"heads": 2, "dim": 8, "out": 12}, {"query": T("B", "n", 16), "context": T("B", "m", 24)},
     ("B", "n", "12")),
    ("cross_attend", {"heads": 2}, {"query": T("B", "n", 16), "context": T("C", "m", 24)}, "GF120"),
    ("cross_attend", {"heads": 3}, {"query": T("B", "n", 16), "context": T("B", "m", 24)}, "GF123"),
    ("norm", {}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("norm", {"kind": "rms"}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("residual", {}, {"xs0": T("B", "n", 8), "xs1": T("B", "n", 8)}, ("B", "n", "8")),
    ("residual", {}, {"xs0": T("B", "n", 8), "xs1": T("B", "t", 8)}, "GF120"),
    ("residual", {}, {"xs0": T("B", "n", 8), "xs1": T("B", 8)}, "GF121"),
    ("gelu", {"approximate": "tanh"}, {"x": T("B", 3)}, ("B", "3")),
    ("softmax", {"axis": 1}, {"x": T("B", 3)}, ("B", "3")),
    ("softmax", {"axis": 2}, {"x": T("B", 3)}, "GF102"),
    ("concat", {"axis": 1}, {"xs0": T("B", "n", 8), "xs1": T("B", "m", 8)}, ("B", "m + n", "8")),
    ("concat", {"axis": -1}, {"xs0": T("B", "n", 8), "xs1": T("B", "n", 4)}, ("B", "n", "12")),
    ("concat", {"axis": 1}, {"xs0": T("B", "n", 8), "xs1": T("B", "m", 4)}, "GF120"),
    ("pool", {"kind": "cls"}, {"x": T("B", "n", 8)}, ("B", "8")),
    ("pool", {"kind": "mean"}, {"x": T("B", "n", 8)}, ("B", "8")),
    ("pool", {"kind": "cls", "index": 5}, {"x": T("B", 3, 8)}, "GF102"),
    ("dropout", {"p": 0.5}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("activation", {"kind": "gelu_tanh"}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("activation", {"kind": "silu"}, {"x": T("B", "n", dtype="int64")}, "GF122"),
    ("mul", {}, {"xs0": T("B", "n", 8), "xs1": T("B", "n", 8)}, ("B", "n", "8")),
    ("mul", {}, {"xs0": T("B", "n", 8), "xs1": T("B", "n", 4)}, "GF120"),
    # grouped-query, rotary, windows, head_dim
    ("attention", {"heads": 6, "kv_heads": 2}, {"x": T("B", "n", 48)}, ("B", "n", "48")),
    ("attention", {"heads": 6, "kv_heads": 4}, {"x": T("B", "n", 48)}, "GF123"),
    ("attention", {"heads": 4, "head_dim": 10}, {"x": T("B", "n", 30)}, ("B", "n", "30")),
    ("attention", {"heads": 4, "rope": True, "rope_dims": 3}, {"x": T("B", "n", 32)}, "GF102"),
    ("attention", {"heads": 4, "rope": True, "rope_dims": 10}, {"x": T("B", "n", 32)}, "GF102"),
    ("attention", {"heads": 4, "rope_dims": 4}, {"x": T("B", "n", 32)}, "GF102"),
    ("attention", {"heads": 4, "window": 4}, {"x": T("B", "n", 32)}, ("B", "n", "32")),    # bidirectional
    ("attention", {"heads": 4, "causal": True, "window": 0}, {"x": T("B", "n", 32)}, ("B", "n", "32")),
    ("attention", {"heads": 4, "softcap": 50.0}, {"x": T("B", "n", 32)}, ("B", "n", "32")),
    ("attention", {"heads": 4, "softcap": 0.0}, {"x": T("B", "n", 32)}, "GF220"),
    ("attention", {"heads": 4, "kv_heads": 2, "qk_norm": "rms_full"}, {"x": T("B", "n", 32)}, ("B", "n", "32")),
    ("softcap", {"cap": 30.0}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("softcap", {"cap": -1.0}, {"x": T("B", "n", 8)}, "GF220"),
    ("softcap", {"cap": 3.0}, {"x": T("B", "n", dtype="int64")}, "GF122"),
    ("norm", {"kind": "rms", "unit_offset": True}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("norm", {"kind": "rms", "groups": 4}, {"x": T("B", "n", 8)}, ("B", "n", "8")),          # Mamba-2's
    ("norm", {"kind": "rms", "groups": 3}, {"x": T("B", "n", 8)}, "GF299"),                  # 3 ∤ 8
    ("norm", {"groups": 2}, {"x": T("B", "n", 8)}, "GF299"),                                 # a layer norm
    ("norm", {"kind": "rms", "groups": 2, "unit_offset": True}, {"x": T("B", "n", 8)}, "GF299"),
    ("norm", {"kind": "rms", "groups": 0}, {"x": T("B", "n", 8)}, "GF102"),
    ("attention", {"heads": 4, "causal": True, "max_len": 8}, {"x": T("B", 9, 32)}, "GF120"),
    ("attention", {"heads": 4, "rope": True}, {"x": T("B", "n", 32), "positions": T("B", "n", dtype="int64")},
     ("B", "n", "32")),
    ("attention", {"heads": 4}, {"x": T("B", "n", 32), "positions": T("B", "n", dtype="int64")}, "GF106"),
    ("attention", {"heads": 4, "rope": True}, {"x": T("B", "n", 32), "positions": T("B", "m", dtype="int64")},
     "GF120"),
    # learned scales (LayerScale, tanh gates) and element-wise constants
    ("learned_scale", {}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("learned_scale", {"per": "scalar", "act": "tanh", "init": 0.0}, {"x": T("B", "n", "d")}, ("B", "n", "d")),
    ("learned_scale", {"dim": 8}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("learned_scale", {"dim": 6}, {"x": T("B", "n", 8)}, "GF230"),
    ("learned_scale", {"per": "scalar", "dim": 8}, {"x": T("B", "n", 8)}, "GF230"),
    ("learned_scale", {}, {"x": T("B", "n", "d")}, "GF124"),
    ("learned_scale", {}, {"x": T("B", "n", dtype="int64")}, "GF122"),
    ("offset", {"by": 1.5}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("clamp", {"min": -1.0, "max": 1.0}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("clamp", {"max": 0.0}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("clamp", {"min": 1.0, "max": -1.0}, {"x": T("B", "n", 8)}, "GF231"),
    ("clamp", {}, {"x": T("B", "n", 8)}, "GF231"),
]


@pytest.mark.parametrize("op,attrs,ins,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_shape_rule(op, attrs, ins, expected):
    check_case(op, attrs, ins, expected)


def test_core_ops_are_covered_by_the_table():
    core = {n for n, o in REGISTRY.items() if o.family in ("core", "activation", "structural")}
    tested = {c[0] for c in CASES} | {"relu", "silu", "tanh", "sigmoid"}
    assert core <= tested, f"no shape cases for {sorted(core - tested)}"


def test_param_counts_of_attention_and_linear():
    x = T("B", "n", 32)
    attn = REGISTRY["attention"]
    ps = attn.params(attn.attrs.model_validate({"heads": 4}), {"x": x})
    assert sorted(ps) == sorted(f"{p}.{w}" for p in "qkvo" for w in ("weight", "bias"))
    lin = REGISTRY["linear"]
    assert lin.params(lin.attrs.model_validate({"out": 5, "tied": "tok", "bias": False}), {"x": x}) == {}


def test_attention_flops_are_symbolic():
    attn = REGISTRY["attention"]
    a = attn.attrs.model_validate({"heads": 4})
    x = T("B", "n", 32)
    f = attn.flops(a, {"x": x}, x)
    assert f.evaluate({"B": 1, "n": 10}) == 2 * 10 * 32 * 32 * 4 + 4 * 10 * 10 * 32
