"""`graphformer schema`: a JSON Schema that accepts every bundled spec and rejects typos, checked with the
reference `jsonschema` validator (draft-07, what editors' yaml-language-server speaks)."""
from __future__ import annotations

import copy
import typing
import json
from pathlib import Path

import pytest

import cli
from graphformer.ops import REGISTRY
from graphformer.frontend.schema import render_schema, spec_schema
from graphformer.frontend.yamlload import load_yaml_file

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=spec.schema.json"


@pytest.fixture(scope="module")
def validator():
    schema = spec_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def messages(errors) -> list[str]:
    """Every message, including those inside oneOf/anyOf branches."""
    out = []
    for e in errors:
        out.append(e.message)
        out += messages(e.context or [])
    return out


def minimal(**node) -> dict:
    return {"graphformer": 1, "name": "t", "params": {"d_model": 8}, "inputs": {"x": {"shape": ["B", 4, 8]}},
            "nodes": {"n": node}, "outputs": {"y": "n"}}


def required_attrs(op) -> dict:
    """A valid value for every required attribute: a choice of a Literal, a name for a string, a list of
    one 1 for a tuple (a reshape's target), else 1."""
    def value(f):
        args = typing.get_args(f.annotation)
        if typing.get_origin(f.annotation) is typing.Literal:
            return args[0]
        if typing.get_origin(f.annotation) is tuple:
            return [1]
        return "mlp" if f.annotation is str else 1
    return {k: value(f) for k, f in op.attrs.model_fields.items() if f.is_required()}


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_bundled_spec_is_valid_and_carries_the_modeline(spec, validator):
    errors = list(validator.iter_errors(load_yaml_file(str(spec)).data))
    assert not errors, messages(errors)[:5]
    assert spec.read_text().splitlines()[0] == MODELINE


def test_typo_in_an_op_attribute_is_rejected(validator):
    data = load_yaml_file(str(ROOT / "specs" / "gpt2.yaml")).data
    attn = data["blocks"]["layer"]["nodes"]["attn"]
    attn["haeds"] = attn.pop("heads")
    errors = list(validator.iter_errors(data))
    assert errors
    assert any("'haeds' was unexpected" in m for m in messages(errors))


@pytest.mark.parametrize("op", list(REGISTRY), ids=list(REGISTRY))
def test_every_op_has_a_branch_with_its_attributes_that_forbids_others(op, validator):
    defn = REGISTRY[op]
    branch = spec_schema()["$defs"][f"op_{op}"]
    assert set(defn.attrs.model_fields) <= set(branch["properties"])
    ins = {"in": ["x", "x"]} if defn.variadic else {}
    good = minimal(op=op, **ins, **required_attrs(defn))
    # structurally valid (the checker may still find shape errors: that is not the schema's job)
    assert not list(validator.iter_errors(good)), messages(validator.iter_errors(good))
    bad = copy.deepcopy(good)
    bad["nodes"]["n"]["no_such_attribute"] = 1
    assert list(validator.iter_errors(bad))
    for name in defn.attrs.dim_fields:  # dimension attributes take an int or an expression
        expr = copy.deepcopy(good)
        expr["nodes"]["n"][name] = "2 * d_model"
        assert not list(validator.iter_errors(expr)), name


def test_block_calls_take_any_params_but_not_registry_names(validator):
    spec = minimal(op="my_block", repeat="layers", width="4 * d_model")
    assert not list(validator.iter_errors(spec))
    spec["nodes"]["n"]["width"] = [1, 2]  # block params are dimensions
    assert list(validator.iter_errors(spec))


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d.update(graphformer=2), "format version"),
    (lambda d: d.update(node=d.pop("nodes")), "top-level typo"),
    (lambda d: d["inputs"]["x"].update(dtype="float64"), "dtype"),
    (lambda d: d["nodes"].update(sum={"op": "residual", "in": ["x"]}), "residual of one input"),
    (lambda d: d["nodes"].update(sum={"op": "residual"}), "residual without in"),
    (lambda d: d["nodes"]["n"].update(op="norm", repeat=3), "repeat on a primitive"),
    (lambda d: d["nodes"].update({"a.b": {"op": "norm"}}), "dot in a node name"),
    (lambda d: d["nodes"].update(c={"op": "cross_attend", "heads": 2, "in": {"query": "x", "ctx": "x"}}),
     "unknown port"),
    (lambda d: d["nodes"].update(a={"op": "attention", "heads": 2, "causal": "yes please"}), "bool"),
])
def test_schema_rejects_what_the_checker_rejects(mutate, why, validator):
    spec = minimal(op="norm")
    mutate(spec)
    assert list(validator.iter_errors(spec)), why


def test_yaml_11_float_text_is_accepted(validator):
    # PyYAML reads `1e-5` as a string and the checker converts it, so the schema must not object
    assert not list(validator.iter_errors(minimal(op="norm", eps="1e-5")))
    # a real attribute may be an expression over params: the schema checks its characters only
    assert not list(validator.iter_errors(minimal(op="norm", eps="1 / (2 * d_model) ** 0.5")))
    assert list(validator.iter_errors(minimal(op="norm", eps="1e-5; rm")))
    assert not list(validator.iter_errors(minimal(op="norm", eps="eps")))  # a param's name


def test_cli_prints_the_committed_schema(capsys, tmp_path):
    assert cli.main(["schema"]) == 0
    out = capsys.readouterr().out
    assert out == render_schema() == (ROOT / "graphformer" / "specs" / "spec.schema.json").read_text()
    json.loads(out)
    target = tmp_path / "schema.json"
    assert cli.main(["schema", "-o", str(target)]) == 0
    assert target.read_text() == out
    assert [p.name for p in tmp_path.iterdir()] == ["schema.json"]  # no temp file left behind


def test_cli_output_to_missing_directory_is_a_usage_error(capsys, tmp_path):
    assert cli.main(["schema", "-o", str(tmp_path / "nope" / "schema.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
