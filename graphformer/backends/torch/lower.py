"""The torch lowering table: op name → factory building the nn.Module that computes that op.

A factory takes the IR node and its input types and returns a module whose `forward` takes the node's
inputs positionally (in `node.inputs` order) and returns one tensor. The module's parameters must be
named exactly as the op registry's `params` rule names them (`q.weight`, `bias`, ...), so state-dict
keys are `<node path>.<param name>` everywhere.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ...ir import IRNode
from ...ops.base import TensorType

Factory = Callable[[IRNode, dict[str, TensorType]], nn.Module]
LOWERINGS: dict[str, Factory] = {}


def lowers(*ops: str) -> Callable[[Factory], Factory]:
    def deco(fn: Factory) -> Factory:
        for op in ops:
            assert op not in LOWERINGS, f"torch lowering for {op} registered twice"
            LOWERINGS[op] = fn
        return fn
    return deco
