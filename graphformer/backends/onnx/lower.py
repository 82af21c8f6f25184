"""The ONNX lowering table (op name → function emitting ONNX nodes) and the per-node emitter it uses.

A lowering is `fn(ctx: NodeEmitter, node: IRNode) -> None`. It reads its inputs from `ctx.inputs`
(ONNX value names, in the op's port order) and their graphformer types from `ctx.types`, emits nodes
with `ctx.op(...)`, and must produce exactly one value named `ctx.out` (pass `final=True` to the last
`op`). Every node it emits is named `<IR path>/<OpType>_<tag>` (`encoder.3.attn/MatMul_q`) and so is
its output value, so both carry the IR path. Parameters are referenced by state-dict key through
`ctx.param("q.weight")`; the graph builder turns exactly the referenced keys into initializers.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ...ir import IRNode
from ...ops.base import TensorType
from ...ops.plugins import LoweringTable

Lowering = Callable[["NodeEmitter", IRNode], None]
LOWERINGS: dict[str, Lowering] = LoweringTable("onnx")  # a plugin's lowerings join on first lookup

ELEM_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "bool": TensorProto.BOOL}


def lowers(*ops: str) -> Callable[[Lowering], Lowering]:
    def deco(fn: Lowering) -> Lowering:
        for op in ops:
            assert not dict.__contains__(LOWERINGS, op), f"onnx lowering for {op} registered twice"
            LOWERINGS[op] = fn
        return fn
    return deco


def custom_node(ctx: "NodeEmitter", node: IRNode) -> None:
    """A plugin op without an ONNX lowering, exported as asked (`--custom-ops`): one node of op type `node.op`
    in the plugin's own domain (`graphformer.<package>`), its inputs then its parameters (in the op's `params`
    order) as inputs, its scalar attributes as attributes. A runtime needs the plugin's kernel to run it."""
    from ...ops import REGISTRY, plugins
    domain = "graphformer." + re.sub(r"[^A-Za-z0-9]+", "_", plugins.ORIGINS[node.op].package).lower()
    params = [ctx.param(k) for k in REGISTRY[node.op].params(node.attrs, ctx.types)]
    attrs = {k: int(v) if isinstance(v, bool) else v for k, v in node.attrs.model_dump().items()
             if isinstance(v, (int, float, str))}   # lists, None and nested values are left out
    ctx.op(node.op, ctx.inputs + params, final=True, domain=domain, **attrs)


def emit_graph(state: "GraphState", ir, names: dict[str, str], keep=None, prefix: str = "") -> None:
    """Lower the nodes of `ir` (those in `keep`, default all) in order; `names` maps each IR node to its
    ONNX value name (inputs included). Also how a sub-graph (a mixture of experts' expert) is inlined,
    its nodes and parameters under `prefix`. Every lowered value is recorded in `state.typed`."""
    state.names |= set(names.values())
    for node in ir.nodes():
        if node.op == "input" or (keep is not None and node.name not in keep):
            continue
        types = {port: ir.node(src).shape for port, src in node.inputs.items()}
        moved = state.retarget.get(node.name, {})
        ctx = NodeEmitter(state, node, [moved.get(src, names[src]) for src in node.inputs.values()], types,
                          names[node.name], prefix)
        LOWERINGS[node.op](ctx, node)
        assert ctx.produced_out, f"onnx lowering of `{node.op}` did not produce {node.name}"
        state.typed[names[node.name]] = node.shape


class GraphState:
    """What every node's emitter appends to: the node list, the parameter keys used, unique names."""

    def __init__(self, opset: int, weights: dict[str, np.ndarray]):
        self.opset = opset
        self.weights = weights
        self.nodes: list = []
        self.used_params: dict[str, None] = {}   # ordered set: initializers in first-use order
        self.names: set[str] = set()
        self.typed: dict[str, TensorType] = {}   # value name → graphformer type, for value_info
        self.past = None                         # past.Past when exporting with past keys and values
        self.shared: dict[str, str] = {}         # node -> the node whose parameters it uses (`share`)
        self.retarget: dict[str, dict[str, str]] = {}   # node -> {input node: value it reads instead} (a step's mask)

    def unique(self, name: str) -> str:
        out, i = name, 2
        while out in self.names:
            out, i = f"{name}_{i}", i + 1
        self.names.add(out)
        return out


