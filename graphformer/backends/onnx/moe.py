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
    into zeros (torch's MoE.route: scores (softmax or sigmoid), any selection bias and group limit choosing
    the top k, their unbiased scores renormalised; or top-k logits → softmax)."""
    k = ctx.const([a.top_k], "top_k", np.int64)
    if a.router == "topk_softmax":
        top, idx = _top_k(ctx, logits, k)
        top = ctx.op("Softmax", [top], "router", axis=-1)
    else:
        scores = ctx.op("Softmax" if a.router == "softmax_topk" else "Sigmoid", [logits], "router",
                        **({"axis": -1} if a.router == "softmax_topk" else {}))
        choice = ctx.op("Add", [scores, ctx.param("selection_bias")], "selection_bias") if a.selection_bias \
            else scores
        if a.groups is not None and a.top_groups < a.groups:   # all groups kept: plain top-k
            choice = _group_limited(ctx, choice, a)
        _, idx = _top_k(ctx, choice, k)
        top = ctx.op("GatherElements", [scores, idx], "router", axis=-1)           # the unbiased scores
        if a.normalize:
            total = ctx.reduce("ReduceSum", top, [-1], "renormalise", keepdims=1)
            if a.router == "sigmoid_topk":   # as torch's MoE.route: sigmoid scores may all be ~0
                total = ctx.op("Add", [total, ctx.const(1e-20, "renormalise_eps", np.float32)], "renormalise")
            top = ctx.op("Div", [top, total], "renormalise")
    if a.routed_scale != 1.0:
        top = ctx.op("Mul", [top, ctx.const(a.routed_scale, "routed_scale", np.float32)], "routed_scale")
    zeros = ctx.op("ConstantOfShape", [ctx.op("Shape", [logits], "router")], "router",
                   value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.0]))
    return ctx.op("ScatterElements", [zeros, idx, top], "router", axis=-1)                 # (..., E)


def _group_limited(ctx: NodeEmitter, scores: str, a) -> str:
    """torch's MoE.group_limited: experts outside the `top_groups` groups ranked best (by their best expert,
    or the sum of their best two) get -inf."""
    shape = [-1, a.groups, a.experts // a.groups]
    grouped = ctx.op("Reshape", [scores, ctx.const(shape, "groups", np.int64)], "groups")    # (T, G, E/G)
    if a.group_score == "max":
        rank = ctx.reduce("ReduceMax", grouped, [-1], "group_score", keepdims=0)            # (T, G)
    else:
        best2, _ = _top_k(ctx, grouped, ctx.const([2], "group_top2", np.int64))
        rank = ctx.reduce("ReduceSum", best2, [-1], "group_score", keepdims=0)              # (T, G)
    _, idx = _top_k(ctx, rank, ctx.const([a.top_groups], "top_groups", np.int64))
    value = lambda v: helper.make_tensor("", TensorProto.FLOAT, [1], [v])  # noqa: E731
    ones = ctx.op("ConstantOfShape", [ctx.op("Shape", [idx], "keep")], "keep", value=value(1.0))
    zeros = ctx.op("ConstantOfShape", [ctx.op("Shape", [rank], "keep")], "keep", value=value(0.0))
    keep = ctx.op("ScatterElements", [zeros, idx, ones], "keep", axis=-1)                  # (T, G)
    keep = ctx.op("Cast", [ctx.op("Unsqueeze", [keep, ctx.const([-1], "keep_axis", np.int64)], "keep")],
                  "keep", to=TensorProto.BOOL)                                              # (T, G, 1)
    kept = ctx.op("Where", [keep, grouped, ctx.const(float("-inf"), "dropped", np.float32)], "kept")
    return ctx.op("Reshape", [kept, ctx.op("Shape", [scores], "scores_shape")], "group_limited")


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
