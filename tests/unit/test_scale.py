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


# ---------------------------------------------------------------- the compact IR (`ir.Repeat`)
# Whatever a compact analysis says must be what the same analysis says of every repetition unrolled:
# each test below runs both (`compact=False` expands every repetition) and compares.

from pathlib import Path  # noqa: E402

from graphformer.analysis.budget import activations, budget  # noqa: E402
from graphformer.analysis.summary import counted_rows, rolled_up  # noqa: E402
from graphformer.frontend.bundled import resolve  # noqa: E402
from graphformer.frontend.expand import expand  # noqa: E402
from graphformer.frontend.load import load_program  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted(str(p) for p in (ROOT / "graphformer" / "specs").glob("*.yaml"))
INVALID = sorted(str(p) for p in (ROOT / "tests" / "invalid").glob("*.yaml"))

# Repeated calls the compact form must get exactly right, or leave to the full unrolling.
ODD = {
    "per-layer widths": """\
        graphformer: 1
        name: widths
        params: {d: 8, layers: 6}
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
          stack: {op: layer, repeat: layers, width: d * (1 + repeat_index % 3)}
        outputs: {y: stack}
    """,
    "a dead node in every repetition": """\
        graphformer: 1
        name: dead
        params: {d: 8, layers: 3}
        inputs:
          x: {shape: [B, n, d]}
        blocks:
          layer:
            inputs: {x: [B, n, d]}
            nodes:
              up:     {op: linear, in: x, out: d}
              unused: {op: linear, in: x, out: d}
            outputs: {x: up}
        nodes:
          stack: {op: layer, repeat: layers}
        outputs: {y: stack}
    """,
    "an output only the last repetition's readers see": """\
        graphformer: 1
        name: side
        params: {d: 8, layers: 3}
        inputs:
          x: {shape: [B, n, d]}
        blocks:
          layer:
            inputs: {x: [B, n, d]}
            nodes:
              up:   {op: linear, in: x, out: d}
              side: {op: linear, in: x, out: d}
            outputs: {x: up, side: side}
        nodes:
          stack: {op: layer, repeat: layers}
          sum:   {op: residual, in: [stack.x, stack.side]}
        outputs: {y: sum}
    """,
    "a carried stream that grows": """\
        graphformer: 1
        name: growing
        params: {d: 8, layers: 3}
        inputs:
          x: {shape: [B, n, d]}
        blocks:
          layer:
            inputs: {x: [B, n, d]}
            nodes:
              up: {op: linear, in: x, out: 2 * d}
            outputs: {x: up}
        nodes:
          stack: {op: layer, repeat: layers}
        outputs: {y: stack}
    """,
    "a forward reference into the call, two streams, an input to every repetition": """\
        graphformer: 1
        name: streams
        params: {d: 8, layers: 4}
        inputs:
          x: {shape: [B, n, d]}
          m: {shape: [B, n], dtype: int64, optional: true}
        blocks:
          layer:
            inputs: {a: [B, n, d], b: [B, n, d], m: [B, n]}
            nodes:
              attn: {op: attention, in: {x: a, mask: m}, heads: 2, causal: true}
              mix:  {op: residual, in: [attn, b]}
              b2:   {op: linear, in: b, out: d}
            outputs: {a: mix, b: b2}
        nodes:
          first: {op: layer, in: {a: x, b: late, m: m}, repeat: layers}
          late:  {op: linear, in: x, out: d}
          again: {op: layer, in: {a: first.a, b: first.b, m: m}, repeat: layers}
          out:   {op: residual, in: [again.a, again.b]}
        outputs: {y: out}
    """,
    "a tied head inside the repeated block": """\
        graphformer: 1
        name: tied
        params: {d: 8, v: 11, layers: 2}
        inputs:
          t: {shape: [B, n], dtype: int64}
        blocks:
          layer:
            inputs: {t: [B, n]}
            nodes:
              emb:  {op: embedding, in: t, vocab: v, dim: d}
              head: {op: linear, in: emb, out: v, tied: emb}
              back: {op: argmax, in: head}
            outputs: {t: back}
        nodes:
          stack: {op: layer, repeat: layers}
        outputs: {y: stack}
    """,
    "a shape error in a later repetition": """\
        graphformer: 1
        name: later
        params: {d: 8, layers: 3}
        inputs:
          x: {shape: [B, n, d]}
        blocks:
          layer:
            params: {w: d}
            inputs: {x: [B, n, d]}
            nodes:
              up: {op: linear, out: w}
              r:  {op: residual, in: [x, up]}
            outputs: {x: r}
        nodes:
          stack: {op: layer, repeat: layers, w: d + (repeat_index // 2)}
        outputs: {y: stack}
    """,
    "nested repeats with a per-layer inner count": """\
        graphformer: 1
        name: nested2
        params: {d: 8}
        inputs:
          x: {shape: [B, n, d]}
        blocks:
          cell:
            inputs: {x: [B, n, d]}
            nodes:
              h: {op: linear, in: x, out: d}
            outputs: {x: h}
          stack:
            params: {k: 1}
            inputs: {x: [B, n, d]}
            nodes:
              cells: {op: cell, in: x, repeat: k}
              n1:    {op: norm}
            outputs: {x: n1}
        nodes:
          s: {op: stack, in: x, repeat: 4, k: 2 + repeat_index % 2}
        outputs: {y: s}
    """,
}


