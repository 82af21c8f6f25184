"""graphs.py: the graph algorithms the IR and the torch plan use instead of networkx."""
from __future__ import annotations

import pytest

from graphformer.base import graphs


def succ_of(edges):
    out: dict = {}
    for a, b in edges:
        out.setdefault(a, []).append(b)
        out.setdefault(b, [])
    return lambda n: out.get(n, [])


def test_topological_order_prefers_the_given_order_where_edges_allow():
    nodes = ["a", "b", "c", "d"]
    assert graphs.topological_order(nodes, succ_of([])) == nodes
    assert graphs.topological_order(nodes, succ_of([("d", "a"), ("c", "b")])) == ["c", "b", "d", "a"]


def test_topological_order_names_a_cycle():
    with pytest.raises(graphs.CycleError) as e:
        graphs.topological_order(["x", "a", "b", "c"], succ_of([("x", "a"), ("a", "b"), ("b", "c"), ("c", "a")]))
    assert e.value.cycle == ["a", "b", "c"]


def test_strongly_connected_parts_and_their_cycles():
    succ = succ_of([("a", "b"), ("b", "a"), ("b", "c"), ("c", "c"), ("c", "d")])
    parts = sorted(sorted(p) for p in graphs.strongly_connected(["a", "b", "c", "d"], succ))
    assert parts == [["a", "b"], ["c"], ["d"]]
    assert graphs.find_cycle(["c"], succ) == ["c"]            # a self-loop
    assert graphs.find_cycle(["a", "b"], succ) == ["a", "b"]
    assert graphs.find_cycle(["d"], succ) == []


def test_deep_chains_do_not_recurse():
    n = 50_000
    nodes = list(range(n))
    succ = lambda i: [i + 1] if i + 1 < n else []  # noqa: E731
    assert graphs.topological_order(nodes[::-1], succ) == nodes
    assert len(graphs.strongly_connected(nodes, succ)) == n
    assert graphs.reachable([0], succ) == set(nodes)
