"""Shape rules, parameters, FLOPs and diagnostics of the `relative` family (ops/relative.py: DeBERTa's
disentangled attention and its relative-position table), without torch."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from graphformer.base.dims import parse
from graphformer.frontend.check import check_file
from graphformer.ops import REGISTRY
from shape_cases import T, check_case

ATTN = {"heads": 4, "position_buckets": 8, "max_relative_positions": 16}

CASES = [
    ("relative_embeddings", {"rows": 16, "dim": 32}, {"like": T("B", "n", 32)}, ("16", "32")),
    ("relative_embeddings", {"rows": 0, "dim": 32}, {"like": T("B", "n", 32)}, "GF102"),
    ("disentangled_attention", ATTN, {"x": T("B", "n", 32), "rel": T(16, 32)}, ("B", "n", "32")),
    ("disentangled_attention", ATTN, {"x": T("B", "n", 32), "rel": T(20, 32),            # extra rows: not read
                                      "mask": T("B", "n", dtype="int64")}, ("B", "n", "32")),
    ("disentangled_attention", {**ATTN, "position_buckets": 0}, {"x": T("B", "n", 32), "rel": T(32, 32)},
     ("B", "n", "32")),
    ("disentangled_attention", ATTN, {"x": T("B", "n", 32), "rel": T(15, 32)}, "GF286"),
    ("disentangled_attention", {**ATTN, "position_buckets": 0}, {"x": T("B", "n", 32), "rel": T(16, 32)}, "GF286"),
    ("disentangled_attention", {**ATTN, "max_relative_positions": 5}, {"x": T("B", "n", 32), "rel": T(16, 32)},
     "GF287"),
    ("disentangled_attention", {**ATTN, "position_buckets": 2}, {"x": T("B", "n", 32), "rel": T(16, 32)}, "GF287"),
    ("disentangled_attention", {**ATTN, "max_relative_positions": -1}, {"x": T("B", "n", 32), "rel": T(16, 32)},
     "GF287"),
    ("disentangled_attention", {**ATTN, "heads": 5}, {"x": T("B", "n", 32), "rel": T(16, 32)}, "GF123"),
    ("disentangled_attention", ATTN, {"x": T("B", "n", 32), "rel": T(16, 24)}, "GF120"),
    ("disentangled_attention", ATTN, {"x": T("B", "n", 32), "rel": T("B", 16, 32)}, "GF121"),
    ("disentangled_attention", ATTN, {"x": T("B", "n", 32), "rel": T(16, 32), "mask": T("B", "n + 1")}, "GF122"),
    ("disentangled_attention", ATTN, {"x": T("B", "n", 32), "rel": T(16, 32),
                                      "mask": T("B", "n + 1", dtype="bool")}, "GF120"),
]


@pytest.mark.parametrize("op,attrs,ins,expected", CASES)
def test_shape_rule(op, attrs, ins, expected):
    check_case(op, attrs, ins, expected)


def test_pos_att_type_needs_one_or_two_distinct_terms():
    attrs = REGISTRY["disentangled_attention"].attrs
    for bad in ([], ["c2p", "c2p"], ["p2p"]):
        with pytest.raises(ValidationError):
            attrs.model_validate({**ATTN, "pos_att_type": bad})
    assert attrs.model_validate({**ATTN, "pos_att_type": ["p2c"]}).scale_factor == 2


@pytest.mark.parametrize("share,terms,projections", [
    (True, ["p2c", "c2p"], set()), (False, ["p2c", "c2p"], {"pos_query_proj", "pos_key_proj"}),
    (False, ["c2p"], {"pos_key_proj"}), (False, ["p2c"], {"pos_query_proj"})])
def test_params_are_named_as_transformers_names_them(share, terms, projections):
    op = REGISTRY["disentangled_attention"]
    a = op.attrs.model_validate({**ATTN, "share_att_key": share, "pos_att_type": terms})
    params = op.params(a, {"x": T("B", "n", 32), "rel": T(16, 32)})
    want = {"query_proj", "key_proj", "value_proj"} | projections
    assert params == {f"{p}.{w}": (32, 32) if w == "weight" else (32,) for p in want for w in ("weight", "bias")}


def test_flops_are_symbolic():
    op = REGISTRY["disentangled_attention"]
    a = op.attrs.model_validate(ATTN)
    ins = {"x": T("B", "n", 32), "rel": T(16, 32)}
    # q, k, v; the table through query_proj and key_proj once; q·kᵀ and p·v; c2p and p2c over 16 rows
    want = parse("6144*B*n + 2*16*32*32*2 + 4*B*n*n*32 + 2*2*B*n*16*32")
    assert op.flops(a, ins, op.shape(a, ins)) == want


SPEC = """\
graphformer: 1
name: case
params: {d_model: 32, heads: 4}
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, d_model]}
nodes:
  rel:  {op: relative_embeddings, in: x, rows: 12, dim: d_model}
  attn: {op: disentangled_attention, in: {x: x, rel: rel}, heads: heads, position_buckets: 8,
         max_relative_positions: 16}
outputs: {y: attn}
"""


def test_a_short_table_is_reported_at_the_attention(tmp_path):
    path = tmp_path / "case.yaml"
    path.write_text(SPEC)
    (d,) = [d for d in check_file(str(path)).diagnostics if d.is_error]
    assert (d.code, d.span.line, d.span.col) == ("GF286", 9, 3)
    assert "12 rows" in d.message and "2 · 8 = 16" in d.message
