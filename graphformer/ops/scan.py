"""Scans: ops whose output at position t depends on a state carried from position t − 1 (recurrences).

`selective_scan` is Mamba's selective state-space scan (Gu & Dao 2023; transformers' MambaMixer, whose
`slow_forward`-style loop is the reference): per channel d of the sequence `x [B, L, D]`, an `N`-wide state

    h_t = exp(Δ_t · A) ⊙ h_{t−1} + Δ_t · B_t · x_t        (h_0 = 0, A = −exp(A_log), A_log [D, N])
    y_t = C_t · h_t + D ⊙ x_t                            (D [D])

with the step sizes Δ `[B, L, D]` and the input and output projections B, C `[B, L, N]` computed from the
tokens by ordinary ops (`linear`, `slice`, `activation: softplus`).

Mamba-2 (transformers' Mamba2Mixer; mamba_ssm's `mamba_chunk_scan_combined`) is the `heads` form: the D
channels are H heads of P = D / H channels, and A, Δ and D are scalars per head (A_log, D `[H]`, Δ
`[B, L, H]`); B and C `[B, L, G·N]` hold one N-wide projection per group of H / G heads (`groups`: n_groups).
Per head h, with state h_t `[P, N]`,

    h_t = exp(Δ_t · A) · h_{t−1} + Δ_t · x_t ⊗ B_t        y_t = h_t · C_t + D · x_t

It is not the per-channel form with A and Δ tiled: that form's A_log is [D, N] (D·N parameters where Mamba-2
has H), and its B and C are shared by all channels, not by a group's heads. `delta_bias` (a learned `dt_bias`)
and `delta_softplus` apply softplus(Δ + dt_bias) inside the op, as mamba_ssm's kernels take them
(`dt_bias`, `dt_softplus`): Mamba-2 has no projection whose bias could hold dt_bias. The torch lowering
runs a sequence of the heads form in blocks (the chunked SSD form), a one-token step as the recurrence. The name is the paper's and mamba_ssm's
(`selective_scan_fn`); the parameters are named as transformers names them (`A_log`, `D`), so a weight map
renames them only. The state is zero at position 0 of a sequence.

Decoding: the `sequence` trait is RECURRENT and the `carry` trait declares the state a decoder step carries,
h [D, N] per sequence in float32 (transformers' `ssm_states`): the decoder plan gives the node a state slot
(decoding.py), and the torch lowering starts its loop from the slot's state and writes the last one back,
so a step over one new token costs one multiply-add, not a rerun of the prefix.

RWKV-4 (Peng et al. 2023; transformers' RwkvSelfAttention and RwkvFeedForward) is two ops of this family:

- `token_shift`: the previous position's vector, x_{t−1} (zero before position 0): RWKV's time shift
  (`nn.ZeroPad2d((0, 0, 1, −1))`). With `mix`, the interpolation RWKV feeds its projections,
  x_t·μ + x_{t−1}·(1 − μ) with a learned `mix [D]` (time_mix_key, ...), computed as the reference writes it.
  A decoder step carries the last token it saw ([D], the model's dtype).
- `wkv`: the weighted key-value recurrence over keys and values `k, v [B, L, D]` with a learned decay w =
  −exp(time_decay) and a bonus u = time_first for the current token, per channel:

      wkv_t = (Σ_{s<t} e^{(t−1−s)·w + k_s} v_s + e^{u + k_t} v_t) / (Σ_{s<t} e^{(t−1−s)·w + k_s} + e^{u + k_t})

  computed as transformers' `rwkv_linear_attention_cpu` does, in float32 with a running maximum for
  stability: the state is (num, den, max) per channel, num and den scaled by e^{−max}. A decoder step
  carries the three [D] states in float32. Like every carried state they start at zero; den is ≥ 1 after
  any position, so den = 0 marks an empty state, whose max reads as −1e38 (the reference's start).
"""
from __future__ import annotations

from pydantic import Field

from ..base.dims import Dim
from .base import (RECURRENT, UNPLANNED, Attrs, Carry, CarriedState, DimAttr, OpDef, Saved, ShapeError, TensorType,
                   dstr, expect_float, expect_rank, NoAttrs, numel, positive, register)
