"""The decoder plan's recurrent state slots (analysis/decoding.py), torch-free: which recurrences a step may carry
(the op's `carry` trait; the token axis followed through transposes), and the refusals at the node for those it
may not (GF293: a convolution that reads later frames; GF213: an op reading the tokens on a moved axis)."""
from __future__ import annotations

import pytest

from graphformer.analysis.budget import budget
from graphformer.analysis.decoding import plan_decoder
from graphformer.base.diagnostics import SpecError
from graphformer.frontend.api import load

CONV = """\
graphformer: 1
name: conv-lm
params: {vocab: 50, d: 16, kernel: 3, padding: 2, drop: 2, stride: 1, dilation: 1}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d}
  chans:  {op: transpose}
  conv:   {op: conv1d, out: d, kernel: kernel, padding: padding, drop_last: drop, stride: stride, dilation: dilation,
           groups: d}
  seq:    {op: transpose}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""


@pytest.fixture
def spec(tmp_path):
    def make(text=CONV, **params):
        path = tmp_path / "conv-lm.yaml"
        path.write_text(text)
        return load(str(path), overrides=params)
    return make


@pytest.fixture
def refusal(spec):
    def refused(text=CONV, **params):
        with pytest.raises(SpecError) as e:
            plan_decoder(spec(text, **params).ir, ("logits",))
        (d,) = e.value.diagnostics
        return d
    return refused


def test_a_causal_convolution_carries_its_reach_of_input_frames(spec):
    plan = plan_decoder(spec().ir, ("logits",))
    assert list(plan.states) == ["conv"] and not plan.slots and plan.tokens == "tokens" and plan.head == "logits"
    assert plan.states["conv"].states["frames"].shape == (16, 2)
    assert plan_decoder(spec(dilation=2, padding=4, drop=4).ir, ("logits",)).states["conv"].states["frames"].shape == (16, 4)


@pytest.mark.parametrize("params,words", [
    ({"padding": 1, "drop": 0}, "reads later frames: padding 1 at both ends and drop_last 0"),
    ({"padding": 2, "drop": 0}, "reads later frames"),
    ({"stride": 2}, "stride 2"),
])
def test_a_convolution_that_is_not_causal_is_gf293_at_the_node(refusal, params, words):
    d = refusal(**params)
    assert (d.code, d.node) == ("GF293", "conv") and words in d.message and d.span is not None


def test_an_element_wise_op_may_read_the_moved_token_axis(spec):
    text = CONV.replace("  seq:    {op: transpose}\n", "  act:    {op: activation, kind: silu}\n  seq:    {op: transpose}\n")
    assert list(plan_decoder(spec(text).ir, ("logits",)).states) == ["conv"]


def test_a_per_position_op_reading_the_moved_token_axis_is_gf213(refusal):
    """A linear over [B, d, n] mixes the positions: its features are the tokens."""
    text = CONV.replace("[B, n]", "[B, 8]").replace("  seq:    {op: transpose}\n",
                                                   "  mixed:  {op: linear, out: 8}\n  seq:    {op: transpose}\n")
    d = refusal(text)
    assert (d.code, d.node) == ("GF213", "mixed") and "moved to axis 2" in d.message


def test_a_convolution_over_the_features_is_gf213(refusal):
    """Without the transposes the convolution's time axis is the features, and its channels the tokens."""
    text = CONV.replace("params: {vocab: 50,", "params: {vocab: 50, n: 8,").replace("[B, n]", "[B, 8]") \
        .replace("  chans:  {op: transpose}\n", "").replace("  seq:    {op: transpose}\n", "").replace(
            "groups: d}", "groups: 8}").replace("out: d,", "out: 8,")
    d = refusal(text)
    assert (d.code, d.node) == ("GF213", "conv") and "runs along axis 2" in d.message


def test_one_step_graph_refuses_a_recurrence_naming_generate(spec):
    with pytest.raises(SpecError) as e:
        plan_decoder(spec().ir, stages=False, states=False)
    (d,) = e.value.diagnostics
    assert (d.code, d.node) == ("GF213", "conv") and "graphformer generate" in d.help


def test_mamba_plans_a_state_slot_per_convolution_and_scan():
    plan = plan_decoder(load("specs/mamba.yaml", preset="tiny").ir, ("logits",))
    assert list(plan.states) == [f"blocks.{i}.mixer.{op}" for i in range(2) for op in ("conv1d", "ssm")]
    assert plan.mask == "attention_mask" and plan.head == "lm_head" and plan.max_len is None
    frames, ssm = (plan.states[f"blocks.0.mixer.{op}"] for op in ("conv1d", "ssm"))
    assert frames.states["frames"].shape == (64, 3) and frames.states["frames"].dtype is None
    assert ssm.states["ssm"].shape == (64, 4) and ssm.states["ssm"].dtype == "float32"
    assert ssm.nbytes(batch=2, itemsize=2) == 2 * 64 * 4 * 4 and frames.nbytes(batch=2, itemsize=2) == 2 * 64 * 3 * 2


def test_summary_counts_the_recurrent_state_per_sequence():
    b = budget(load("specs/mamba.yaml", preset="tiny").ir, {"B": 2, "n": 8}, "bfloat16")
    per_layer = 64 * 3 * 2 + 64 * 4 * 4          # conv frames in bf16, the scan state in float32
    assert b.memory["kv_cache_per_token"] == 0
    assert b.memory["recurrent_state_per_sequence"] == 2 * per_layer
    assert b.memory["recurrent_state"] == 2 * 2 * per_layer
