"""The IR: a networkx DiGraph of primitive op nodes after expansion (params substituted, blocks inlined).

Every node has a path name (`encoder.3.attn`) that is the same in diagnostics, state-dict keys, ONNX
node names and diagram ids. Graph inputs are nodes with op `input`. Edges carry the consumer's port.
Inference writes `shape` (a TensorType or None when unknown) into each node; backends only read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from .diagnostics import Span
from .ops.base import Attrs, TensorType


@dataclass(frozen=True)
class Frame:
    """One level of block nesting: the call node's path, the block name, and the repetition."""

    path: str             # e.g. `encoder` (the call node); repetitions live at `encoder.3`
    block: str
    index: int | None     # repetition index, None when not repeated
    count: int | None     # total repetitions, None when not repeated
    call_span: Span | None = None


@dataclass
class IRNode:
    name: str
    op: str
    attrs: Attrs | None
    inputs: dict[str, str]          # port -> producing node name (ordered as the op's ports)
    span: Span | None
    scope: tuple[Frame, ...] = ()
    shape: TensorType | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class BodyFacts:
    """A body inferred at one input type: its output, parameters and FLOPs, or the first error."""

    out: TensorType | None
    params: dict[str, tuple[int, ...]]
    flops: Any                      # a Dim
    error: tuple[str, str] | None   # (code, message)


@dataclass(eq=False)
class Body:
    """A block used as an attribute (a mixture of experts' `expert`): expanded once on its own into `ir`,
    whose single input is typed by the node that uses it. `analyse` (attached by the front end, which
    owns inference) infers the body at an input type; results are cached per type."""

    block: str
    ir: "IRGraph"
    analyse: Callable[["IRGraph", TensorType], BodyFacts] | None = None
    _facts: dict = field(default_factory=dict)
    _current: TensorType | None = None

    def at(self, x: TensorType) -> BodyFacts:
        """Facts at input type `x`; afterwards `ir`'s shapes are those at `x` (the torch lowering reads them)."""
        if x not in self._facts or self._current != x:
            self._facts[x] = self.analyse(self.ir, x)
            self._current = x
        return self._facts[x]


@dataclass
class IRGraph:
    name: str
    file: str
    doc: str = ""
    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    inputs: dict[str, str] = field(default_factory=dict)    # spec input name -> node
    outputs: dict[str, str] = field(default_factory=dict)   # spec output name -> node
    output_spans: dict[str, Span | None] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)    # resolved params (int, float, bool, str)
    param_origin: dict[str, str] = field(default_factory=dict)  # param -> "--set" / "preset `tiny`" if not default
    dims: dict[str, int] = field(default_factory=dict)      # symbolic dim -> example size
    weight_maps: dict[str, Any] = field(default_factory=dict)
    bodies: list[Body] = field(default_factory=list)         # block-valued attributes, expanded

    def add(self, node: IRNode) -> None:
        self.g.add_node(node.name, node=node)

    def node(self, name: str) -> IRNode:
        return self.g.nodes[name]["node"]

    def nodes(self) -> list[IRNode]:
        """Nodes in topological order (ties broken by insertion order, so output is stable)."""
        order = {n: i for i, n in enumerate(self.g.nodes)}
        return [self.node(n) for n in nx.lexicographical_topological_sort(self.g, key=lambda n: order[n])]

    def connect(self) -> None:
        for name in list(self.g.nodes):
            for port, src in self.node(name).inputs.items():
                self.g.add_edge(src, name, port=port)

    def resolve_dims(self, overrides: dict[str, int] | None = None) -> dict[str, int]:
        """The example sizes of the symbolic dims with `overrides` applied (unknown names, sizes < 1: UsageError)."""
        from .load import UsageError
        env = dict(self.dims)
        for k, v in (overrides or {}).items():
            if k not in env:
                raise UsageError(f"`{k}` is not a symbolic dim of {self.name} (dims: {', '.join(env) or 'none'})")
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"dim `{k}` must be an integer of at least 1, got {v!r}")
            env[k] = v
        return env

    def table(self) -> str:
        """One row per node: path, op, inferred shape (the `check --shapes` listing)."""
        rows = [(n.name, n.op, str(n.shape) if n.shape else "?") for n in self.nodes()]
        w0 = max((len(r[0]) for r in rows), default=4)
        w1 = max((len(r[1]) for r in rows), default=2)
        return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows) + "\n"
