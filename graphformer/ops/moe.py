"""Mixture of experts: each token is routed to the top-k of E experts, where an expert is any block of
the spec (a block-valued attribute), as in Mixtral's sparse MoE layer.

The router is a linear map to E logits. `softmax_topk` (Mixtral): softmax over all experts, keep the
top k, optionally renormalise them to sum to 1. `topk_softmax`: keep the top k logits, softmax over them.
DeepSeek-V2 adds group-limited routing (`groups`, `top_groups`: experts in equal groups, a group scored
by its best expert, only the best `top_groups` groups compete for the top k) and `routed_scale` on the
kept weights. Its shared experts are a dense block beside the `moe` node in the spec (every token runs
them), not an attribute: see specs/deepseek-v2.yaml.
Counts: parameters are the router plus E copies of the expert's; FLOPs and `active_params` count what
one token uses — the router and k experts.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..base.dims import Dim
from .base import EXPERTS, POSITION, Saved, Attrs, DimAttr, OpDef, ShapeError, TensorType, register, expect_rank, expect_float, numel, positive
from .core import _last


class MoEAttrs(Attrs):
    dim_fields = ("experts", "top_k", "groups", "top_groups")
    block_fields = ("expert",)
    expert: str = Field(description="the block that each expert runs: one input `[..., d]`, one output of the "
                                    "same shape")
    experts: DimAttr = Field(description="number of experts E")
    top_k: DimAttr = Field(description="experts per token")
    router: Literal["softmax_topk", "topk_softmax"] = Field(
        "softmax_topk", description="softmax over all experts then top-k (Mixtral), or top-k logits then softmax")
    normalize: bool = Field(True, description="softmax_topk: renormalise the k kept weights to sum to 1")
    router_bias: bool = False
    groups: DimAttr | None = Field(None, description="group-limited routing (DeepSeek's `n_group`): the experts "
                                   "in this many equal groups, each scored by its best expert")
    top_groups: DimAttr | None = Field(None, description="with `groups`: the groups whose experts may be picked "
                                       "(`topk_group`)")
    routed_scale: float = Field(1.0, gt=0, description="multiplies the kept weights, after any renormalisation "
                                "(`routed_scaling_factor`)")


def _facts(a: MoEAttrs, x: TensorType):
    body = a.body()
    if body is None:  # the block name did not resolve (already reported)
        raise ShapeError("GF100", f"expert block `{a.expert}` is not available")
    facts = body.at(x)
    if facts.error is not None:
        code, message = facts.error
        raise ShapeError(code, f"expert block `{a.expert}`: {message}", "x")
    return facts


def _moe_shape(a: MoEAttrs, ins):
    x = ins["x"]
    expect_rank(x, "x", min_rank=2)
    expect_float(x, "x")
    _last(x)
    positive(a.experts, "experts"), positive(a.top_k, "top_k")
    if a.top_k > a.experts:
        raise ShapeError("GF102", f"`top_k` ({a.top_k}) is more than the {a.experts} experts", attr="top_k")
    _groups_check(a)
    out = _facts(a, x).out
    if out != x:
        raise ShapeError("GF120", f"expert block `{a.expert}` returns {out} for an input {x}: an expert must keep "
                         "the shape of its input", "x")
    return x


def _groups_check(a: MoEAttrs) -> None:
    if a.groups is None:
        if a.top_groups is not None:
            raise ShapeError("GF102", "`top_groups` is set without `groups`", attr="top_groups",
                             help="group-limited routing needs both: `groups: 8, top_groups: 3`")
        return
    positive(a.groups, "groups")
    if a.router != "softmax_topk":
        raise ShapeError("GF102", "group-limited routing scores groups by their softmax probabilities: it needs "
                         "`router: softmax_topk`", attr="groups")
    if a.experts % a.groups:
        raise ShapeError("GF241", f"{a.experts} experts do not split into {a.groups} equal groups", attr="groups",
                         help="`experts` must be a multiple of `groups` (DeepSeek-V2: 160 experts, 8 groups)")
    if a.top_groups is None:
        raise ShapeError("GF103", "`groups` needs `top_groups`: how many groups may be picked from", attr="groups")
    positive(a.top_groups, "top_groups")
    if a.top_groups > a.groups:
        raise ShapeError("GF242", f"`top_groups` ({a.top_groups}) is more than the {a.groups} groups",
                         attr="top_groups", help="keep at most every group: `top_groups` ≤ `groups`")
    room = a.top_groups * (a.experts // a.groups)
    if a.top_k > room:
        raise ShapeError("GF243", f"`top_k` ({a.top_k}) is more than the {room} experts of the {a.top_groups} "
                         f"kept groups", attr="top_k",
                         help="the kept groups must hold at least top_k experts: top_k ≤ top_groups · experts / "
                              "groups (otherwise experts of discarded groups would be picked with weight 0)")


def _router(a: MoEAttrs, d: int) -> dict:
    return {"router.weight": (a.experts, d), **({"router.bias": (a.experts,)} if a.router_bias else {})}


def _moe_params(a: MoEAttrs, ins):
    x = ins["x"]
    expert = _facts(a, x).params
    return {**_router(a, _last(x)),
            **{f"experts.{e}.{k}": s for e in range(a.experts) for k, s in expert.items()}}


def _moe_active(a: MoEAttrs, ins) -> int:
    x = ins["x"]
    count = lambda shapes: sum(_prod(s) for s in shapes.values())  # noqa: E731
    return count(_router(a, _last(x))) + a.top_k * count(_facts(a, x).params)


def _prod(shape) -> int:
    out = 1
    for v in shape:
        out *= v
    return out


def _moe_flops(a: MoEAttrs, ins, out):
    x = ins["x"]
    tokens = numel(x.shape[:-1])
    d = _last(x)
    # router matmul, softmax over E, then k experts per token and the weighted sum of their outputs
    return 2 * tokens * d * a.experts + 3 * tokens * a.experts + a.top_k * _facts(a, x).flops \
        + 2 * a.top_k * tokens * d


def _moe_saves(c) -> Saved:
    """Router input and fp32 probabilities; k experts per token, each keeping what its block saves on its
    gathered inputs, its output (weighted) and the weighted output scattered back."""
    x = c.ins["x"]
    tokens = c.numel(x) // x.shape[-1].value
    return Saved(("x",), tokens * c.attrs.experts * 4 + c.attrs.top_k * (c.body_saved(x) + 3 * c.bytes(x)))


register(OpDef(
    "moe", "moe",
    "Mixture of experts: route each token of `x [..., d]` to the top-k of E experts (each expert the block "
    "named by `expert`) and sum their outputs weighted by the router. Only the selected experts run. "
    "Optional group-limited routing (`groups`, `top_groups`) and a scale of the kept weights (`routed_scale`), "
    "as DeepSeek-V2.",
    MoEAttrs, ("x",), _moe_shape, params=_moe_params, flops=_moe_flops, active_params=_moe_active,
    sequence=POSITION, tp=EXPERTS, saves=_moe_saves, matmul=True,
    example="moe: {op: moe, expert: mlp, experts: 4, top_k: 2}",
))
