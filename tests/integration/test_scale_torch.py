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


def test_repetitions_share_one_code_object_and_tracebacks_name_their_layer():
    import traceback

    spec = load("gpt2", preset="tiny", overrides={"layers": 3})
    model = gf.build(spec, seed=0).eval()
    layers = [model["blocks"][i] for i in range(3)]
    codes = [b._run_eval.__code__ for b in layers]
    assert len({c.co_filename for c in codes}) == 3          # one source per layer (its path comments)
    assert len({c.co_code for c in codes}) == 1              # compiled once
    # a failure inside layer 2 shows layer 2's line
    model["blocks"][2]._modules["ln2"].forward = lambda x: (_ for _ in ()).throw(RuntimeError("boom"))
    try:
        model(**gf.example_inputs(spec, seed=0))
    except RuntimeError:
        text = traceback.format_exc()
    assert "# blocks.2.ln2" in text and "# blocks.1.ln2" not in text
