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
    def __init__(self, d: int, experts: list[nn.Module], a, in_name: str, out_name: str):
        super().__init__()
        self.router = Linear(d, len(experts), a.router_bias)
        if a.selection_bias:   # running state (DeepSeek-V3's e_score_correction_bias): a buffer, 0 at init
            self.register_buffer("selection_bias", torch.zeros(len(experts)))
        else:
            self.selection_bias = None
        self.experts = nn.ModuleList(experts)
        self.top_k, self.kind, self.normalize = a.top_k, a.router, a.normalize
        self.groups, self.top_groups, self.routed_scale = a.groups, a.top_groups, a.routed_scale
        self.group_score = a.group_score
        self.in_name, self.out_name = in_name, out_name

    def _apply(self, fn, recurse=True):
        """The selection bias stays float32 whatever dtype the model is cast to, as transformers keeps
        `e_score_correction_bias` (`_keep_in_fp32_modules_strict`): a bf16 bias would reorder close
        scores. Only its device follows `fn`."""
        bias = self._buffers.pop("selection_bias", None)
        try:
            return super()._apply(fn, recurse)
        finally:
            if bias is not None:
                self._buffers["selection_bias"] = bias.to(fn(bias).device)

    def group_limited(self, scores):
        """Group-limited routing: the scores of experts outside the `top_groups` groups ranked best (by
        their best expert, or the sum of their best two) set to -inf, so the top-k picks from the kept
        groups only."""
        grouped = scores.view(scores.shape[0], self.groups, -1)                   # (T, G, E/G)
        if self.group_score == "max":
            rank = grouped.amax(dim=-1)
        else:
            rank = torch.topk(grouped, 2, dim=-1).values.sum(dim=-1)              # (T, G)
        best = torch.topk(rank, self.top_groups, dim=-1).indices                  # (T, top_groups)
        keep = torch.zeros_like(rank, dtype=torch.bool).scatter_(1, best, True)   # (T, G)
        return grouped.masked_fill(~keep[..., None], float("-inf")).view_as(scores)

    def route(self, x):
        """(weights, expert ids), each [T, k], for tokens x [T, d]; weights in x's dtype."""
        if self.kind == "topk_softmax":
            top, idx = torch.topk(self.router(x).float(), self.top_k, dim=-1)
            w = F.softmax(top, dim=-1)
        else:
            if self.kind == "softmax_topk":                                       # Mixtral: softmax in fp32
                scores = F.softmax(self.router(x).float(), dim=-1)                # (T, E)
            else:                                 # DeepSeek-V3: the router's matmul and sigmoid in fp32
                w, b = self.router.weight, self.router.bias
                scores = torch.sigmoid(F.linear(x.float(), w.float(), None if b is None else b.float()))
            choice = scores if self.selection_bias is None else scores + self.selection_bias.float()
            if self.groups is not None and self.top_groups < self.groups:   # all groups kept: plain top-k
                choice = self.group_limited(choice)
            idx = torch.topk(choice, self.top_k, dim=-1).indices
            w = scores.gather(-1, idx)                                            # the unbiased scores
            if self.normalize:   # sigmoid scores may all be ~0: V3 adds 1e-20 to the sum
                w = w / (w.sum(dim=-1, keepdim=True) + (1e-20 if self.kind == "sigmoid_topk" else 0.0))
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
                + ("" if self.normalize or self.kind == "topk_softmax" else ", not renormalised")
                + (", selection bias" if self.selection_bias is not None else "")
                + (f", top {self.top_groups} of {self.groups} groups" if self.groups is not None else "")
                + (" (by their best two)" if self.groups is not None and self.group_score == "top2_sum" else "")
                + (f", scaled by {self.routed_scale:g}" if self.routed_scale != 1.0 else ""))


@lowers("moe")
def _moe(node, types):
    a = node.attrs
    body = a.body()
    body.at(types["x"])                     # the body's IR shapes at this node's input type
    spec = SimpleNamespace(ir=body.ir, name=f"{node.name} expert `{a.expert}`")
    experts = [compile_graph(spec) for _ in range(a.experts)]
    return MoE(_width(types), experts, a, next(iter(body.ir.inputs)), next(iter(body.ir.outputs)))
