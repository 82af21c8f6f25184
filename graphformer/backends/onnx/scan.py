"""ONNX lowerings of the scans (graphformer/ops/scan.py): Mamba's selective scan as one ONNX `Scan`; RWKV-4's
token shift as Slice and Pad (or Concat with the past token) and its WKV recurrence as one `Scan` too.

The decay exp(Δ·A) and the input term Δ·B·x are computed for the whole sequence outside the loop, as the
torch lowering does; the `Scan` body carries the state h (`[B, D, N]`, or `[B, H, P, N]` with heads) and
does, per position, the multiply-add h = decay·h + drive and the read-out y = h·C (a MatMul over N, C
brought in as a column). The state starts at zeros sized from x at run time, so batch and length stay
dynamic; in a decoder step with past (past.py) it starts from the `past_states` input and the last one is
returned as `present_states`.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from .lower import NodeEmitter, lowers
from .past import carry_states, past_state_name

i64 = np.int64


@lowers("selective_scan")
def _selective_scan(ctx: NodeEmitter, node) -> None:
    x, delta, b, c = ctx.inputs
    a = node.attrs
    if a.delta_bias:
        delta = ctx.op("Add", [delta, ctx.param("dt_bias")], "delta_bias")
    if a.delta_softplus:
        delta = ctx.op("Softplus", [delta], "delta_softplus")
    a_neg = ctx.op("Neg", [ctx.op("Exp", [ctx.param("A_log")], "A")], "A_neg")               # (D, N) or (H,)
    terms = _heads_terms if a.scalars else _channel_terms
    decay, drive, c_col, y_shape, skip = terms(ctx, x, delta, b, c, a_neg)
    slot = ctx.state.past.state(node.name) if ctx.state.past is not None else None
    if slot is not None:                                                                      # carried
        h0 = past_state_name(slot.layer, "ssm")
    else:
        d = ctx.types["x"].shape[2].value
        dims = [a.heads, d // a.heads, a.state] if a.scalars else [d, a.state]
        size = ctx.op("Concat", [ctx.shape(x, 0, 1, "batch"), ctx.const(dims, "state_dims", i64)], "h0_shape", axis=0)
        h0 = ctx.op("ConstantOfShape", [size], "h0", value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.0]))
    name = ctx.state.unique(f"{ctx.path}/Scan")
    h_last, ys = ctx.state.unique(f"{name}_state"), ctx.state.unique(f"{name}_y")
    ctx.state.nodes.append(helper.make_node("Scan", [h0, decay, drive, c_col], [h_last, ys], name=name,
                                            body=_step_body(ctx, ctx.const([-1], "column_axis", i64)),
                                            num_scan_inputs=3, scan_input_axes=[1, 1, 1],
                                            scan_output_axes=[1]))
    if slot is not None:
        carry_states(ctx, slot, "ssm", h_last)
    y = ctx.op("Add", [ys, skip], "skip_add", final=not a.scalars)
    if a.scalars:
        ctx.op("Reshape", [y, y_shape], final=True)                                          # (B, L, D)


def _channel_terms(ctx: NodeEmitter, x, delta, b, c, a_neg):
    """Mamba: per channel, decay and drive (B, L, D, N), C as a column (B, L, N, 1), skip D·x (B, L, D)."""
    last = ctx.const([-1], "last", i64)
    dt = ctx.op("Unsqueeze", [delta, last], "delta")                                          # (B, L, D, 1)
    decay = ctx.op("Exp", [ctx.op("Mul", [dt, a_neg], "delta_A")], "decay")                   # (B, L, D, N)
    b_row = ctx.op("Unsqueeze", [b, ctx.const([2], "channel_axis", i64)], "B")                # (B, L, 1, N)
    drive = ctx.op("Mul", [ctx.op("Mul", [dt, b_row], "delta_B"), ctx.op("Unsqueeze", [x, last], "x")], "drive")
    c_col = ctx.op("Unsqueeze", [c, last], "C")                                               # (B, L, N, 1)
    return decay, drive, c_col, None, ctx.op("Mul", [x, ctx.param("D")], "skip")


def _heads_terms(ctx: NodeEmitter, x, delta, b, c, a_neg):
    """Mamba-2: per head, decay (B, L, H, 1, 1), drive (B, L, H, P, N), C as a column (B, L, H, N, 1) with
    each group's B and C repeated to its heads; skip D·x (B, L, H, P) and the shape x comes back to."""
    a = ctx.node.attrs
    heads, groups, n = a.heads, a.groups, a.state
    p = ctx.types["x"].shape[2].value // heads
    dt = ctx.op("Unsqueeze", [delta, ctx.const([3, 4], "head_axes", i64)], "delta")          # (B, L, H, 1, 1)
    decay = ctx.op("Exp", [ctx.op("Mul", [dt, ctx.op("Reshape", [a_neg, ctx.const([heads, 1, 1], "A_shape", i64)],
                                                                "A_heads")], "delta_A")], "decay")
    xh = ctx.op("Reshape", [x, ctx.const([0, 0, heads, p], "heads", i64)], "x_heads")       # (B, L, H, P)

    def per_head(t: str, tag: str, row: bool) -> str:                                        # group → its heads
        grouped = ctx.op("Reshape", [t, ctx.const([0, 0, groups, 1, 1, n], f"{tag}_groups", i64)], f"{tag}_groups")
        wide = ctx.op("Expand", [grouped, ctx.const([1, 1, 1, heads // groups, 1, 1], f"{tag}_fan", i64)],
                      f"{tag}_fan")
        return ctx.op("Reshape", [wide, ctx.const([0, 0, heads, 1, n] if row else [0, 0, heads, n, 1],
                                                  f"{tag}_heads", i64)], f"{tag}_heads")
    x_col = ctx.op("Unsqueeze", [xh, ctx.const([-1], "last", i64)], "x")                    # (B, L, H, P, 1)
    drive = ctx.op("Mul", [ctx.op("Mul", [dt, per_head(b, "B", True)], "delta_B"), x_col], "drive")
    skip = ctx.op("Mul", [xh, ctx.op("Unsqueeze", [ctx.param("D"), ctx.const([1], "D_axis", i64)], "D")], "skip")
    return decay, drive, per_head(c, "C", False), ctx.op("Shape", [x], "x_shape"), skip


def _step_body(ctx: NodeEmitter, column_axis: str):
    """One position: (h, decay_t, drive_t, C_t as a column) → (h' = decay_t·h + drive_t, y_t = h'·C_t with
    the column axis squeezed). Value names are unique in the whole model (a subgraph may not shadow an outer
    name); `column_axis` is a constant of the outer graph, which the body reads."""
    v = {k: ctx.state.unique(f"{ctx.path}/step_{k}") for k in ("h", "decay", "drive", "C", "h_next", "y_col", "y")}
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Mul", [v["decay"], v["h"]], [v["h"] + "_decayed"], name=v["h"] + "/Mul"),
        helper.make_node("Add", [v["h"] + "_decayed", v["drive"]], [v["h_next"]], name=v["h_next"] + "/Add"),
        helper.make_node("MatMul", [v["h_next"], v["C"]], [v["y_col"]], name=v["y_col"] + "/MatMul"),
        helper.make_node("Squeeze", [v["y_col"], column_axis], [v["y"]], name=v["y"] + "/Squeeze"),
    ]
    ctx.state.names.add(v["h"] + "_decayed")
    a, x = ctx.node.attrs, ctx.types["x"].shape
    batch, d, n = (str(x[0]) if not x[0].is_const else x[0].value), x[2].value, a.state
    if a.scalars:
        h, p = a.heads, d // a.heads
        state, shapes = [batch, h, p, n], {"decay": [batch, h, 1, 1], "C": [batch, h, n, 1], "y": [batch, h, p]}
    else:
        state, shapes = [batch, d, n], {"decay": [batch, d, n], "C": [batch, n, 1], "y": [batch, d]}
    shapes.update(h=state, drive=state, h_next=state)                 # typed, so ONNX infers the Scan's outputs
    inputs = [helper.make_tensor_value_info(v[k], f32, shapes[k]) for k in ("h", "decay", "drive", "C")]
    outputs = [helper.make_tensor_value_info(v[k], f32, shapes[k]) for k in ("h_next", "y")]
    return helper.make_graph(nodes, f"{ctx.path}/step", inputs, outputs)


# ---------------------------------------------------------------- RWKV: token_shift and wkv

EMPTY_MAX = -1e38     # the running maximum of a state that has seen no position (torch's WKV.EMPTY_MAX)


@lowers("token_shift")
def _token_shift(ctx: NodeEmitter, node) -> None:
    """x[:, :-1] after a zero row (Pad), or after the carried last vector in a decoder step, reshaped to x's
    shape; with `mix`, x·μ + shifted·(1 − μ) as torch computes it."""
    (x,) = ctx.inputs
    big = np.iinfo(i64).max
    axis = ctx.const([1], "time_axis", i64)
    head = ctx.op("Slice", [x, ctx.const([0], "start", i64), ctx.const([-1], "stop", i64), axis], "previous")
    slot = ctx.state.past.state(node.name) if ctx.state.past is not None else None
    final = not node.attrs.mix
    if slot is None:
        joined = ctx.op("Pad", [head, ctx.const([0, 1, 0, 0, 0, 0], "pads", i64)], "zero_first")
    else:
        last = ctx.op("Slice", [x, ctx.const([-1], "last", i64), ctx.const([big], "end", i64), axis], "last")
        carry_states(ctx, slot, "last", ctx.op("Squeeze", [last, axis], "present_last"))
        past = ctx.op("Unsqueeze", [past_state_name(slot.layer, "last"), axis], "past_last")
        joined = ctx.op("Concat", [past, head], "past_first", axis=1)
    # x's own shape: ONNX's shape inference loses the length through Slice and Pad, and gets it back here
    shifted = ctx.op("Reshape", [joined, ctx.op("Shape", [x], "x_shape")], "shifted", final=final)
    if node.attrs.mix:
        mix = ctx.param("mix")
        rest = ctx.op("Sub", [ctx.const(np.ones(1, np.float32), "one"), mix], "one_minus_mix")
        ctx.op("Add", [ctx.op("Mul", [x, mix], "x_mix"), ctx.op("Mul", [shifted, rest], "shifted_mix")], final=True)


@lowers("wkv")
def _wkv(ctx: NodeEmitter, node) -> None:
    """One `Scan` over the positions carrying (num, den, max) [B, D] in float32, its body the reference's step
    (the output's maximum and ratio, then the state's); w = −exp(time_decay) and u = time_first come from the
    outer graph. The state starts empty (zeros, the maximum −1e38) or, in a decoder step with past, from the
    `past_states` inputs, an all-zero den marking an empty one."""
    k, v = ctx.inputs
    w = ctx.op("Neg", [ctx.op("Exp", [ctx.param("time_decay")], "decay")], "w")
    u = ctx.param("time_first")
    slot = ctx.state.past.state(node.name) if ctx.state.past is not None else None
    empty = ctx.const(np.full(1, EMPTY_MAX, np.float32), "empty_max")
    if slot is not None:
        num, den, top = (past_state_name(slot.layer, s) for s in ("num", "den", "max"))
        unseen = ctx.op("Equal", [den, ctx.const(np.zeros(1, np.float32), "zero")], "unseen")
        top = ctx.op("Where", [unseen, empty, top], "max0")
    else:
        size = ctx.op("Concat", [ctx.shape(k, 0, 1, "batch"), ctx.shape(k, 2, 3, "channels")], "state_shape", axis=0)
        num = den = ctx.op("ConstantOfShape", [size], "zeros", value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.0]))
        top = ctx.op("ConstantOfShape", [size], "max0", value=helper.make_tensor("", TensorProto.FLOAT, [1], [EMPTY_MAX]))
    name = ctx.state.unique(f"{ctx.path}/Scan")
    outs = [ctx.state.unique(f"{name}_{s}") for s in ("num", "den", "max")]
    ctx.state.nodes.append(helper.make_node("Scan", [num, den, top, k, v], outs + [ctx.out], name=name,
                                            body=_wkv_body(ctx, w, u), num_scan_inputs=2, scan_input_axes=[1, 1],
                                            scan_output_axes=[1]))
    ctx.produced_out = True
    if slot is not None:
        for s, last in zip(("num", "den", "max"), outs):
            carry_states(ctx, slot, s, last)


