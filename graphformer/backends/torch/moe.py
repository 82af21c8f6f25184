"""Torch lowering of the mixture-of-experts op (graphformer/ops/moe.py).

Each expert is the spec block named by `expert`, compiled like any graph (its own generated forward).
Only the selected experts run, each on the tokens routed to it (gathered, run as one [1, T, d] batch,
weighted, scattered back with index_add): no dense all-experts compute.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .builder import compile_graph
from .core import Linear, _width
from .lower import lowers


class MoE(nn.Module):
    def __init__(self, d: int, experts: list[nn.Module], top_k: int, router: str, normalize: bool,
                 router_bias: bool, in_name: str, out_name: str, groups: int | None = None,
                 top_groups: int | None = None, routed_scale: float = 1.0):
        super().__init__()
        self.router = Linear(d, len(experts), router_bias)
        self.experts = nn.ModuleList(experts)
        self.top_k, self.kind, self.normalize = top_k, router, normalize
        self.groups, self.top_groups, self.routed_scale = groups, top_groups, routed_scale
        self.in_name, self.out_name = in_name, out_name

    def group_limited(self, probs):
        """DeepSeek-V2's group-limited routing: the probabilities of experts outside the `top_groups` groups
        with the best top expert set to 0, so the top-k picks from the kept groups only."""
        grouped = probs.view(probs.shape[0], self.groups, -1)                     # (T, G, E/G)
        best = torch.topk(grouped.amax(dim=-1), self.top_groups, dim=-1).indices  # (T, top_groups)
        keep = torch.zeros_like(grouped[..., 0]).scatter_(1, best, 1.0)           # (T, G)
        return (grouped * keep[..., None]).view_as(probs)

    def route(self, x):
        """(weights, expert ids), each [T, k], for tokens x [T, d]; weights in x's dtype."""
        logits = self.router(x)                                                   # (T, E)
        if self.kind == "softmax_topk":                                           # Mixtral: softmax in fp32
            probs = F.softmax(logits.float(), dim=-1)
            if self.groups is not None and self.top_groups < self.groups:   # all groups kept: plain top-k
                probs = self.group_limited(probs)
            w, idx = torch.topk(probs, self.top_k, dim=-1)
            if self.normalize:
                w = w / w.sum(dim=-1, keepdim=True)
        else:
            top, idx = torch.topk(logits.float(), self.top_k, dim=-1)
            w = F.softmax(top, dim=-1)
        if self.routed_scale != 1.0:
            w = w * self.routed_scale
        return w.to(x.dtype), idx

    def forward(self, x):
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])                                         # (T, d)
        w, idx = self.route(tokens)
        out = torch.zeros_like(tokens)
        hit = torch.zeros(len(self.experts), dtype=torch.bool, device=x.device)
        hit[idx.reshape(-1)] = True
        for e in hit.nonzero().flatten().tolist():
            rows, slot = torch.where(idx == e)                                    # tokens routed to e
            y = self.experts[e](**{self.in_name: tokens[rows][None]})[self.out_name][0]
            out.index_add_(0, rows, y * w[rows, slot, None])
        return out.view(shape)

    def extra_repr(self) -> str:
        return (f"experts={len(self.experts)}, top_k={self.top_k}, router={self.kind}"
                + ("" if self.normalize or self.kind != "softmax_topk" else ", not renormalised")
                + (f", top {self.top_groups} of {self.groups} groups" if self.groups is not None else "")
                + (f", scaled by {self.routed_scale:g}" if self.routed_scale != 1.0 else ""))


@lowers("moe")
def _moe(node, types):
    a = node.attrs
    body = a.body()
    body.at(types["x"])                     # the body's IR shapes at this node's input type
    spec = SimpleNamespace(ir=body.ir, name=f"{node.name} expert `{a.expert}`")
    experts = [compile_graph(spec) for _ in range(a.experts)]
    return MoE(_width(types), experts, a.top_k, a.router, a.normalize, a.router_bias,
               next(iter(body.ir.inputs)), next(iter(body.ir.outputs)), a.groups, a.top_groups, a.routed_scale)
