"""The ONNX lowering of `rmsnorm_gated` (swish_beta has none: `export` refuses it, GF254). Emits standard
operators through graphformer's NodeEmitter; imported by the ONNX backend on its first lookup."""
import numpy as np

from graphformer.backends.onnx.lower import NodeEmitter, lowers


@lowers("rmsnorm_gated")
def _rmsnorm_gated(ctx: NodeEmitter, node) -> None:
    x, gate = ctx.inputs
    a, d = node.attrs, ctx.types["x"].shape[-1].value
    silu = ctx.op("Mul", [gate, ctx.op("Sigmoid", [gate], "gate_sigmoid")], "silu")
    h = ctx.op("Mul", [x, silu], "gated")
    # [.., d] → [.., groups, d // groups]: keep every leading axis (0), split the last
    lead = ctx.shape(h, 0, -1, "lead")
    grouped = ctx.op("Concat", [lead, ctx.const([a.groups, d // a.groups], "group_shape", np.int64)],
                     "grouped_shape", axis=0)
    g = ctx.op("Reshape", [h, grouped], "grouped")
    ms = ctx.reduce("ReduceMean", ctx.op("Mul", [g, g], "square"), [-1], "mean_square", keepdims=1)
    inv = ctx.op("Reciprocal", [ctx.op("Sqrt", [ctx.op("Add", [ms, ctx.const(a.eps, "eps", np.float32)], "eps")],
                                       "rms")], "inv_rms")
    back = ctx.op("Concat", [lead, ctx.const([d], "width", np.int64)], "flat_shape", axis=0)
    y = ctx.op("Reshape", [ctx.op("Mul", [g, inv], "normed"), back], "flat")
    ctx.op("Mul", [y, ctx.param("weight")], "scale", final=True)
