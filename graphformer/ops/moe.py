"""Mixture of experts: each token is routed to the top-k of E experts, where an expert is any block of
the spec (a block-valued attribute), as in Mixtral's sparse MoE layer.

The router is a linear map to E logits. `softmax_topk` (Mixtral): softmax over all experts, keep the
top k, optionally renormalise them to sum to 1. `topk_softmax`: keep the top k logits, softmax over them.
`sigmoid_topk` (DeepSeek-V3): each expert's score is its own sigmoid; keep the top k, optionally
renormalised. DeepSeek-V2 adds group-limited routing (`groups`, `top_groups`: experts in equal groups, a
group scored by its best expert (`group_score: max`) or V3's sum of its best two (`top2_sum`), only the
best `top_groups` groups compete for the top k) and `routed_scale` on the kept weights. DeepSeek-V3's
`selection_bias` is a per-expert vector (`e_score_correction_bias`, running state: a torch buffer, never
trained by backprop) added to the scores only to choose the experts: the kept weights are the unbiased
scores. Shared experts are a dense block beside the `moe` node in the spec (every token runs them), not
an attribute: see specs/deepseek-v2.yaml.
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
    router: Literal["softmax_topk", "topk_softmax", "sigmoid_topk"] = Field(
        "softmax_topk", description="softmax over all experts then top-k (Mixtral), top-k logits then softmax, "
                                    "or a sigmoid per expert then top-k (DeepSeek-V3)")
    normalize: bool = Field(True, description="softmax_topk, sigmoid_topk: renormalise the k kept weights to sum "
                                              "to 1")
    router_bias: bool = False
    groups: DimAttr | None = Field(None, description="group-limited routing (DeepSeek's `n_group`): the experts "
                                   "in this many equal groups, each ranked by `group_score`")
    top_groups: DimAttr | None = Field(None, description="with `groups`: the groups whose experts may be picked "
                                       "(`topk_group`)")
    group_score: Literal["max", "top2_sum"] = Field(
        "max", description="with `groups`: a group's score, its best expert's (DeepSeek-V2) or the sum of its "
                           "best two (DeepSeek-V3)")
    selection_bias: bool = Field(False, description="a per-expert bias `selection_bias` [E] (DeepSeek-V3's "
                                 "`e_score_correction_bias`; running state, not trained) added to the scores "
                                 "only to choose the experts (and groups); the weights stay the unbiased scores")
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
    if a.selection_bias and a.router == "topk_softmax":
        raise ShapeError("GF320", "`selection_bias` chooses experts by biased scores and weighs them by the "
                         "unbiased ones: `router: topk_softmax` has no score per expert before its top-k",
                         attr="selection_bias",
                         help="use `router: sigmoid_topk` (DeepSeek-V3) or `softmax_topk`, or drop `selection_bias`")
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
        if a.group_score != "max":
            raise ShapeError("GF102", "`group_score` is set without `groups`", attr="group_score",
                             help="group-limited routing needs `groups` and `top_groups`")
        return
    positive(a.groups, "groups")
    if a.router == "topk_softmax":
        raise ShapeError("GF102", "group-limited routing scores groups by the experts' scores: it needs "
                         "`router: softmax_topk` or `sigmoid_topk`", attr="groups")
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
    if a.group_score == "top2_sum" and a.experts // a.groups < 2:
        raise ShapeError("GF321", f"`group_score: top2_sum` sums each group's best two experts, but {a.experts} "
                         f"experts in {a.groups} groups leave {a.experts // a.groups} per group",
                         attr="group_score",
                         help="use fewer groups (at least two experts each), or `group_score: max`")


def _router(a: MoEAttrs, d: int) -> dict:
    return {"router.weight": (a.experts, d), **({"router.bias": (a.experts,)} if a.router_bias else {})}


def _moe_params(a: MoEAttrs, ins):
    x = ins["x"]
    expert = _facts(a, x).params
    return {**_router(a, _last(x)), **({"selection_bias": (a.experts,)} if a.selection_bias else {}),
            **{f"experts.{e}.{k}": s for e in range(a.experts) for k, s in expert.items()}}


def _moe_state(a: MoEAttrs) -> tuple[str, ...]:
    return ("selection_bias",) if a.selection_bias else ()


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
    # router matmul, softmax (or sigmoid) over E and any selection bias, then k experts per token and the
    # weighted sum of their outputs
    scoring = (4 if a.selection_bias else 3) * tokens * a.experts
    return 2 * tokens * d * a.experts + scoring + a.top_k * _facts(a, x).flops + 2 * a.top_k * tokens * d


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
    "Optional group-limited routing (`groups`, `top_groups`, `group_score`) and a scale of the kept weights "
    "(`routed_scale`), as DeepSeek-V2; sigmoid scores (`router: sigmoid_topk`) and a bias that only chooses "
    "the experts (`selection_bias`), as DeepSeek-V3.",
    MoEAttrs, ("x",), _moe_shape, params=_moe_params, flops=_moe_flops, active_params=_moe_active,
    sequence=POSITION, tp=EXPERTS, saves=_moe_saves, matmul=True, state=_moe_state,
    example="moe: {op: moe, expert: mlp, experts: 4, top_k: 2}",
))
