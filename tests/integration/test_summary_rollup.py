"""`summary --depth`'s block rows show the block's own output shape: for every bundled spec at preset tiny,
each rolled-up block row's shape, evaluated at the example sizes, is the shape the built module's last node
of that block really outputs (`trace_shapes`, a forward node by node)."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import graphformer  # noqa: E402
from graphformer.analysis.summary import rows  # noqa: E402
from graphformer.base.dims import parse  # noqa: E402
from graphformer.commands.summary import rollup  # noqa: E402

SPECS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))


def _evaluate(shape: str, dims: dict[str, int]) -> list[int]:
    return [parse(part).evaluate(dims) for part in shape.strip("[]").split(", ")]


@pytest.mark.parametrize("name", SPECS)
def test_block_rows_show_the_block_output_shape(name):
    spec = graphformer.load(name, preset="tiny")
    model = graphformer.build(spec, seed=0).eval()
    inputs = graphformer.example_inputs(spec, seed=1)
    dims = dict(spec.dims)   # the example sizes example_inputs uses
    table = rows(spec.ir)
    blocks = []
    for depth in (1, 2):
        for key, op, shape, *_ in rollup(table, depth):
            if op == "block":
                last = [r for r in table if ".".join(p for p in r.node.split(".") if not p.isdigit())
                        .startswith(key + ".") or r.node == key][-1]
                blocks.append((key, shape, last.node))
    if not blocks:
        pytest.skip(f"{name} has no block rows")
    with torch.no_grad():
        seen = model.trace_shapes(**inputs)   # every node's runtime shape, node by node
    compared = 0
    for key, shape, node in blocks:
        if seen.get(node) is None:
            continue   # not a tensor-valued module output (a tuple): nothing to compare
        assert list(seen[node]) == _evaluate(shape, dims), (key, shape, seen[node])
        compared += 1
    assert compared, f"{name}: no block row was compared"
