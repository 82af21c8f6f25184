"""Per-forward work that does not grow with depth (issue 30): rotary tables once per forward."""
import torch

import graphformer as gf
from graphformer.backends.torch import core
from graphformer.frontend.api import load


def _count_tables(monkeypatch):
    calls = []
    original = core.Rotary._cos_sin

    def counted(self, *a):
        calls.append(self)
        return original(self, *a)

    monkeypatch.setattr(core.Rotary, "_cos_sin", counted)
    return calls


def test_rotary_tables_are_computed_once_per_forward_and_change_nothing(monkeypatch):
    spec = load("llama", preset="tiny", overrides={"layers": 3})
    model = gf.build(spec, seed=0).eval()
    inputs = gf.example_inputs(spec, seed=0)
    calls = _count_tables(monkeypatch)
    with torch.no_grad():
        shared = model(**inputs)
        assert len(calls) == 1   # three layers, one table
        per_layer = model._run_eval(model._modules, *[inputs.get(k) for k in model.input_names])  # no scope
    assert len(calls) == 1 + 3
    for k in shared:
        assert torch.equal(shared[k], per_layer[k])
    assert core._FORWARD.tables is None   # the scope ends with the forward


def test_rotary_tables_follow_positions_between_forwards(monkeypatch):
    spec = load("llama", preset="tiny", overrides={"layers": 2})
    model = gf.build(spec, seed=0).eval()
    inputs = gf.example_inputs(spec, seed=0)
    calls = _count_tables(monkeypatch)
    with torch.no_grad():
        a = model(**inputs)["logits"]
        b = model(**inputs)["logits"]
    assert len(calls) == 2 and torch.equal(a, b)   # a new forward computes its own table
