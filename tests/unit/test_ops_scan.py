"""The scan family (ops/scan.py) without torch: the shape rules of `selective_scan`, `token_shift` and `wkv`
(table-driven), their parameters, FLOPs formulas and carries, shape diagnostics at file:line:col, and the
decoder plan carrying or refusing a recurrence by name."""
from __future__ import annotations

import pytest

from graphformer.analysis.decoding import plan_decoder
from graphformer.analysis.summary import total_params
from graphformer.base.diagnostics import SpecError
from graphformer.base.dims import parse
from graphformer.frontend.api import load
from graphformer.ops import REGISTRY
from shape_cases import T, check_case


M2 = {"state": 3, "heads": 4, "groups": 2, "delta_bias": True, "delta_softplus": True}


def ins(x=("B", "L", 8), delta=("B", "L", 8), b=("B", "L", 4), c=("B", "L", 4), dtype="float32"):
    return {"x": T(*x), "delta": T(*delta), "B": T(*b), "C": T(*c, dtype=dtype)}


CASES = [
    # attrs, inputs, expected shape (tuple of str) or error code
    ({"state": 4}, ins(), ("B", "L", "8")),
    ({"state": 4}, ins(x=(2, 5, 8), delta=(2, 5, 8), b=(2, 5, 4), c=(2, 5, 4)), ("2", "5", "8")),
    ({"state": 4}, ins(b=("B", "L + 1", 4)), "GF279"),          # B over another length
    ({"state": 4}, ins(c=("2 * B", "L", 4)), "GF279"),          # C over another batch
    ({"state": 4}, ins(delta=("B", "M", 8)), "GF279"),
    ({"state": 4}, ins(delta=("B", "L", 1)), "GF284"),          # Δ not per channel
    ({"state": 4}, ins(delta=("B", "L", "d")), "GF284"),
    ({"state": 4}, ins(b=("B", "L", 5)), "GF285"),              # B wider than the state
    ({"state": 4}, ins(c=("B", "L", "N")), "GF285"),
    ({"state": 0}, ins(), "GF102"),
    ({"state": 4}, ins(x=("B", 8)), "GF121"),
    ({"state": 4}, ins(dtype="int64"), "GF122"),
    # Mamba-2's form: scalars per head, B and C per group of heads
    (M2, ins(delta=("B", "L", 4), b=("B", "L", 6), c=("B", "L", 6)), ("B", "L", "8")),
    ({**M2, "groups": 1}, ins(delta=("B", "L", 4), b=("B", "L", 3), c=("B", "L", 3)), ("B", "L", "8")),
    (M2, ins(delta=("B", "L", 8), b=("B", "L", 6), c=("B", "L", 6)), "GF284"),   # Δ per channel, not per head
    (M2, ins(delta=("B", "L", 4), b=("B", "L", 3), c=("B", "L", 6)), "GF285"),   # one group's B only
    ({**M2, "heads": 3, "groups": 1}, ins(delta=("B", "L", 3), b=("B", "L", 3), c=("B", "L", 3)), "GF300"),
    ({**M2, "groups": 3}, ins(delta=("B", "L", 4), b=("B", "L", 9), c=("B", "L", 9)), "GF300"),
    ({"state": 3, "groups": 2}, ins(b=("B", "L", 6), c=("B", "L", 6)), "GF300"),   # groups without heads
    ({**M2, "heads": 0}, ins(delta=("B", "L", 0), b=("B", "L", 6), c=("B", "L", 6)), "GF102"),
]


@pytest.mark.parametrize("attrs,inputs,expected", CASES)
def test_shape_rule(attrs, inputs, expected):
    check_case("selective_scan", attrs, inputs, expected)


def test_params_and_flops():
    op = REGISTRY["selective_scan"]
    a = op.attrs.model_validate({"state": 16})
    x = ins(x=("B", "L", 1536), delta=("B", "L", 1536), b=("B", "L", 16), c=("B", "L", 16))
    assert op.params(a, x) == {"A_log": (1536, 16), "D": (1536,)}
    out = op.shape(a, x)
    assert op.flops(a, x, out) == parse("8 * B * L * 1536 * 16 + 2 * B * L * 1536 + 2 * 1536 * 16")


def test_the_heads_form_params_flops_and_carry():
    """Mamba-2 (Mamba-Codestral-7B's mixer): A_log, D, dt_bias one per head; the carried state [H, P, N]."""
    op = REGISTRY["selective_scan"]
    a = op.attrs.model_validate({"state": 128, "heads": 128, "groups": 8, "delta_bias": True, "delta_softplus": True})
    x = ins(x=("B", "L", 8192), delta=("B", "L", 128), b=("B", "L", 1024), c=("B", "L", 1024))
    assert op.params(a, x) == {"A_log": (128,), "D": (128,), "dt_bias": (128,)}
    out = op.shape(a, x)
    assert op.flops(a, x, out) == parse("6 * B * L * 8192 * 128 + 2 * B * L * 128 + 2 * B * L * 8192 + 2 * 128 "
                                        "+ 5 * B * L * 128")
    carry = op.carry(a, x)
    assert carry.states["ssm"].shape == (128, 64, 128) and carry.states["ssm"].dtype == "float32"


