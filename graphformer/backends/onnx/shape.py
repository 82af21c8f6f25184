"""ONNX lowerings of the shape ops (ops/shape.py), with the semantics of backends/torch/shape.py: Reshape
(its symbolic sizes computed from Shape ops), Transpose, Tile."""
from __future__ import annotations

import numpy as np

from ...base.dims import Dim, FloorDiv
from ...ops.shape import reshaping
from .lower import NodeEmitter, lowers


def dim_size(ctx: NodeEmitter, d: Dim, env: dict[str, str], tag: str) -> str:
    """A 1-element int64 value computing `d` from the symbols' values in `env` (Mul, Add, Div, Mod)."""
    total = None
    for i, (coeff, mono) in enumerate(d.monomials()):
        term = ctx.const([coeff], f"{tag}_c{i}", np.int64) if coeff != 1 or not mono else None
        for j, (atom, power) in enumerate(mono):
            if isinstance(atom, str):
                factor = env[atom]
            else:
                num, den = (dim_size(ctx, part, env, f"{tag}_{i}{j}{k}") for k, part in enumerate((atom.num, atom.den)))
                factor = ctx.op("Div" if isinstance(atom, FloorDiv) else "Mod", [num, den], f"{tag}_{i}{j}")
            for _ in range(power):
                term = factor if term is None else ctx.op("Mul", [term, factor], f"{tag}_{i}{j}")
        total = term if total is None else ctx.op("Add", [total, term], f"{tag}_{i}")
    return total if total is not None else ctx.const([0], f"{tag}_zero", np.int64)


@lowers("reshape")
def _reshape(ctx: NodeEmitter, node) -> None:
    values = dict(zip(node.inputs, ctx.inputs))
    plan = reshaping(node.attrs, ctx.types["x"], ctx.types.get("like"))
    # For ONNX's shape inference to name every axis as we do: a size we know is that constant (even on the
    # axis left to infer), and an axis kept from x at the same place is 0 (Reshape copies it, symbol and all).
    x = ctx.types["x"].shape
    sizes = [d.value if d.is_const else 0 if i < len(x) and d == x[i] else s
             for i, (s, d) in enumerate(zip(plan.sizes, plan.out))]
    if None not in sizes:   # constants, copies and at most one -1
        ctx.op("Reshape", [values["x"], ctx.const(sizes, "shape", np.int64)], final=True)
        return
    shapes = {p: ctx.op("Shape", [values[p]], p) for p in dict.fromkeys(port for _, port, _, _ in plan.reads)}
    env: dict[str, str] = {}
    for name, port, axis, divisor in plan.reads:   # sizes are non-negative: Div is floor division
        size = ctx.op("Gather", [shapes[port], ctx.const([axis], f"axis_{name}", np.int64)], name)
        env[name] = size if divisor == 1 else ctx.op("Div", [size, dim_size(ctx, divisor, env, f"div_{name}")], name)
    parts = [ctx.const([s], f"size{i}", np.int64) if s is not None else dim_size(ctx, d, env, f"size{i}")
             for i, (s, d) in enumerate(zip(sizes, plan.out))]
    ctx.op("Reshape", [values["x"], ctx.op("Concat", parts, "shape", axis=0)], final=True)


@lowers("permute")
def _permute(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    rank = ctx.types["x"].rank
    ctx.op("Transpose", [x], perm=[v % rank for v in node.attrs.order], final=True)


@lowers("tile")
def _tile(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    rank = ctx.types["x"].rank
    repeats = [1] * rank
    repeats[node.attrs.axis % rank] = node.attrs.times
    ctx.op("Tile", [x, ctx.const(repeats, "repeats", np.int64)], final=True)