def _odd(tmp_path, name) -> str:
    return write(tmp_path, ODD[name])


def _ir_facts(ir) -> dict:
    names = ir.names()
    return {"nodes": [(n.name, n.op, repr(n.attrs), dict(n.inputs), n.span, n.scope, n.shape, n.meta)
                      for n in map(ir.node, names)],
            "checks": [(c.block, c.call_span, c.patterns, c.sources, c.spans, c.index, c.carried)
                       for c in ir.block_checks],
            "off": dict(sorted(ir.switched_off.items())), "io": (ir.inputs, ir.outputs)}


def _diags(r) -> list:
    return [(d.code, d.severity, d.message, d.span, d.node, tuple(d.notes), d.help,
             tuple((l.span, l.message) for l in d.labels)) for d in r.diagnostics]


@pytest.mark.parametrize("path", BUNDLED + list(ODD), ids=lambda p: Path(p).stem)
def test_compact_ir_unrolls_to_the_full_expansion(tmp_path, path):
    path = _odd(tmp_path, path) if path in ODD else path
    full, d_full = expand(load_program(resolve(path), "tiny" if path in BUNDLED else None, None, "--set"), False)
    ir, d = expand(load_program(resolve(path), "tiny" if path in BUNDLED else None, None, "--set"))
    assert [str(x) for x in d] == [str(x) for x in d_full]
    assert len(ir) == len(full)
    assert _ir_facts(ir) == _ir_facts(full)


@pytest.mark.parametrize("path", BUNDLED + INVALID + list(ODD), ids=lambda p: Path(p).stem)
def test_check_on_the_compact_ir_equals_the_full_check(tmp_path, path):
    path = _odd(tmp_path, path) if path in ODD else path
    full, r = check_file(path, compact=False), check_file(path)
    assert _diags(r) == _diags(full)
    assert (r.ir is None) == (full.ir is None)
    if r.ir is not None:
        assert _ir_facts(r.ir) == _ir_facts(full.ir)


@pytest.mark.parametrize("path", BUNDLED + list(ODD), ids=lambda p: Path(p).stem)
def test_summary_on_the_compact_ir_equals_the_full_summary(tmp_path, path):
    path = _odd(tmp_path, path) if path in ODD else path
    full, r = check_file(path, "tiny" if path in BUNDLED else None, compact=False), \
        check_file(path, "tiny" if path in BUNDLED else None)
    if not full.ok:
        pytest.skip("a spec with errors has no summary")
    dims = full.ir.resolve_dims()
    want = (budget(full.ir, dims).as_json(), activations(full.ir, dims, 2),
            [rolled_up(rows(full.ir), d) for d in (1, 2, 3)])
    got = (budget(r.ir, dims).as_json(), activations(r.ir, dims, 2), [rolled_up(counted_rows(r.ir), d) for d in (1, 2, 3)])
    assert got == want


def test_the_odd_cases_take_the_path_they_should(tmp_path):
    """Which repeated calls stay compact through check and summary, and which are unrolled."""
    def compact(name) -> bool:
        r = check_file(_odd(tmp_path, name))
        counted_rows(r.ir)
        budget(r.ir, r.ir.resolve_dims())
        return r.ir.compact
    assert compact("per-layer widths") and compact("nested repeats with a per-layer inner count")
    assert compact("an output only the last repetition's readers see") is False   # earlier `side`s are dead
    assert compact("a dead node in every repetition") is False                      # GF112 per node
    assert compact("a carried stream that grows") is False                          # GF126 at repetition 1
    assert compact("a shape error in a later repetition") is False


@pytest.mark.parametrize("inner,outer", [(2, 3), (40, 50)])
def test_check_and_summary_work_do_not_grow_with_repetitions(tmp_path, monkeypatch, inner, outer):
    """The nested spec stays compact: the rules run per distinct node, and nothing unrolls it."""
    nodes = _counting(monkeypatch, infer_mod, "_infer_node")
    r = check_file(write(tmp_path, NESTED, INNER=inner, OUTER=outer))
    assert r.ok and r.ir.compact
    table = counted_rows(r.ir)
    plan = budget(r.ir, r.ir.resolve_dims())
    assert r.ir.compact and len(r.ir) == 1 + 2 * inner * outer
    assert len(nodes) == 2 and len(table) == 2            # `h` and `act`, once each
    assert plan.params == inner * outer * (16 * 16 + 16)
    assert rolled_up(table, 2)[0][0] == "s.cells" and rolled_up(table, 2)[0][-1] == inner * outer
    assert r.ir.node(f"s.{outer - 1}.cells.{inner - 1}.act").scope[1].index == inner - 1   # unrolls on demand
    assert not r.ir.compact