def _wkv_body(ctx: NodeEmitter, w: str, u: str):
    """One position: (num, den, max, k_t, v_t) → (num', den', max', wkv_t), as torch's WKV.forward."""
    v = {s: ctx.state.unique(f"{ctx.path}/step_{s}") for s in ("num", "den", "max", "k", "v", "num2", "den2",
                                                                  "max2", "y")}
    nodes = []

    def op(op_type, inputs, tag):
        out = ctx.state.unique(f"{ctx.path}/step_{tag}")
        nodes.append(helper.make_node(op_type, inputs, [out], name=out + f"/{op_type}"))
        return out

    def into(op_type, inputs, out):
        nodes.append(helper.make_node(op_type, inputs, [out], name=out + f"/{op_type}"))

    ku = op("Add", [v["k"], u], "k_first")
    peak = op("Max", [v["max"], ku], "peak")
    e1 = op("Exp", [op("Sub", [v["max"], peak], "gap_state")], "e1")
    e2 = op("Exp", [op("Sub", [ku, peak], "gap_key")], "e2")
    numer = op("Add", [op("Mul", [e1, v["num"]], "e1_num"), op("Mul", [e2, v["v"]], "e2_v")], "numerator")
    denom = op("Add", [op("Mul", [e1, v["den"]], "e1_den"), e2], "denominator")
    into("Div", [numer, denom], v["y"])
    decayed = op("Add", [v["max"], w], "decayed")
    into("Max", [decayed, v["k"]], v["max2"])
    f1 = op("Exp", [op("Sub", [decayed, v["max2"]], "gap_decayed")], "f1")
    f2 = op("Exp", [op("Sub", [v["k"], v["max2"]], "gap_key2")], "f2")
    into("Add", [op("Mul", [f1, v["num"]], "f1_num"), op("Mul", [f2, v["v"]], "f2_v")], v["num2"])
    into("Add", [op("Mul", [f1, v["den"]], "f1_den"), f2], v["den2"])
    k = ctx.types["k"].shape
    shape = [str(k[0]) if not k[0].is_const else k[0].value, k[2].value]
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(v[s], f32, shape) for s in ("num", "den", "max", "k", "v")]
    outputs = [helper.make_tensor_value_info(v[s], f32, shape) for s in ("num2", "den2", "max2", "y")]
    return helper.make_graph(nodes, f"{ctx.path}/step", inputs, outputs)
