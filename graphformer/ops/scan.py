"""Scans: ops whose output at position t depends on a state carried from position t − 1 (recurrences).

`selective_scan` is Mamba's selective state-space scan (Gu & Dao 2023; transformers' MambaMixer, whose
`slow_forward`-style loop is the reference): per channel d of the sequence `x [B, L, D]`, an `N`-wide state

    h_t = exp(Δ_t · A) ⊙ h_{t−1} + Δ_t · B_t · x_t        (h_0 = 0, A = −exp(A_log), A_log [D, N])
    y_t = C_t · h_t + D ⊙ x_t                            (D [D])

with the step sizes Δ `[B, L, D]` and the input and output projections B, C `[B, L, N]` computed from the
tokens by ordinary ops (`linear`, `slice`, `activation: softplus`). The name is the paper's and mamba_ssm's
(`selective_scan_fn`); the parameters are named as transformers names them (`A_log`, `D`), so a weight map
renames them only. The state is zero at position 0 of a sequence.

Decoding: the `sequence` trait is RECURRENT and the `carry` trait declares the state a decoder step carries,
h [D, N] per sequence in float32 (transformers' `ssm_states`): the decoder plan gives the node a state slot
(decoding.py), and the torch lowering starts its loop from the slot's state and writes the last one back,
so a step over one new token costs one multiply-add, not a rerun of the prefix. Future scans (RWKV, RetNet)
join this family the same way.
"""
from __future__ import annotations

from pydantic import Field

from ..base.dims import Dim
from .base import (RECURRENT, UNPLANNED, Attrs, Carry, CarriedState, DimAttr, OpDef, Saved, ShapeError, TensorType,
                   dstr, expect_float, expect_rank, positive, register)
from .core import concrete

PORTS = ("x", "delta", "B", "C")


class SelectiveScanAttrs(Attrs):
    dim_fields = ("state",)
    state: DimAttr = Field(description="N: the state's width per channel (`state_size`, 16 in Mamba); B and C "
                                       "are N wide, `A_log` is [D, N]")


def _scan_shape(a: SelectiveScanAttrs, ins) -> TensorType:
    positive(a.state, "state")
    for port in PORTS:
        expect_rank(ins[port], port, 3, what=" ([B, L, width])")
        expect_float(ins[port], port)
    x = ins["x"]
    for port in PORTS[1:]:
        t = ins[port]
        for axis, what in ((0, "batch"), (1, "length")):
            if t.shape[axis] != x.shape[axis]:
                raise ShapeError("GF279", f"`{port}` {t} and `x` {x} differ in dimension {axis} ({what}): "
                                 f"{dstr(t.shape[axis])} vs {dstr(x.shape[axis])}", port,
                                 help="every input of a scan describes the same positions of the same "
                                      "sequences: [B, L, ·]")
    delta = ins["delta"]
    if delta.shape[2] != x.shape[2]:
        raise ShapeError("GF284", f"the step sizes `delta` {delta} are {dstr(delta.shape[2])} wide but `x` {x} "
                         f"has {dstr(x.shape[2])} channels", "delta",
                         help="Δ holds one step size per channel of x: project it to x's width (Mamba's "
                              "`dt_proj` maps dt_rank → the inner width)")
    for port in ("B", "C"):
        w = ins[port].shape[2]
        if w != Dim.const(a.state):
            raise ShapeError("GF285", f"`{port}` {ins[port]} is {dstr(w)} wide but the scan's state is "
                             f"`state: {a.state}`", port,
                             help=f"B and C map x into and out of the N = {a.state} wide state: slice them "
                                  "`state` wide (Mamba's x_proj gives dt_rank + 2·state)")
    return x


def _scan_params(a: SelectiveScanAttrs, ins) -> dict[str, tuple[int, ...]]:
    d = concrete(ins["x"].shape[2], "x", "the channel dimension")
    return {"A_log": (d, a.state), "D": (d,)}


def _scan_flops(a: SelectiveScanAttrs, ins, out) -> Dim:
    # per (batch, position, channel, state): Δ·A, its exp, Δ·B, ·x, the state's multiply and add, C·h's
    # multiply and add = 8; per (batch, position, channel): D·x and its add = 2; A = −exp(A_log) once: 2·D·N
    b, length, d = out.shape
    return 8 * b * length * d * a.state + 2 * b * length * d + 2 * d * a.state


def _scan_carry(a: SelectiveScanAttrs, ins) -> Carry:
    # along the token axis of every port ([B, L, ·]); the state in float32 whatever the model's dtype
    d = concrete(ins["x"].shape[2], "x", "the channel dimension")
    return Carry("x", 1, {"ssm": CarriedState((d, a.state), "float32")})


def _scan_saves(c) -> Saved:
    # the inputs, and per position the decayed factor, the input term and the state: three [B, L, D, N]
    return Saved(PORTS, 3 * c.bytes(c.out) * c.attrs.state)


register(OpDef(
    "selective_scan", "scan",
    "Mamba's selective state-space scan over `x [B, L, D]` with step sizes `delta [B, L, D]` and input and "
    "output projections `B`, `C [B, L, N]`: h_t = exp(Δ_t·A)·h_{t−1} + Δ_t·B_t·x_t from h_0 = 0, "
    "y_t = C_t·h_t + D·x_t, with A = −exp(A_log). Parameters `A_log [D, N]` and `D [D]` (transformers' "
    "MambaMixer names). Δ comes in as used: apply softplus (and dt_proj's bias) before. FLOPs "
    "8·B·L·D·N + 2·B·L·D + 2·D·N. A decoder step carries the state h [D, N] (float32) from the previous "
    "tokens (`generate`).",
    SelectiveScanAttrs, PORTS, _scan_shape, params=_scan_params, flops=_scan_flops,
    sequence=RECURRENT, carry=_scan_carry, tp=UNPLANNED, saves=_scan_saves,
    example="ssm: {op: selective_scan, in: {x: conv_act, delta: dt, B: b, C: c}, state: state}",
))