from .core import concrete

PORTS = ("x", "delta", "B", "C")


class SelectiveScanAttrs(Attrs):
    dim_fields = ("state", "heads", "groups")
    state: DimAttr = Field(description="N: the state's width per channel (`state_size`, 16 in Mamba); B and C "
                                       "are N wide, `A_log` is [D, N]")
    heads: DimAttr | None = Field(None, description="Mamba-2: H heads of D / H channels, with A, Δ and D one "
                                                    "scalar per head (A_log, D [H]; delta [B, L, H]); the state "
                                                    "is [H, D / H, N]")
    groups: DimAttr = Field(1, description="with `heads`: B and C hold one N-wide projection per group of "
                                           "heads ([B, L, groups · N]; Mamba-2's n_groups); must divide heads")
    delta_bias: bool = Field(False, description="add a learned `dt_bias` (one per head, or per channel) to Δ "
                                                "first (Mamba-2's dt_bias)")
    delta_softplus: bool = Field(False, description="apply softplus to Δ (after `delta_bias`) inside the scan")

    @property
    def scalars(self) -> bool:
        """Mamba-2's form: A, Δ, D one scalar per head."""
        return self.heads is not None


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
    d = x.shape[2]
    if a.scalars:
        _heads_fit(a, x)
    elif a.groups != 1:
        raise ShapeError("GF300", f"`groups: {a.groups}` needs `heads`: B and C are shared by groups of heads",
                         attr="groups", help="give `heads` (Mamba-2's num_heads), or drop `groups`")
    delta = ins["delta"]
    width = Dim.const(a.heads) if a.scalars else d
    if delta.shape[2] != width:
        what = f"`heads: {a.heads}`" if a.scalars else f"`x` {x} has {dstr(d)} channels"
        raise ShapeError("GF284", f"the step sizes `delta` {delta} are {dstr(delta.shape[2])} wide but {what}",
                         "delta",
                         help="Δ holds one step size per head (Mamba-2: in_proj's last num_heads columns)"
                              if a.scalars else
                              "Δ holds one step size per channel of x: project it to x's width (Mamba's "
                              "`dt_proj` maps dt_rank → the inner width)")
    for port in ("B", "C"):
        w = ins[port].shape[2]
        if w != Dim.const(a.groups * a.state):
            per = f"`groups: {a.groups}` × `state: {a.state}`" if a.groups != 1 else f"`state: {a.state}`"
            raise ShapeError("GF285", f"`{port}` {ins[port]} is {dstr(w)} wide but the scan's state is {per}",
                             port,
                             help=f"B and C map x into and out of the N = {a.state} wide state (one per group "
                                  "of heads): slice them groups · state wide" if a.groups != 1 else
                                  f"B and C map x into and out of the N = {a.state} wide state: slice them "
                                  "`state` wide (Mamba's x_proj gives dt_rank + 2·state)")
    return x


def _heads_fit(a: SelectiveScanAttrs, x: TensorType) -> None:
    """GF300 unless the heads split x's channels evenly and the groups split the heads."""
    positive(a.heads, "heads")
    positive(a.groups, "groups")
    d = x.shape[2]
    if d.is_const and d.value % a.heads:
        raise ShapeError("GF300", f"`heads: {a.heads}` does not divide the {d.value} channels of `x` {x}", "x",
                         attr="heads", help="each head scans D / heads channels (Mamba-2: intermediate_size = "
                                            "num_heads · head_dim)")
    if a.heads % a.groups:
        raise ShapeError("GF300", f"`groups: {a.groups}` does not divide `heads: {a.heads}`", attr="groups",
                         help="each group's B and C serve heads / groups heads (Mamba-2's n_groups divides "
                              "num_heads)")


def _scan_params(a: SelectiveScanAttrs, ins) -> dict[str, tuple[int, ...]]:
    d = concrete(ins["x"].shape[2], "x", "the channel dimension")
    per = (a.heads,) if a.scalars else (d,)
    shapes = {"A_log": per if a.scalars else (d, a.state), "D": per}
    return {**shapes, "dt_bias": per} if a.delta_bias else shapes


