"""Typed params: the type of a param is its default's; --set, presets and overrides= convert or refuse;
attributes read params by name; diagnostics say where a non-default value came from."""
from __future__ import annotations

from pathlib import Path

import pytest

import cli
import graphformer
from graphformer.base.errors import UsageError

SPECS = Path(__file__).resolve().parents[2] / "specs"


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_set_converts_to_each_params_type():
    spec = graphformer.load(SPECS / "llama.yaml", preset="tiny",
                            overrides={"eps": "1e-6", "rope_theta": "500000", "act": "gelu", "tie_embeddings": "yes"})
    p = spec.params
    assert (p["eps"], p["rope_theta"], p["act"], p["tie_embeddings"]) == (1e-6, 500000.0, "gelu", True)
    assert isinstance(p["rope_theta"], float)
    assert "lm_head.weight" not in spec.ir.param_shapes()    # tied by the param: one table


@pytest.mark.parametrize("sets, needle", [
    ("heads=4.5", "expected an integer"), ("eps=small", "expected a number"),
    ("tie_embeddings=maybe", "expected a boolean"), ("nope=1", "is not a param"),
])
def test_wrong_types_on_the_command_line_are_usage_errors(capsys, sets, needle):
    rc, _, err = run(capsys, "check", SPECS / "llama.yaml", "--set", sets)
    assert rc == 2 and needle in err


def test_a_bad_value_through_a_param_names_the_value_and_where_it_came_from(capsys):
    rc, _, err = run(capsys, "check", SPECS / "llama.yaml", "--set", "rope_scaling=dynamic")
    assert rc == 1
    assert "(got `dynamic` from param `rope_scaling`)" in err and "comes from --set" in err
    rc, _, err = run(capsys, "check", SPECS / "llama.yaml", "--preset", "tiny", "--set", "heads=5")
    assert rc == 1 and "`heads` = 5 comes from --set" in err and "GF123" in err


def test_api_overrides_are_typed_too():
    with pytest.raises(UsageError, match="expected a number"):
        graphformer.load(SPECS / "llama.yaml", overrides={"eps": "tiny"})
    spec = graphformer.load(SPECS / "phi-2.yaml", preset="tiny", overrides={"eps": 1})  # an int is a fine float
    assert spec.params["eps"] == 1.0 and isinstance(spec.params["eps"], float)


def test_api_overrides_are_named_as_such():
    with pytest.raises(graphformer.SpecError) as e:
        graphformer.load(SPECS / "gpt2.yaml", overrides={"heads": 5})
    assert "`heads` = 5 comes from overrides=" in e.value.render() and "--set" not in e.value.render()
    with pytest.raises(UsageError, match=r"^overrides=: `zzz` is not a param"):
        graphformer.load(SPECS / "gpt2.yaml", overrides={"zzz": 5})