def test_the_published_mamba2_counts_without_torch():
    assert total_params(load("specs/mamba2.yaml").ir) == 7_285_403_648           # Mamba2ForCausalLM, Codestral-7B
    assert total_params(load("specs/mamba2.yaml", preset="mamba2-130m").ir) == 128_989_632


def test_the_published_mamba_counts_without_torch():
    assert total_params(load("specs/mamba.yaml").ir) == 129_135_360            # MambaForCausalLM, mamba-130m
    assert total_params(load("specs/mamba.yaml", overrides={"tie_embeddings": False}).ir) == 129_135_360 + 768 * 50280


def test_a_decoder_plan_carries_the_recurrence_and_one_step_graph_refuses_it():
    plan = plan_decoder(load("specs/mamba.yaml", preset="tiny").ir, ("logits",))
    assert plan.states["blocks.0.mixer.ssm"].states["ssm"].shape == (64, 4)   # inner 2·32, state 4
    with pytest.raises(SpecError) as err:   # an encoder–decoder's ONNX steps: past keys and values only
        plan_decoder(load("specs/mamba.yaml", preset="tiny").ir, states=False, stages=False)
    (d,) = err.value.diagnostics
    assert d.code == "GF213" and d.node == "blocks.0.mixer.conv1d" and "generate" in d.help


# ---------------------------------------------------------------- RWKV: token_shift and wkv

@pytest.mark.parametrize("attrs,inputs,expected", [
    ({}, {"x": T("B", "L", 8)}, ("B", "L", "8")),
    ({"mix": True}, {"x": T(2, 5, 8)}, ("2", "5", "8")),
    ({}, {"x": T("B", 8)}, "GF121"),                          # no sequence axis
    ({}, {"x": T("B", "L", 8, dtype="int64")}, "GF122"),
])
def test_token_shift_shape_rule(attrs, inputs, expected):
    check_case("token_shift", attrs, inputs, expected)


@pytest.mark.parametrize("inputs,expected", [
    ({"k": T("B", "L", 8), "v": T("B", "L", 8)}, ("B", "L", "8")),
    ({"k": T("B", "L", 8), "v": T("B", "L", 4)}, "GF310"),   # keys and values of other widths
    ({"k": T("B", "L", 8), "v": T("B", "M", 8)}, "GF310"),
    ({"k": T("B", 8), "v": T("B", 8)}, "GF121"),
])
def test_wkv_shape_rule(inputs, expected):
    check_case("wkv", {}, inputs, expected)


def test_rwkv_params_flops_and_carries():
    """The time-mix vector and the WKV's decay and bonus, one per channel; the carried last token (the model's
    dtype) and the (num, den, max) state (float32)."""
    shift, wkv = REGISTRY["token_shift"], REGISTRY["wkv"]
    x = {"x": T("B", "L", 768)}
    mixed = shift.attrs.model_validate({"mix": True})
    assert shift.params(mixed, x) == {"mix": (768,)}
    assert shift.params(shift.attrs.model_validate({}), x) == {}
    assert shift.flops(mixed, x, shift.shape(mixed, x)) == parse("3 * B * L * 768 + 768")
    assert shift.carry(mixed, x).states["last"].shape == (768,) and shift.carry(mixed, x).states["last"].dtype is None
    kv = {"k": T("B", "L", 768), "v": T("B", "L", 768)}
    a = wkv.attrs.model_validate({})
    assert wkv.params(a, kv) == {"time_decay": (768,), "time_first": (768,)}
    assert wkv.flops(a, kv, wkv.shape(a, kv)) == parse("21 * B * L * 768 + 2 * 768")
    carry = wkv.carry(a, kv)
    assert carry.port == "k" and carry.axis == 1
    assert {k: (s.shape, s.dtype) for k, s in carry.states.items()} == {n: ((768,), "float32") for n in ("num", "den", "max")}


def test_the_published_rwkv_counts_without_torch():
    assert total_params(load("specs/rwkv.yaml").ir) == 169_342_464                # RwkvForCausalLM, rwkv-4-169m-pile
    assert total_params(load("specs/rwkv.yaml", preset="rwkv-4-raven-7b").ir) == 7_392_649_216


def test_the_rwkv_decoder_plan_carries_shifts_and_wkv_states():
    plan = plan_decoder(load("specs/rwkv.yaml", preset="tiny").ir, ("logits",))
    layer = {k.split(".", 2)[2]: v for k, v in plan.states.items() if k.startswith("blocks.0.")}
    assert sorted(layer) == ["attention.k_in", "attention.r_in", "attention.v_in", "attention.wkv",
                             "feed_forward.k_in", "feed_forward.r_in"]
    assert sorted(layer["attention.wkv"].states) == ["den", "max", "num"]
