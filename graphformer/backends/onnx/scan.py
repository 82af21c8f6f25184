"""ONNX lowerings of the scans (graphformer/ops/scan.py): Mamba's selective scan as one ONNX `Scan`.

The decay exp(Δ·A) and the input term Δ·B·x are computed for the whole sequence outside the loop, as the
torch lowering does; the `Scan` body carries the state h `[B, D, N]` and does, per position, the
multiply-add h = decay·h + drive and the read-out y = h·C (a MatMul over N). The state starts at zeros
sized from x at run time, so batch and length stay dynamic; in a decoder step with past (past.py) it starts
from the `past_states` input and the last one is returned as `present_states`.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .lower import NodeEmitter, lowers
from .past import carry_states, past_state_name


@lowers("selective_scan")
def _selective_scan(ctx: NodeEmitter, node) -> None:
    x, delta, b, c = ctx.inputs
    i64 = np.int64
    a = ctx.op("Neg", [ctx.op("Exp", [ctx.param("A_log")], "A")], "A_neg")                   # (D, N)
    last = ctx.const([-1], "last", i64)
    dt = ctx.op("Unsqueeze", [delta, last], "delta")                                          # (B, L, D, 1)
    decay = ctx.op("Exp", [ctx.op("Mul", [dt, a], "delta_A")], "decay")                       # (B, L, D, N)
    b_row = ctx.op("Unsqueeze", [b, ctx.const([2], "channel_axis", i64)], "B")                # (B, L, 1, N)
    drive = ctx.op("Mul", [ctx.op("Mul", [dt, b_row], "delta_B"), ctx.op("Unsqueeze", [x, last], "x")], "drive")
    slot = ctx.state.past.state(node.name) if ctx.state.past is not None else None
    if slot is not None:                                                                      # carried
        h0 = past_state_name(slot.layer, "ssm")
    else:
        size = ctx.op("Concat", [ctx.shape(x, 0, 1, "batch"), ctx.shape(x, 2, 3, "channels"),
                                 ctx.const([node.attrs.state], "state", i64)], "h0_shape", axis=0)
        h0 = ctx.op("ConstantOfShape", [size], "h0", value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.0]))
    body = _step_body(ctx, ctx.const([2], "column_axis", i64))
    name = ctx.state.unique(f"{ctx.path}/Scan")
    h_last, ys = ctx.state.unique(f"{name}_state"), ctx.state.unique(f"{name}_y")
    ctx.state.nodes.append(helper.make_node("Scan", [h0, decay, drive, c], [h_last, ys], name=name, body=body,
                                            num_scan_inputs=3, scan_input_axes=[1, 1, 1],
                                            scan_output_axes=[1]))                            # ys: (B, L, D)
    if slot is not None:
        carry_states(ctx, slot, "ssm", h_last)
    ctx.op("Add", [ys, ctx.op("Mul", [x, ctx.param("D")], "skip")], final=True)


def _step_body(ctx: NodeEmitter, column_axis: str):
    """One position: (h [B, D, N], decay_t, drive_t [B, D, N], C_t [B, N]) → (h', y_t = h'·C_t [B, D]).
    Value names are unique in the whole model (a subgraph may not shadow an outer name); `column_axis` is a
    constant of the outer graph, which the body reads."""
    v = {k: ctx.state.unique(f"{ctx.path}/step_{k}") for k in ("h", "decay", "drive", "C", "h_next", "c_col",
                                                              "y_col", "y")}
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Mul", [v["decay"], v["h"]], [v["h"] + "_decayed"], name=v["h"] + "/Mul"),
        helper.make_node("Add", [v["h"] + "_decayed", v["drive"]], [v["h_next"]], name=v["h_next"] + "/Add"),
        helper.make_node("Unsqueeze", [v["C"], column_axis], [v["c_col"]], name=v["c_col"] + "/Unsqueeze"),
        helper.make_node("MatMul", [v["h_next"], v["c_col"]], [v["y_col"]], name=v["y_col"] + "/MatMul"),
        helper.make_node("Squeeze", [v["y_col"], column_axis], [v["y"]], name=v["y"] + "/Squeeze"),
    ]
    ctx.state.names.add(v["h"] + "_decayed")
    x = ctx.types["x"].shape
    batch, d, n = (str(x[0]) if not x[0].is_const else x[0].value), x[2].value, ctx.node.attrs.state
    shapes = {"h": [batch, d, n], "decay": [batch, d, n], "drive": [batch, d, n], "C": [batch, n],
              "h_next": [batch, d, n], "y": [batch, d]}                 # typed, so ONNX infers the Scan's outputs
    inputs = [helper.make_tensor_value_info(v[k], f32, shapes[k]) for k in ("h", "decay", "drive", "C")]
    outputs = [helper.make_tensor_value_info(v[k], f32, shapes[k]) for k in ("h_next", "y")]
    return helper.make_graph(nodes, f"{ctx.path}/step", inputs, outputs)
