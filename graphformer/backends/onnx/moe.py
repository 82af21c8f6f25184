"""ONNX lowering of the mixture-of-experts op (graphformer/ops/moe.py), in a dense masked form.

ONNX has no cheap way to run a sub-graph on a data-dependent subset of tokens, so every expert runs on
every token and the outputs are summed with the router's weights, which are zero for the experts a
token was not routed to. That equals the torch backend's sparse form (only the selected experts, on
their tokens) for experts that treat tokens independently, as feed-forward experts do; it costs E/k
times the expert FLOPs of the sparse form. Each expert's nodes are inlined under `<node>.experts.<e>.`,
their weights named as the torch state dict names them.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .lower import NodeEmitter, emit_graph, lowers


def _dense_weights(ctx: NodeEmitter, logits: str, a) -> str:
    """The router's weight of every expert for every token, [..., E]: the kept top-k weights scattered
    into zeros (torch's MoE.route: softmax → top-k → renormalise, or top-k logits → softmax)."""
    k = ctx.const([a.top_k], "top_k", np.int64)
    if a.router == "softmax_topk":
        probs = ctx.op("Softmax", [logits], "router", axis=-1)
        if a.groups is not None and a.top_groups < a.groups:   # all groups kept: plain top-k
            probs = _group_limited(ctx, probs, a)
        top, idx = _top_k(ctx, probs, k)
        if a.normalize:
            total = ctx.reduce("ReduceSum", top, [-1], "renormalise", keepdims=1)
            top = ctx.op("Div", [top, total], "renormalise")
        base = probs
    else:
        top, idx = _top_k(ctx, logits, k)
        top = ctx.op("Softmax", [top], "router", axis=-1)
        base = logits
    if a.routed_scale != 1.0:
        top = ctx.op("Mul", [top, ctx.const(a.routed_scale, "routed_scale", np.float32)], "routed_scale")
    zeros = ctx.op("ConstantOfShape", [ctx.op("Shape", [base], "router")], "router",
                   value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.0]))
    return ctx.op("ScatterElements", [zeros, idx, top], "router", axis=-1)                 # (..., E)


def _group_limited(ctx: NodeEmitter, probs: str, a) -> str:
    """torch's MoE.group_limited: experts outside the `top_groups` groups with the best top expert get 0."""
    shape = [-1, a.groups, a.experts // a.groups]
    grouped = ctx.op("Reshape", [probs, ctx.const(shape, "groups", np.int64)], "groups")     # (T, G, E/G)
    best = ctx.reduce("ReduceMax", grouped, [-1], "group_score", keepdims=0)                # (T, G)
    _, idx = _top_k(ctx, best, ctx.const([a.top_groups], "top_groups", np.int64))
    value = lambda v: helper.make_tensor("", TensorProto.FLOAT, [1], [v])  # noqa: E731
    ones = ctx.op("ConstantOfShape", [ctx.op("Shape", [idx], "keep")], "keep", value=value(1.0))
    zeros = ctx.op("ConstantOfShape", [ctx.op("Shape", [best], "keep")], "keep", value=value(0.0))
    keep = ctx.op("ScatterElements", [zeros, idx, ones], "keep", axis=-1)                  # (T, G)
    keep = ctx.op("Unsqueeze", [keep, ctx.const([-1], "keep_axis", np.int64)], "keep")      # (T, G, 1)
    kept = ctx.op("Mul", [grouped, keep], "kept")
    return ctx.op("Reshape", [kept, ctx.op("Shape", [probs], "probs_shape")], "group_limited")


def _top_k(ctx: NodeEmitter, x: str, k: str) -> tuple[str, str]:
    return ctx.op2("TopK", [x, k], "router", ("values", "indices"), axis=-1)


@lowers("moe")
def _moe(ctx: NodeEmitter, node) -> None:
    (x,) = ctx.inputs
    a = node.attrs
    body = a.body()
    body.at(ctx.types["x"])                 # the body's IR shapes at this node's input type
    (in_node,) = body.ir.inputs.values()
    (out_node,) = body.ir.outputs.values()
    outs = []
    for e in range(a.experts):
        prefix = f"{ctx.path}.experts.{e}."
        names = {n: (x if n == in_node else prefix + n) for n in body.ir.names()}
        emit_graph(ctx.state, body.ir, names, prefix=prefix)
        outs.append(ctx.op("Unsqueeze", [names[out_node], ctx.const([-1], f"expert{e}_axis", np.int64)],
                           f"expert{e}"))                                                    # (..., d, 1)
    stacked = ctx.op("Concat", outs, "experts", axis=-1)                                     # (..., d, E)
    logits = ctx.linear(x, "router.", "router", a.router_bias)                               # (..., E)
    w = ctx.op("Unsqueeze", [_dense_weights(ctx, logits, a), ctx.const([-1], "weights_axis", np.int64)],
               "weights")                                                                    # (..., E, 1)
    y = ctx.op("MatMul", [stacked, w], "mix")                                                # (..., d, 1)
    ctx.op("Squeeze", [y, ctx.const([-1], "mix_axis", np.int64)], final=True)               # (..., d)
