"""Parameter and FLOP counts per node and in total, straight from the op registry (no torch).

`rows` lists every node (a compact IR is unrolled); `counted_rows` lists each node of a compact IR's
distinct instantiations once, with the number of nodes it stands for, and `rolled_up` groups either kind
the way `summary --depth` shows them.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ..base.dims import Dim
from ..ir import IRGraph, Repeat, shared_owner
from ..ops import REGISTRY


@dataclass
class Row:
    node: str
    op: str
    shape: str
    params: int
    flops: Dim
    active: int = 0   # parameters one token uses (fewer than `params` for a mixture of experts)
    count: int = 1    # nodes this row stands for (every repetition of a compact call that uses its body)
    reps: tuple = ()  # per enclosing compact call: (place of its index in the path, the repetitions)
    order: tuple = ((), ())   # (first, last) place of those nodes in execution order


def rows(ir: IRGraph) -> list[Row]:
    out = []
    seen: dict[tuple, tuple] = {}   # the rules are pure: repetitions of a block count once per distinct node
    shared = ir.shared
    for n in ir.nodes():
        row = _row(ir, n, seen, n.name in shared)
        if row is not None:
            out.append(row)
    return out


def _row(g: IRGraph, n, seen: dict, shared: bool = False) -> Row | None:
    """`shared`: the node uses another repetition's parameters (`share`), counted there: FLOPs only."""
    if n.op == "input" or n.shape is None:
        return None
    ins = {p: g.value(s).shape for p, s in n.inputs.items()}
    key = (n.op, id(n.attrs), tuple(ins.items()), n.shape)
    counted = seen.get(key)
    if counted is None:
        op = REGISTRY[n.op]
        params = sum(math.prod(s) for s in op.trained(n.attrs, ins).values())   # running state is no parameter
        active = op.active_params(n.attrs, ins) if op.active_params else params
        counted = seen[key] = (str(n.shape), params, op.flops(n.attrs, ins, n.shape), active)
    shape, params, flops, active = counted
    return Row(n.name, n.op, shape, 0 if shared else params, flops, 0 if shared else active)


def counted_rows(ir: IRGraph) -> list[Row]:
    """Rows of a compact IR without unrolling it: one per node of each distinct instantiation, `count`
    the nodes it stands for. Where the spec's order is not an execution order (a reference to a node
    defined later), the IR is unrolled and every node gets a row of its own, as `rows` gives."""
    out: list[Row] = []
    if ir.compact and _walk(ir, (), (), (), out, {}, False):
        return out
    return [Row(r.node, r.op, r.shape, r.params, r.flops, r.active, order=((i,), (i,)))
            for i, r in enumerate(rows(ir))]


def _walk(g: IRGraph, reps: tuple, first: tuple, last: tuple, out: list[Row], seen: dict, shared: bool) -> bool:
    """Rows of `g` in its spec order, which must also be an execution order (then a full expansion's
    topological order is the spec order too, repetition after repetition). `shared`: `g` is run by
    repetitions that use other repetitions' parameters (`share`): its rows count FLOPs, no parameters."""
    entries = g.entries()
    place: dict[str, int] = {}
    for i, e in enumerate(entries):
        reads = e.feeds.values() if isinstance(e, Repeat) else e.inputs.values()
        if any(place.get(r, i) >= i for r in reads):
            return False
        if isinstance(e, Repeat):
            place.update((e.output(o), i) for o in e.bodies[e.which[-1]].outputs)
        else:
            place[e.name] = i
    count = math.prod(len(ix) for _, ix in reps)
    for i, e in enumerate(entries):
        if isinstance(e, Repeat):
            at = len(e.path.split("."))   # the repetition's index follows the call's path
            for k, body in enumerate(e.bodies):
                for sharing in (False, True):   # the repetitions that own their parameters, then the others
                    ix = tuple(j for j, w in enumerate(e.which) if w == k and e.owns(j) != sharing)
                    if ix and not _walk(body, reps + ((at, ix),), first + (i, ix[0]), last + (i, ix[-1]), out,
                                        seen, shared or sharing):
                        return False
            continue
        row = _row(g, e, seen, shared or shared_owner(e.name, e.scope) is not None)
        if row is not None:
            row.count, row.reps, row.order = count, reps, (first + (i,), last + (i,))
            out.append(row)
    return True


def rolled_up(table: list[Row], depth: int) -> list[tuple]:
    """Rows grouped by the first `depth` parts of their path, repetition indices dropped: a 96-layer model
    gives one row per block kind (`blocks × 96`): (path, op or `block`, shape, params, FLOPs, repetitions).
    Params and FLOPs are summed over the group; a block's shape is its output's, the last node of the group
    in execution order (not its first node's)."""
    groups: dict[str, dict] = {}
    for i, r in enumerate(table):   # rows of `rows` carry no order: theirs is the table's
        parts = r.node.split(".")
        named = [p for p in parts if not p.isdigit()]
        key = ".".join(named[:depth])
        first, last = (r.order[0], i), (r.order[1], i)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"first": (first, r), "last": (last, r), "params": 0, "flops": Dim.const(0), "reps": []}
        if first < g["first"][0]:
            g["first"] = (first, r)
        if last > g["last"][0]:
            g["last"] = (last, r)
        g["params"] += r.params * r.count
        g["flops"] = g["flops"] + (r.flops * r.count if r.count != 1 else r.flops)
        g["reps"].append(_repetitions(parts, depth, dict(r.reps)))
    out = []
    for key, g in sorted(groups.items(), key=lambda kv: kv[1]["first"][0]):
        first = g["first"][1]
        block = len([p for p in first.node.split(".") if not p.isdigit()]) > depth
        out.append((key, "block" if block else first.op, g["last"][1].shape if block else first.shape, g["params"],
                    g["flops"], _union_size(g["reps"])))
    return out


def _repetitions(parts: list[str], depth: int, compact: dict[int, tuple]) -> tuple:
    """The repetition indices on the path down to `depth` named parts (what distinguishes group members),
    each as the tuple of indices it takes (one for an unrolled repetition, many for a compact one)."""
    out, named = [], 0
    for at, p in enumerate(parts):
        if p.isdigit():
            out.append(compact.get(at, (int(p),)))
        else:
            named += 1
            if named > depth:
                break
    return tuple(out)


def _union_size(products: list[tuple]) -> int:
    """How many distinct index tuples the products of index sets hold together."""
    if all(p == products[0] for p in products):
        return math.prod(len(ix) for ix in products[0])
    return len({t for p in products for t in itertools.product(*p)})


def total_params(ir: IRGraph) -> int:
    return sum(r.params * r.count for r in counted_rows(ir))


def param_shapes(ir: IRGraph) -> dict[str, tuple[int, ...]]:
    """Every parameter tensor by its state-dict name (`blocks.3.attn.q.weight`); tied ones appear once."""
    return ir.param_shapes()