class NodeEmitter:
    """Emits the ONNX nodes of one IR node."""

    def __init__(self, state: GraphState, node: IRNode, inputs: list[str], types: dict[str, TensorType],
                 out: str, prefix: str = ""):
        self.state, self.node, self.inputs, self.types, self.out = state, node, inputs, types, out
        self.prefix = prefix          # where a sub-graph's nodes live (`moe.experts.0.`); "" at the top
        self.path = prefix + node.name
        self.produced_out = False

    @property
    def opset(self) -> int:
        return self.state.opset

    def op(self, op_type: str, inputs: list[str], tag: str = "", *, final: bool = False, **attrs) -> str:
        """Add one ONNX node; returns its output value: the node's own name, or `out` when `final`."""
        name = self.state.unique(f"{self.path}/{op_type}" + (f"_{tag}" if tag else ""))
        if final:
            assert not self.produced_out, f"{self.path}: two final values"
            self.produced_out = True
        out = self.out if final else name
        self.state.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def op2(self, op_type: str, inputs: list[str], tag: str, outputs: tuple[str, str], **attrs) -> tuple[str, str]:
        """Add an ONNX node with two outputs (TopK's values and indices), named `<node name>_<output>`."""
        name = self.state.unique(f"{self.path}/{op_type}_{tag}")
        outs = tuple(self.state.unique(f"{name}_{o}") for o in outputs)
        self.state.nodes.append(helper.make_node(op_type, inputs, list(outs), name=name, **attrs))
        return outs

    def const(self, value, tag: str, dtype=None) -> str:
        """A small non-trainable tensor as a Constant node (so initializers stay exactly the weights)."""
        arr = np.asarray(value, dtype=dtype)
        return self.op("Constant", [], tag, value=numpy_helper.from_array(arr, name=""))

    def param(self, key: str, owner: str | None = None) -> str:
        """The initializer holding parameter `key` of this node (or of node `owner`, for tied weights)."""
        path = self.prefix + owner if owner else self.state.shared.get(self.path, self.path)   # `share`: the owner's
        full = f"{path}.{key}"
        assert full in self.state.weights, f"weight {full} was not resolved"
        self.state.used_params[full] = None
        return full

    # ------------------------------------------------------------ small helpers shared by lowerings

    def shape(self, x: str, start: int, end: int, tag: str) -> str:
        """Dims start..end-1 of `x`'s runtime shape (1-D int64): how dynamic dims reach Reshape and friends."""
        return self.op("Shape", [x], tag, start=start, end=end)

    def reduce(self, op_type: str, x: str, axes: list[int], tag: str, keepdims: int, final: bool = False) -> str:
        """ReduceMean / ReduceL2 / ...: opset 18 moved `axes` from an attribute to an input (ReduceSum: 13)."""
        if self.opset >= 18 or op_type == "ReduceSum":
            return self.op(op_type, [x, self.const(axes, f"{tag}_axes", np.int64)], tag, keepdims=keepdims,
                           final=final)
        return self.op(op_type, [x], tag, axes=axes, keepdims=keepdims, final=final)

    def linear(self, x: str, prefix: str, tag: str, bias: bool, final: bool = False,
               weight: str | None = None) -> str:
        """`x @ W.T + b` with W in torch layout `[out, in]` (stored as is; ORT folds the Transpose)."""
        w = weight or self.param(f"{prefix}weight")
        wt = self.op("Transpose", [w], f"{tag}_weight", perm=[1, 0])
        if not bias:
            return self.op("MatMul", [x, wt], tag, final=final)
        y = self.op("MatMul", [x, wt], tag)
        return self.op("Add", [y, self.param(f"{prefix}bias")], tag, final=final)
