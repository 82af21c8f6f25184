"""IR → ONNX ModelProto: one topological walk calling each op's lowering, then inputs, outputs, weights.

Names: graph inputs and outputs are the spec's; the value computed by an IR node is named by its path
(`encoder.3.ln2`); the ONNX nodes a lowering emits are `<path>/<OpType>_<tag>`; initializers are the
state-dict keys (`encoder.3.attn.q.weight`) and nothing else (constants are Constant nodes). Every
symbolic dim becomes a dim_param spelled as graphformer prints it (`B`, `n`, `n + 1`), and every IR
value gets a value_info entry with graphformer's inferred shape, so viewers show the spec's shapes.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

from ...base.dims import Dim
from ...ir import IRGraph
from ...ir.defaults import fill
from ...base.errors import ExportError
from ...ops.base import TensorType
from . import audio, conv, core, grid, mla, moe, multimodal, relative, scan, sequence, shape, vision  # noqa: F401  (fill the lowering table: one module per op family)
from .lower import ELEM_TYPES, LOWERINGS, GraphState, NodeEmitter, emit_graph
from .shape import dim_size
from .past import Past

MIN_OPSET = 17  # LayerNormalization


def _version() -> str:
    try:
        return version("graphformer")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "dev"


def dim_proto(d: Dim) -> int | str:
    return d.value if d.is_const else str(d)


def value_info(name: str, t: TensorType):
    return helper.make_tensor_value_info(name, ELEM_TYPES[t.dtype], [dim_proto(d) for d in t.shape])


def exported_nodes(ir: IRGraph) -> set[str]:
    """The nodes some output depends on: nodes that feed nothing are left out, as are their weights."""
    return ir.ancestors(ir.outputs.values())


def without_inputs(ir: IRGraph, omitted: set[str]) -> IRGraph:
    """`ir` as it runs when the optional spec inputs `omitted` are not given, as the torch build runs
    without them: the nodes computed from them are left out, and the optional op ports that read those
    (an attention `mask`, `positions`) are not fed. An ONNX graph input can't be left out at run time,
    so an optional input is either in the model or not (docs/onnx.md)."""
    if not omitted:
        return ir
    gone = {ir.inputs[k] for k in omitted}
    inputs = {}
    for node in ir.nodes():                       # topological: a node's producers are decided first
        cut = [p for p, src in node.inputs.items() if src in gone]
        if set(cut) & set(node.meta.get("optional_ports", ())):
            gone.add(node.name)                   # computed from an omitted input (infer.py marks these)
        elif node.name not in gone:
            inputs[node.name] = {p: src for p, src in node.inputs.items() if p not in cut}
    out = replace(ir, inputs={k: v for k, v in ir.inputs.items() if k not in omitted}, _nodes={}, _succ={},
                  _pred={}, _order=None, _ties=None)
    for name in ir.names():                       # spec order, as the original
        if name in inputs:
            node = ir.node(name)
            out.add(node if inputs[name] == node.inputs else replace(node, inputs=inputs[name]))
    out.connect()
    return out


def filling(ir: IRGraph, filled: set[str]) -> IRGraph:
    """`ir` with the inputs `filled` (each with a `default`) computed in the graph instead of fed: no longer
    graph inputs, their nodes stay and `to_model` builds each as a ConstantOfShape (`_fill_inputs`)."""
    if not filled:
        return ir
    return replace(ir, inputs={k: v for k, v in ir.inputs.items() if k not in filled})


def _fill_inputs(state: GraphState, ir: IRGraph, names: dict[str, str], keep: set[str]) -> None:
    """Each input node that `filling` took out of the graph inputs, as the torch build makes it when a call
    leaves it out: its constant at the shape read off the required inputs' runtime shapes (ir/defaults.py)."""
    fed = set(ir.inputs.values())
    for node in ir.nodes():
        if node.op != "input" or node.name in fed or node.name not in keep or node.meta.get("default") is None:
            continue
        f = fill(ir, node.name)
        ctx = NodeEmitter(state, node, [], {}, names[node.name])
        env: dict[str, str] = {}
        for sym, src, axis, divisor in f.reads:
            size = ctx.op("Shape", [names[ir.inputs[src]]], sym, start=axis, end=axis + 1)
            env[sym] = size if divisor == 1 else ctx.op("Div", [size, dim_size(ctx, divisor, env, f"div_{sym}")], sym)
        parts = [ctx.const([d.value], f"size{i}", np.int64) if d.is_const else dim_size(ctx, d, env, f"size{i}")
                 for i, d in enumerate(f.shape)]
        shape = ctx.op("Concat", parts, "shape", axis=0) if parts else ctx.const([], "shape", np.int64)
        value = numpy_helper.from_array(np.array([f.value], dtype=helper.tensor_dtype_to_np_dtype(
            ELEM_TYPES[f.dtype])), name="")
        ctx.op("ConstantOfShape", [shape], "default", value=value, final=True)
        state.typed[names[node.name]] = node.shape


