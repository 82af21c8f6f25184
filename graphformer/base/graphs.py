"""The few graph algorithms graphformer needs, on plain dicts (no networkx: importing it cost ~40% of
`import graphformer`). Graphs are a node list plus a `succ(node)` function giving each node's successors.
"""
from __future__ import annotations

import heapq
from typing import Callable, Hashable, Iterable, TypeVar

N = TypeVar("N", bound=Hashable)
Succ = Callable[[N], Iterable[N]]


class CycleError(Exception):
    """The graph has a cycle; `cycle` is one of them, `[a, b, ..., z]` with z → a."""

    def __init__(self, cycle: list):
        super().__init__(" → ".join(map(str, cycle + cycle[:1])))
        self.cycle = cycle


def topological_order(nodes: list[N], succ: Succ) -> list[N]:
    """Kahn's algorithm; of the nodes ready at each step the earliest in `nodes` goes first, so the order
    is stable and follows the spec where the edges allow. Raises CycleError."""
    index = {n: i for i, n in enumerate(nodes)}
    indegree = dict.fromkeys(nodes, 0)
    for n in nodes:
        for m in succ(n):
            indegree[m] += 1
    ready = [index[n] for n in nodes if indegree[n] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        n = nodes[heapq.heappop(ready)]
        out.append(n)
        for m in succ(n):
            indegree[m] -= 1
            if indegree[m] == 0:
                heapq.heappush(ready, index[m])
    if len(out) < len(nodes):
        raise CycleError(find_cycle([n for n in nodes if indegree[n] > 0], succ))
    return out


def strongly_connected(nodes: list[N], succ: Succ) -> list[list[N]]:
    """Tarjan's strongly connected components, iteratively (a 10,000-layer chain must not recurse)."""
    index: dict = {}
    low: dict = {}
    on_stack: set = set()
    stack: list = []
    out: list[list[N]] = []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(succ(root)))]
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(succ(w))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp[::-1])
    return out


def find_cycle(nodes: list[N], succ: Succ) -> list[N]:
    """One cycle using only `nodes` (edges leaving them are ignored), `[a, ..., z]` with z → a; [] if none."""
    inside = set(nodes)
    state: dict = {}            # 1: on the current path, 2: finished
    for root in nodes:
        if root in state:
            continue
        path, its = [root], [iter(succ(root))]
        state[root] = 1
        while its:
            for w in its[-1]:
                if w not in inside:
                    continue
                if state.get(w) == 1:
                    return path[path.index(w):]
                if w not in state:
                    state[w] = 1
                    path.append(w)
                    its.append(iter(succ(w)))
                    break
            else:
                state[path.pop()] = 2
                its.pop()
    return []


def reachable(starts: Iterable[N], succ: Succ) -> set[N]:
    """`starts` and every node reachable from them (with a predecessor function: the ancestors)."""
    seen = set(starts)
    todo = list(seen)
    while todo:
        for m in succ(todo.pop()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen
