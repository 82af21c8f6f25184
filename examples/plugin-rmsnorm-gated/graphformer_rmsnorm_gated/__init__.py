"""A graphformer plugin (docs/plugins.md): two ops the spec language lacks.

- `rmsnorm_gated`: Mamba-2's gated RMSNorm, weight · n(x · silu(gate)), the RMS taken over `groups` equal
  slices of the last axis. Everything declared: traits, a torch lowering and an ONNX lowering.
- `swish_beta`: x · sigmoid(beta · x), with a torch lowering only and its `sequence`/`tp` traits left
  undeclared, so `export`, `generate` and `parallelize` refuse it (GF254, GF255, GF256).

This module is what graphformer imports to read the ops: it must not import torch or onnx (`check` runs
without them). The lowerings live in `torch_lowering.py` and `onnx_lowering.py`, imported by the backend
that needs them.
"""
from pydantic import Field

from graphformer.ops.base import (POSITION, UNPLANNED, Attrs, DimAttr, OpDef, PluginOpDef, ShapeError,
                                  expect_float, keeps, numel, same_shape)
from graphformer.ops.plugins import Plugin


class RMSNormGatedAttrs(Attrs):
    eps: float = Field(1e-6, gt=0, description="added to the mean square before the square root")
    groups: DimAttr = Field(1, description="the last axis is normalised in this many equal slices (Mamba-2's "
                                           "`n_groups`); an expression over params")
    dim_fields = ("groups",)


def _rmsnorm_gated_shape(a: RMSNormGatedAttrs, ins):
    x = same_shape(ins, ["x", "gate"])
    expect_float(x, "x")
    d = x.shape[-1]
    if a.groups <= 0:
        raise ShapeError("GF102", f"`groups` must be positive, got {a.groups}", attr="groups")
    if not d.is_const or d.value % a.groups:
        raise ShapeError("GF123", f"the last axis of `x` ({d}) does not split into {a.groups} groups", "x",
                         help="`groups` must divide the width", attr="groups")
    return x


RMSNORM_GATED = OpDef(
    "rmsnorm_gated", "core",
    "Gated RMSNorm (Mamba-2): weight · (x · silu(gate)) / sqrt(mean((x · silu(gate))²) + eps), the mean taken "
    "over each of `groups` slices of the last axis.",
    RMSNormGatedAttrs, ("x", "gate"), _rmsnorm_gated_shape,
    params=lambda a, ins: {"weight": (ins["x"].shape[-1].value,)},
    flops=lambda a, ins, out: numel(out.shape) * 8,   # silu (4), product, square, scale, weight
    example="norm: {op: rmsnorm_gated, in: {x: y, gate: z}, groups: 8}",
    sequence=POSITION, tp=UNPLANNED, saves=keeps("x", "gate"))


class SwishBetaAttrs(Attrs):
    beta: float = Field(1.0, description="the slope inside the sigmoid (1: SiLU)")


SWISH_BETA = PluginOpDef(
    "swish_beta", "core", "x · sigmoid(beta · x). Its traits are left undeclared on purpose (docs/plugins.md).",
    SwishBetaAttrs, ("x",), lambda a, ins: same_shape(ins, ["x"]),
    flops=lambda a, ins, out: numel(out.shape) * 5, example="act: {op: swish_beta, beta: 1.702}")


PLUGIN = Plugin(ops=(RMSNORM_GATED, SWISH_BETA), torch="graphformer_rmsnorm_gated.torch_lowering",
                onnx="graphformer_rmsnorm_gated.onnx_lowering")