def value_names(ir: IRGraph) -> dict[str, str]:
    """IR node → ONNX value name: spec input names for inputs, the path otherwise.

    A path that is also the name of a spec output for a different node is renamed, so the graph output
    can carry the spec's name.
    """
    input_names = {node: name for name, node in ir.inputs.items()}
    names = {}
    for n in ir.names():
        if n in input_names:
            names[n] = input_names[n]
        elif n in ir.outputs and ir.outputs[n] != n:
            names[n] = f"{n}/value"
        else:
            names[n] = n
    return names


def to_model(ir: IRGraph, weights: dict[str, np.ndarray], opset: int,
             tensor: Callable[[str, np.ndarray], TensorProto] | None = None, past: Past | None = None) -> ModelProto:
    """Lower `ir` with `weights` (state-dict key → array). `tensor` makes each initializer (default inline).
    With `past`, the decoder step that reads and returns past keys and values (past.py)."""
    tensor = tensor or (lambda name, arr: numpy_helper.from_array(arr, name))
    keep = exported_nodes(ir)
    names = value_names(ir)
    state = GraphState(opset, weights)
    state.shared = ir.shared
    state.names |= set(ir.outputs)
    if past is not None:
        names |= {ir.inputs[k]: v for k, v in past.renamed_inputs().items()}
        state.past = past
        state.names |= past.names()
        state.nodes += past.prelude(state)   # values every step computes first (an encoder–decoder's positions)
    nodes = [n for n in ir.nodes() if n.op != "input" and n.name in keep]
    for body in ir.bodies:
        nodes += [n for n in body.ir.nodes() if n.op != "input"]
    for node in nodes:
        if node.op not in LOWERINGS:
            raise ExportError(f"op `{node.op}` (node `{node.name}`) has no ONNX lowering yet")
    _fill_inputs(state, ir, names, keep)
    emit_graph(state, ir, names, keep)
    infos = [value_info(name, t) for name, t in state.typed.items() if name not in ir.outputs]

    outputs = []
    for out_name, node_name in ir.outputs.items():
        if names[node_name] != out_name:  # graph outputs carry the spec's names
            state.nodes.append(helper.make_node("Identity", [names[node_name]], [out_name],
                                                name=state.unique(f"{out_name}/Identity")))
        outputs.append(value_info(out_name, ir.node(node_name).shape))
    inputs = [value_info(name, ir.node(node).shape) for name, node in ir.inputs.items()]
    if past is not None:
        outputs += past.outputs()
        renamed = past.renamed_inputs()
        inputs = past.inputs(ir) + [i for i, k in zip(inputs, ir.inputs) if k not in renamed]
    inits = [tensor(key, weights[key]) for key in state.used_params]

    graph = helper.make_graph(state.nodes, ir.name, inputs, outputs, inits, doc_string=ir.doc.strip(),
                              value_info=infos)
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, 1) for d in sorted({n.domain for n in state.nodes} - {""})]  # --custom-ops
    model = helper.make_model(graph, opset_imports=opsets, producer_name="graphformer",
                              producer_version=_version())
    # the oldest IR version that can hold this opset: readable by the widest range of runtimes
    model.ir_version = helper.find_min_ir_version_for(opsets[:1])
    helper.set_model_props(model, {"graphformer.frontend.format": os.path.basename(ir.file),
                                   "graphformer.params": json.dumps(ir.params),
                                   "graphformer.example_dims": json.dumps(ir.dims)})
    return model
