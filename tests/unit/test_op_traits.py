"""Op traits (ops/base.py): every registered op declares the traits the analyses read, each consistent with
its attributes and ports, and the analyses read traits, never op names."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from graphformer.ops import REGISTRY
from graphformer.ops import base

PACKAGE = Path(__file__).resolve().parents[2] / "graphformer"
ANALYSES = ["analysis/decoding.py", "analysis/tp_plan.py", "analysis/budget.py", "analysis/summary.py",
            "analysis/memory.py", "backends/torch/generation.py"]
REQUIRED = ("sequence", "tp", "saves")   # no default: an op that leaves one out does not register


def test_the_traits_every_analysis_needs_have_no_default():
    fields = {f.name: f for f in dataclasses.fields(base.OpDef)}
    for name in REQUIRED:
        f = fields[name]
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, name
    with pytest.raises(TypeError, match="sequence"):
        base.OpDef("new_op", "core", "doc", base.NoAttrs, ("x",), lambda a, ins: ins["x"], tp=base.THROUGH,
                   saves=base.keeps())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_op_declares_traits_its_attributes_support(name):
    op = REGISTRY[name]
    assert op.sequence in base.SEQUENCE and op.tp in base.TP and callable(op.saves)
    fields = set(op.attrs.model_fields)
    needs = {   # what an analysis reads of a node, by trait
        ("sequence", base.AXIS): {"axis"},
        ("sequence", base.CACHE): {"causal"},
        ("tp", base.MATMUL): {"out"},
        ("tp", base.VOCAB): {"vocab"},
        ("tp", base.EXPERTS): {"experts"},
    }
    for (trait, value), attrs in needs.items():
        if getattr(op, trait) == value:
            assert attrs <= fields, f"{name}: {trait} {value} reads attrs {attrs - fields}"
    if op.sequence == base.CACHE:   # the decoder plan sizes its cache slot from these
        assert hasattr(op.attrs, "cache_widths") and "x" in op.port_names, name
    if op.tp == base.HEADS:         # tp_plan splits heads by `geometry`, or by the op's own `latent_shards`
        assert hasattr(op.attrs, "geometry") or hasattr(op.attrs, "latent_shards"), name
    if op.sequence == base.RECURRENT:   # the decoder plan's state slot, or its refusal, comes from `carry`
        assert callable(op.carry), name
    if op.sequence == base.MOVES:       # the decoder plan follows the token axis through it
        assert hasattr(op.attrs, "moved_axis"), name
    if op.sequence == base.CONTEXT:
        assert "context" in op.port_names and "query" in op.port_names, name
    if op.token_table:
        assert "vocab" in fields, name
    if op.tp == base.THROUGH:   # passing a column split through: no weights, and not mixing positions
        assert op.sequence == base.POSITION, name


def test_a_saves_trait_names_ports_of_its_op():
    """Run each op's `saves` on made-up float inputs of rank 3 where it needs no attrs (most ops)."""
    x = base.tt(2, 4, 8)

    class Ctx:
        attrs = None
        dims: dict = {}
        itemsize = 4
        out = x

        def numel(self, t):
            return 64

        def bytes(self, t):
            return 256

        def body_saved(self, t):
            return 0

    for name, op in REGISTRY.items():
        ctx = Ctx()
        ctx.ins = {p: x for p in op.port_names}
        try:
            saved = op.saves(ctx)
        except (AttributeError, TypeError, KeyError):
            continue   # reads its attrs: exercised by tests/integration/test_budget.py on real specs
        assert isinstance(saved, base.Saved), name
        assert set(saved.ports) <= set(op.port_names) | {"out"}, f"{name} saves unknown ports {saved.ports}"


def _op_name_reads(path: Path) -> list[str]:
    """Comparisons of an op name (`n.op == "linear"`, `op in ("norm", ...)`) and string constants that name a
    registered op, outside docstrings. The IR's `input` pseudo-op is not a registered op."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                and node.value in REGISTRY:
            found.append(f"{path.name}:{node.lineno}: the op name {node.value!r}")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            reads_op = any((isinstance(s, ast.Attribute) and s.attr == "op") or (isinstance(s, ast.Name) and s.id == "op")
                           for s in sides)
            consts = [c.value for s in sides for c in ast.walk(s) if isinstance(c, ast.Constant)]
            if reads_op and any(c != "input" for c in consts):
                found.append(f"{path.name}:{node.lineno}: compares an op name")
    return found


def test_analyses_read_traits_not_op_names():
    found = [hit for name in ANALYSES for hit in _op_name_reads(PACKAGE / name)]
    assert not found, "read a trait (ops/base.py) instead:\n" + "\n".join(found)


def test_the_grep_finds_an_op_name_comparison(tmp_path):
    path = tmp_path / "analysis.py"
    path.write_text('def f(n):\n    """About linear layers."""\n    return n.op == "linear" or n.op in ("mul",)\n')
    assert len(_op_name_reads(path)) == 4   # two comparisons, two op names