def _scan_flops(a: SelectiveScanAttrs, ins, out) -> Dim:
    # per (batch, position, channel, state): Δ·A, its exp, Δ·B, ·x, the state's multiply and add, C·h's
    # multiply and add = 8; per (batch, position, channel): D·x and its add = 2; A = −exp(A_log) once: 2·D·N
    b, length, d = out.shape
    delta = (int(a.delta_bias) + 4 * int(a.delta_softplus)) * b * length * (a.heads if a.scalars else d)
    if a.scalars:
        # per (batch, position, head): Δ·A and its exp = 2; per (batch, position, channel, state): Δ·x, ·B,
        # the state's multiply and add, C·h's multiply and add = 6; D·x and its add = 2 per channel
        return 6 * b * length * d * a.state + 2 * b * length * a.heads + 2 * b * length * d + 2 * a.heads + delta
    return 8 * b * length * d * a.state + 2 * b * length * d + 2 * d * a.state + delta


def _scan_carry(a: SelectiveScanAttrs, ins) -> Carry:
    # along the token axis of every port ([B, L, ·]); the state in float32 whatever the model's dtype
    d = concrete(ins["x"].shape[2], "x", "the channel dimension")
    shape = (a.heads, d // a.heads, a.state) if a.scalars else (d, a.state)     # heads: transformers' layout
    return Carry("x", 1, {"ssm": CarriedState(shape, "float32")})


def _scan_saves(c) -> Saved:
    # the inputs, and per position the decayed factor, the input term and the state: three [B, L, D, N]
    # (heads: the decay is per head, so two)
    return Saved(PORTS, (2 if c.attrs.scalars else 3) * c.bytes(c.out) * c.attrs.state)


register(OpDef(
    "selective_scan", "scan",
    "Mamba's selective state-space scan over `x [B, L, D]` with step sizes `delta [B, L, D]` and input and "
    "output projections `B`, `C [B, L, N]`: h_t = exp(Δ_t·A)·h_{t−1} + Δ_t·B_t·x_t from h_0 = 0, "
    "y_t = C_t·h_t + D·x_t, with A = −exp(A_log). Parameters `A_log [D, N]` and `D [D]` (transformers' "
    "MambaMixer names). Δ comes in as used: apply softplus (and dt_proj's bias) before, or set "
    "`delta_bias` (a learned `dt_bias`) and `delta_softplus`. FLOPs 8·B·L·D·N + 2·B·L·D + 2·D·N. "
    "Mamba-2's form: `heads: H` makes A_log, D [H] and delta [B, L, H] one scalar per head of D / H "
    "channels, and B, C [B, L, groups·N] one projection per group of heads (FLOPs 6·B·L·D·N + 2·B·L·H + "
    "2·B·L·D + 2·H). A decoder step carries the state h [D, N] ([H, D / H, N] with heads; float32) from "
    "the previous tokens (`generate`).",
    SelectiveScanAttrs, PORTS, _scan_shape, params=_scan_params, flops=_scan_flops,
    sequence=RECURRENT, carry=_scan_carry, tp=UNPLANNED, saves=_scan_saves,
    example="ssm: {op: selective_scan, in: {x: conv_act, delta: dt, B: b, C: c}, state: state}",
))


# ---------------------------------------------------------------- token_shift (RWKV's time shift)

class TokenShiftAttrs(Attrs):
    mix: bool = Field(False, description="return x_t·μ + x_{t−1}·(1 − μ) with a learned `mix [D]` instead of "
                                         "x_{t−1} alone (RWKV's time-mix: time_mix_key, time_mix_value, ...)")


def _shift_shape(a: TokenShiftAttrs, ins) -> TensorType:
    x = ins["x"]
    expect_rank(x, "x", 3, what=" ([B, L, D]: the shift runs along L)")
    expect_float(x, "x")
    return x


def _shift_params(a: TokenShiftAttrs, ins) -> dict[str, tuple[int, ...]]:
    return {"mix": (concrete(ins["x"].shape[2], "x", "the channel dimension"),)} if a.mix else {}


def _shift_carry(a: TokenShiftAttrs, ins) -> Carry:
    # the last position's vector, in the model's dtype (transformers' state[0] / state[1])
    return Carry("x", 1, {"last": CarriedState((concrete(ins["x"].shape[2], "x", "the channel dimension"),))})


register(OpDef(
    "token_shift", "scan",
    "The previous position's vector along the sequence of `x [B, L, D]`: out_t = x_{t−1}, zero at t = 0 (RWKV's "
    "time shift). With `mix: true`, RWKV's time-mix x_t·μ + x_{t−1}·(1 − μ) with a learned `mix [D]` (computed "
    "as transformers does; FLOPs 3·B·L·D + D). A decoder step carries the last position's vector (`generate`, "
    "`export --with-past`).",
    TokenShiftAttrs, ("x",), _shift_shape, params=_shift_params,
    flops=lambda a, ins, out: (3 * numel(out.shape) + out.shape[2]) if a.mix else Dim.const(0),
    sequence=RECURRENT, carry=_shift_carry, tp=UNPLANNED, saves=lambda c: Saved(("x",) if c.attrs.mix else ()),
    example="k_in: {op: token_shift, in: ln1, mix: true}",
))


# ---------------------------------------------------------------- wkv (RWKV-4's recurrence)

WKV_PORTS = ("k", "v")


def _wkv_shape(a, ins) -> TensorType:
    for port in WKV_PORTS:
        expect_rank(ins[port], port, 3, what=" ([B, L, D])")
        expect_float(ins[port], port)
    k, v = ins["k"], ins["v"]
    if k.shape != v.shape:
        raise ShapeError("GF310", f"the keys `k` {k} and values `v` {v} differ in shape: `wkv` pairs each key with "
                         "its value, channel by channel", "v",
                         help="project both to the same width (RWKV: `key` and `value` are both attention_hidden_size "
                              "wide)")
    return v


def _wkv_params(a, ins) -> dict[str, tuple[int, ...]]:
    d = concrete(ins["k"].shape[2], "k", "the channel dimension")
    return {"time_decay": (d,), "time_first": (d,)}


def _wkv_flops(a, ins, out) -> Dim:
    # per (batch, position, channel): the output's max, two subtractions, two exps, four multiply-adds and the
    # division (11); the state's max, add, two subtractions, two exps, four multiply-adds (10); w = −exp(decay): 2·D
    b, length, d = out.shape
    return 21 * b * length * d + 2 * d


def _wkv_carry(a, ins) -> Carry:
    d = concrete(ins["k"].shape[2], "k", "the channel dimension")
    return Carry("k", 1, {name: CarriedState((d,), "float32") for name in ("num", "den", "max")})


register(OpDef(
    "wkv", "scan",
    "RWKV-4's weighted key-value recurrence over keys and values `k, v [B, L, D]`, per channel, with decay "
    "w = −exp(time_decay) and the current token's bonus u = time_first (parameters `time_decay [D]`, "
    "`time_first [D]`, transformers' names): wkv_t = (Σ_{s<t} e^{(t−1−s)w + k_s} v_s + e^{u + k_t} v_t) / "
    "(Σ_{s<t} e^{(t−1−s)w + k_s} + e^{u + k_t}), computed in float32 with a running maximum as transformers' "
    "rwkv_linear_attention_cpu does. FLOPs 21·B·L·D + 2·D. A decoder step carries the state (num, den, max), "
    "three [D] in float32.",
    NoAttrs, WKV_PORTS, _wkv_shape, params=_wkv_params, flops=_wkv_flops,
    sequence=RECURRENT, carry=_wkv_carry, tp=UNPLANNED,
    # backward keeps k and v and, per position, the two maxima and four exponentials of float32 [B, L, D]
    saves=lambda c: Saved(WKV_PORTS, 6 * 4 * c.numel(c.out)),
    example="wkv: {op: wkv, in: {k: key, v: value}}",
))
