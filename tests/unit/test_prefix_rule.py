"""The prefix-LM `prefix` port: its diagnostics at file:line:col, and how the decoder plan reads the input
(generation feeds it, one step graph leaves an optional one out and refuses a required one: GF289)."""
from __future__ import annotations

import pytest

from graphformer.analysis.decoding import plan_decoder
from graphformer.base.diagnostics import SpecError
from graphformer.frontend.api import load
from graphformer.frontend.check import check_file

SPEC = """\
graphformer: 1
name: case
params: {d_model: 32, heads: 4, vocab: 50, causal: true}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  prefix: {shape: [B, n], dtype: int64, optional: OPTIONAL}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, in: {x: tok, prefix: prefix}, heads: heads, causal: causal}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""


def write(tmp_path, optional: bool):
    path = tmp_path / "case.yaml"
    path.write_text(SPEC.replace("OPTIONAL", str(optional).lower()))
    return path


def test_a_prefix_on_bidirectional_attention_is_gf288_at_the_port(tmp_path):
    path = tmp_path / "case.yaml"
    path.write_text(SPEC.replace("OPTIONAL", "false").replace("causal: true}", "causal: false}"))
    diags = [d for d in check_file(str(path)).diagnostics if d.severity == "error"]
    assert [d.code for d in diags] == ["GF288"]
    line = SPEC.splitlines().index(next(x for x in SPEC.splitlines() if x.startswith("  attn:"))) + 1
    assert diags[0].span.line == line and diags[0].node == "attn"


@pytest.mark.parametrize("stages", [True, False])
def test_generation_feeds_the_prefix_a_step_graph_leaves_an_optional_one_out(tmp_path, stages):
    plan = plan_decoder(load(write(tmp_path, True)).ir, ("logits",), stages=stages)
    assert (plan.prefix, plan.unfed) == (("prefix", []) if stages else (None, ["prefix"]))


def test_a_step_graph_refuses_a_required_prefix(tmp_path):
    ir = load(write(tmp_path, False)).ir
    assert plan_decoder(ir, ("logits",)).prefix == "prefix"
    with pytest.raises(SpecError) as err:
        plan_decoder(ir, ("logits",), stages=False)
    (d,) = err.value.diagnostics
    assert d.code == "GF289" and d.node == "prefix"
