"""`attention`'s bidirectional `blocks` port: GF322 at file:line:col, and how the decoder plan reads it (blocks
computed from the tokens step with them; a spec input read as `blocks`: an optional one is left out, a required
one refused, GF323, by generation and a step graph alike)."""
from __future__ import annotations

from pathlib import Path

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
  blocks: {shape: [B, n], dtype: int64, optional: OPTIONAL}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  attn:   {op: attention, in: {x: tok, blocks: blocks}, heads: heads, causal: causal}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""


def write(tmp_path, optional: bool, text: str = SPEC):
    path = tmp_path / "case.yaml"
    path.write_text(text.replace("OPTIONAL", str(optional).lower()))
    return path


def test_blocks_on_bidirectional_attention_is_gf322_at_the_port(tmp_path):
    path = write(tmp_path, False, SPEC.replace("causal: true}", "causal: false}"))
    diags = [d for d in check_file(str(path)).diagnostics if d.severity == "error"]
    assert [d.code for d in diags] == ["GF322"]
    line = SPEC.splitlines().index(next(x for x in SPEC.splitlines() if x.startswith("  attn:"))) + 1
    assert diags[0].span.line == line and diags[0].node == "attn"


@pytest.mark.parametrize("stages", [True, False])
def test_an_optional_blocks_input_is_left_out_a_required_one_refused(tmp_path, stages):
    assert plan_decoder(load(write(tmp_path, True)).ir, ("logits",), stages=stages).unfed == ["blocks"]
    with pytest.raises(SpecError) as err:
        plan_decoder(load(write(tmp_path, False)).ir, ("logits",), stages=stages)
    (d,) = err.value.diagnostics
    assert d.code == "GF323" and d.node == "blocks"


def test_blocks_from_the_tokens_decode():
    """gemma3-vision: the image tokens (`equal`) are the blocks; the plan steps them with the tokens, the vision
    tower and projector are the encoder (run once), the features enter with the prompt."""
    spec = Path(__file__).resolve().parents[2] / "specs" / "gemma3-vision.yaml"
    plan = plan_decoder(load(spec, "tiny").ir, ("logits",))
    assert plan.tokens == "tokens" and plan.encoder_inputs == ["pixels"] and plan.unfed == []
    assert len(plan.slots) == 6 and "image_positions" not in plan.encoder


def test_one_step_graph_of_gemma3_vision_is_refused_at_the_vision_tower():
    """`export --with-past`: one graph per step has no encoder stage, and the SigLIP tower is not causal (GF211)."""
    spec = Path(__file__).resolve().parents[2] / "specs" / "gemma3-vision.yaml"
    with pytest.raises(SpecError) as err:
        plan_decoder(load(spec, "tiny").ir, ("logits",), stages=False)
    assert err.value.diagnostics[0].code == "GF211" and err.value.diagnostics[0].node.startswith("vision.")
