"""Parameter and FLOP counts per node and in total, straight from the op registry (no torch)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..base.dims import Dim
from ..ir import IRGraph
from ..ops import REGISTRY


@dataclass
class Row:
    node: str
    op: str
    shape: str
    params: int
    flops: Dim
    active: int = 0   # parameters one token uses (fewer than `params` for a mixture of experts)


def rows(ir: IRGraph) -> list[Row]:
    out = []
    seen: dict[tuple, tuple] = {}   # the rules are pure: repetitions of a block count once per distinct node
    for n in ir.nodes():
        if n.op == "input" or n.shape is None:
            continue
        ins = ir.input_types(n)
        key = (n.op, id(n.attrs), tuple(ins.items()), n.shape)
        counted = seen.get(key)
        if counted is None:
            op = REGISTRY[n.op]
            params = sum(math.prod(s) for s in op.params(n.attrs, ins).values())
            active = op.active_params(n.attrs, ins) if op.active_params else params
            counted = seen[key] = (str(n.shape), params, op.flops(n.attrs, ins, n.shape), active)
        shape, params, flops, active = counted
        out.append(Row(n.name, n.op, shape, params, flops, active))
    return out


def total_params(ir: IRGraph) -> int:
    return sum(r.params for r in rows(ir))


def param_shapes(ir: IRGraph) -> dict[str, tuple[int, ...]]:
    """Every parameter tensor by its state-dict name (`blocks.3.attn.q.weight`); tied ones appear once."""
    return ir.param_shapes()
