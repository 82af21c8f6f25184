"""The torch lowering table: op name → factory building the nn.Module that computes that op.

A factory takes the IR node and its input types and returns a module whose `forward` takes the node's
inputs positionally (in `node.inputs` order) and returns one tensor. The module's parameters must be
named exactly as the op registry's `params` rule names them (`q.weight`, `bias`, ...), so state-dict
keys are `<node path>.<param name>` everywhere.

Factories run under a `torch.device(...)` context: create parameters with plain `torch.empty(...)` and
they land on the build device (nothing is allocated on meta). The builder then initialises every
parameter once: biases 0, 1-D weights 1, others normal(0, 0.02). Optional hooks a module may define:

- `init_parameters(generator)`: its own init for its whole subtree, instead of the default.
- `inline(args, training) -> str | None`: for parameter-free ops, a Python expression over the argument
  names, `torch` and `F` that the execution plan inlines instead of a module call (or one of `args`
  itself, to make the node an alias, e.g. dropout in eval mode).
- `tie(owner)`: for `tied:` nodes, called with the owner node's module once all modules exist.
- `takes_prepared_mask = True`: its `mask` input may arrive as `prepare_key_mask(mask)` (core.py):
  [B, 1, 1, m] bool, or None when nothing is masked.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ...ir import IRNode
from ...ops.base import TensorType
from ...ops.plugins import LoweringTable

Factory = Callable[[IRNode, dict[str, TensorType]], nn.Module]
LOWERINGS: dict[str, Factory] = LoweringTable("torch")  # a plugin's lowerings join on first lookup


def lowers(*ops: str) -> Callable[[Factory], Factory]:
    def deco(fn: Factory) -> Factory:
        for op in ops:
            assert not dict.__contains__(LOWERINGS, op), f"torch lowering for {op} registered twice"
            LOWERINGS[op] = fn
        return fn
    return deco
