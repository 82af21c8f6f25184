"""Work that grows with distinct structure, not with repetitions (issue 30): the memos are exact.

Counts, not timings: the number of times a dimension expression is evaluated, an attrs model validated
or a shape rule run must not grow with `repeat`; the results must equal the unmemoised ones."""
from __future__ import annotations

import math
import textwrap

import pytest

from graphformer.analysis.summary import rows
from graphformer.base.dims import Dim, DimError, parse
from graphformer.frontend import expand as expand_mod
from graphformer.frontend import infer as infer_mod
from graphformer.frontend.check import check_file
from graphformer.ops import REGISTRY

NESTED = """\
    graphformer: 1
    name: nested
    params: {d: 16, inner: INNER, outer: OUTER}
    inputs:
      x: {shape: [B, n, d]}
    blocks:
      cell:
        inputs: {x: [B, n, d]}
        nodes:
          h:   {op: linear, in: x, out: d}
          act: {op: activation, kind: gelu}
        outputs: {x: act}
      stack:
        inputs: {x: [B, n, d]}
        nodes:
          cells: {op: cell, in: x, repeat: inner}
        outputs: {x: cells}
    nodes:
      s: {op: stack, in: x, repeat: outer}
    outputs: {y: s}
"""


def write(tmp_path, text: str, **subs) -> str:
    for k, v in subs.items():
        text = text.replace(k, str(v))
    p = tmp_path / "spec.yaml"
    p.write_text(textwrap.dedent(text))
    return str(p)


def _counting(monkeypatch, owner, name):
    calls = []
    original = getattr(owner, name)

    def counted(*a, **k):
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("inner,outer", [(2, 3), (6, 7)])
def test_expansion_work_does_not_grow_with_repetitions(tmp_path, monkeypatch, inner, outer):
    dims = _counting(monkeypatch, expand_mod.Expander, "_dim_uncached")
    validated = _counting(monkeypatch, REGISTRY["linear"].attrs, "model_validate")
    rules = _counting(monkeypatch, infer_mod, "_apply_rule")
    r = check_file(write(tmp_path, NESTED, INNER=inner, OUTER=outer))
    assert r.ok, r.diagnostics
    assert len(r.ir) == 1 + 2 * inner * outer
    # the same small numbers at 6 and at 42 repetitions of the cell
    assert (len(dims), len(validated), len(rules)) == (6, 1, 2)   # rules: linear and activation


def test_the_memo_is_per_param_values(tmp_path):
    """A repetition whose params differ (through `repeat_index`) is expanded on its own."""
    spec = """\
        graphformer: 1
        name: widths
        params: {d: 8, layers: 5}
        inputs:
          x: {shape: [B, n, d]}
        blocks:
          layer:
            params: {width: d}
            inputs: {x: [B, n, d]}
            nodes:
              up:   {op: linear, out: width}
              down: {op: linear, out: d}
            outputs: {x: down}
        nodes:
          stack: {op: layer, repeat: layers, width: d * (1 + repeat_index % 2)}
        outputs: {y: stack}
    """
    r = check_file(write(tmp_path, spec))
    assert r.ok, r.diagnostics
    assert [r.ir.node(f"stack.{i}.up").shape.shape[-1].value for i in range(5)] == [8, 16, 8, 16, 8]
    assert [r.ir.node(f"stack.{i}.up").attrs.out for i in range(5)] == [8, 16, 8, 16, 8]


def test_an_error_in_one_repetition_keeps_its_location(tmp_path):
    spec = """\
        graphformer: 1
        name: shrinking
        params: {d: 8, layers: 4}
        inputs:
          x: {shape: [B, n, d]}
        blocks:
          layer:
            params: {width: d}
            inputs: {x: [B, n, d]}
            nodes:
              up:   {op: linear, out: width}
              down: {op: linear, out: d}
            outputs: {x: down}
        nodes:
          stack: {op: layer, repeat: layers, width: 2 // (2 - repeat_index)}
        outputs: {y: stack}
    """
    r = check_file(write(tmp_path, spec))
    errors = {(d.code, d.span.line, d.span.col, d.node) for d in r.diagnostics if d.is_error}
    # repetition 2 divides by zero (at the operator); repetition 3's width is -2 (at the attribute that reads it)
    assert errors == {("GF130", 15, 47, None), ("GF102", 11, 31, "stack.3.up")}


def test_memoised_rows_equal_the_rules(tmp_path):
    r = check_file("gpt2", preset="tiny", overrides={"layers": 3})
    table = rows(r.ir)
    for row in table:
        n = r.ir.node(row.node)
        ins = r.ir.input_types(n)
        op = REGISTRY[n.op]
        assert row.params == sum(math.prod(s) for s in op.params(n.attrs, ins).values())
        assert row.flops == op.flops(n.attrs, ins, n.shape)
        assert n.shape == op.shape(n.attrs, ins) or n.name in r.ir.ties


def test_parse_is_memoised_per_values():
    assert parse("a * 2 + n", {"a": 3}) == Dim.sym("n") + 6
    assert parse("a * 2 + n", {"a": 4}) == Dim.sym("n") + 8
    assert parse("a * 2 + n", {}) == 2 * Dim.sym("a") + Dim.sym("n")
    assert parse("a * 2 + n", {"a": 4}) is parse("a * 2 + n", {"a": 4})
    assert Dim.const(7) is Dim.const(7) and Dim.sym("n") is Dim.sym("n")
    for _ in range(2):   # failures are not remembered: each carries its offset
        with pytest.raises(DimError) as e:
            parse("d // (h - 4)", {"d": 8, "h": 4})
        assert e.value.offset == 2
    assert (Dim.sym("n") * 2).subs({"n": 3}) == 6 and (Dim.sym("n") * 2).subs({"n": 5}) == 10


def test_libyaml_and_pure_yaml_agree_on_every_bundled_spec(monkeypatch):
    """The fast loader (libyaml) must give the data and spans the pure one gives."""
    import glob
    import os

    import yaml

    from graphformer.frontend import yamlload

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML without libyaml")
    specs = sorted(glob.glob(os.path.join(os.path.dirname(yamlload.__file__), "..", "specs", "*.yaml")))
    assert specs
    for path in specs:
        text = open(path, encoding="utf-8").read()
        assert yamlload._fast_ok(text), path
        fast = yamlload._load(text, path, yaml.CSafeLoader)
        pure = yamlload._load(text, path, yaml.SafeLoader)
        assert (fast.data, fast.spans, fast.key_spans) == (pure.data, pure.spans, pure.key_spans), path


def test_deep_or_odd_yaml_takes_the_pure_loader():
    from graphformer.frontend import yamlload

    assert not yamlload._fast_ok("a: " + "[" * 3000 + "]" * 3000)
    assert not yamlload._fast_ok("a: \x07")
    assert yamlload._fast_ok("a: 1\nb: [1, 2]\n")
