"""Torch lowerings of the shape ops (graphformer/ops/shape.py): reshape, permute, tile. No parameters."""
from __future__ import annotations

from functools import partial

from torch import nn

from ...ops.shape import Reshaping, reshaping
from .core import Fn
from .lower import lowers


class _Reshape(nn.Module):
    """A reshape. Constant sizes and at most one -1: the generated forward inlines `x.reshape(...)`.
    Otherwise the symbols are read off the shapes of `x` and `like` (`Reshaping.reads`) and the sizes
    computed from them, once per call."""

    def __init__(self, plan: Reshaping):
        super().__init__()
        self.plan = plan
        self.sizes = None if None in plan.sizes else tuple(plan.sizes)

    def inline(self, args: list[str], training: bool) -> str | None:
        return None if self.sizes is None else f"{args[0]}.reshape({', '.join(map(str, self.sizes))})"

    def forward(self, x, like=None):
        if self.sizes is not None:
            return x.reshape(self.sizes)
        env: dict[str, int] = {}
        for name, port, axis, divisor in self.plan.reads:
            env[name] = (x if port == "x" else like).shape[axis] // divisor.evaluate(env)
        return x.reshape([s if s is not None else d.evaluate(env) for s, d in zip(self.plan.sizes, self.plan.out)])

    def extra_repr(self) -> str:
        return "reshape to [" + ", ".join(str(d) for d in self.plan.out) + "]"


@lowers("reshape")
def _reshape_op(node, types):
    return _Reshape(reshaping(node.attrs, types["x"], types.get("like")))


def _permute(x, order: tuple[int, ...]):
    return x.permute(order)


@lowers("permute")
def _permute_op(node, types):
    order = tuple(v % types["x"].rank for v in node.attrs.order)
    text = ", ".join(map(str, order))
    return Fn(partial(_permute, order=order), f"permute({text})", f"{{0}}.permute({text})")


def _tile(x, repeats: tuple[int, ...]):
    return x.repeat(repeats)


@lowers("tile")
def _tile_op(node, types):
    rank = types["x"].rank
    repeats = [1] * rank
    repeats[node.attrs.axis % rank] = node.attrs.times
    text = ", ".join(map(str, repeats))
    return Fn(partial(_tile, repeats=tuple(repeats)), f"repeat({text})", f"{{0}}.repeat({text})")
