"""Inputs with a `default` (BERT's `token_type_ids: {shape: [B, n], dtype: int64, default: 0}`).

A caller may leave such an input out; it is then a tensor of that constant, of its declared shape, each
symbol of which is read off the shape of a required input (checked by the expander: GF250). `fill` is the
one description both backends build it from: torch in `GraphModule.forward`, ONNX as a ConstantOfShape
when the export leaves the input out.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.dims import Dim
from ..ops.base import TensorType
from ..ops.shape import readable_symbols
from . import IRGraph


@dataclass(frozen=True)
class Fill:
    value: bool | int | float
    dtype: str
    shape: tuple[Dim, ...]
    # (symbol, input name, axis, divisor), in order: symbol = input.shape[axis] // divisor, the divisor a
    # Dim over the symbols read before it (as a reshape's target reads them, ops/shape.py)
    reads: tuple[tuple[str, str, int, Dim], ...]


def default_of(ir: IRGraph, name: str):
    """The constant input `name` stands for when left out; None when it has no default."""
    return ir.node(ir.inputs[name]).meta.get("default")


def required_shapes(ir: IRGraph) -> dict[str, TensorType]:
    """The inputs every call gives (neither `optional` nor with a `default`) whose shape is known."""
    out = {}
    for k, v in ir.inputs.items():
        node = ir.node(v)
        if not node.meta.get("optional") and node.meta.get("default") is None and node.shape is not None:
            out[k] = node.shape
    return out


def unreadable(shape: tuple[Dim, ...], required: dict[str, TensorType]) -> list[str]:
    """The symbols of `shape` that no required input's shape gives."""
    found = readable_symbols(required)
    return sorted({s for d in shape for s in d.symbols} - found.keys())


def fill(ir: IRGraph, name: str) -> Fill:
    """How to build input `name` (which has a default) from the required inputs' runtime shapes. A top-level
    input's node is named as the input, so this works on an IR whose `inputs` left it out (an ONNX export's)."""
    node = ir.node(name)
    shape = node.shape.shape
    needed = {s for d in shape for s in d.symbols}
    found = readable_symbols(required_shapes(ir))
    reads = [(sym, *where) for sym, where in found.items()]
    # a divisor is over symbols read before it: keep every read up to the last one the shape needs
    last = max((i for i, r in enumerate(reads) if r[0] in needed), default=-1)
    return Fill(node.meta["default"], node.shape.dtype, tuple(shape), tuple(reads[:last + 1]))
