"""Run under torchrun by tests/test_parallel.py: train a tiny spec for 3 AdamW steps sharded (FSDP2, tensor
parallel, or both on a 2-D mesh) and compare losses, gradients and parameters with the same training
in one process. Exits non-zero with the difference when they disagree."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

import graphformer
from graphformer.budget import per_device

SPECS = Path(__file__).resolve().parents[1] / "specs"
TOL = 1e-5


def full(t):
    return t.full_tensor() if isinstance(t, DTensor) else t


def step(model, ids, opt):
    logits = model(tokens=ids)["logits"]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    grads = {k: full(p.grad).detach().clone() for k, p in model.named_parameters()}
    opt.step()
    opt.zero_grad()
    return loss.detach(), grads


def main(name: str, mode: str) -> None:
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    spec = graphformer.load(SPECS / f"{name}.yaml", preset="tiny")
    ref = graphformer.build(spec, seed=0).eval()        # eval: no dropout, so both runs are deterministic
    model = graphformer.build(spec, seed=0).eval()
    if mode == "fsdp":
        mesh, dp, dp_rank = init_device_mesh("cpu", (world,)), world, dist.get_rank()
        graphformer.parallelize(model, mesh)
    elif mode == "tp":
        mesh, dp, dp_rank = init_device_mesh("cpu", (world,)), 1, 0
        graphformer.parallelize(model, mesh, tp=world, fsdp=False)
    else:
        mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
        dp, dp_rank = 2, mesh["dp"].get_local_rank()
        graphformer.parallelize(model, mesh, tp=world // 2)
    # the parameters this rank holds equal summary's per-device figure (rank 0 holds the largest shards)
    held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())
    want = per_device(spec.ir, spec.ir.resolve_dims({}), dp=dp, tp=world // dp)["params"]
    if dist.get_rank() == 0 and held != want:
        print(f"rank 0 holds {held:,} parameters; summary --mesh says {want:,}")
        sys.exit(1)
    ids = torch.randint(0, spec.params["vocab"], (4, 8), generator=torch.Generator().manual_seed(0))
    local = ids.chunk(dp)[dp_rank]
    # AdamW at lr 1e-3: Adam divides by sqrt(v), so the last-bit differences of a reduction in another order
    # move a parameter by up to ~lr where a gradient is near zero; 1e-3 keeps that inside the tolerance
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    diff = {"loss": 0.0, "grads": 0.0, "params": 0.0}
    for _ in range(3):
        want_loss, want_grads = step(ref, ids, opt_ref)
        loss, grads = step(model, local, opt)
        dist.all_reduce(loss)
        loss = loss / world          # every rank's local mean; tensor-parallel ranks hold the same one
        diff["loss"] = max(diff["loss"], abs(loss.item() - want_loss.item()))
        for k, g in want_grads.items():
            diff["grads"] = max(diff["grads"], (grads[k] - g).abs().max().item() / max(1.0, g.abs().max().item()))
    params = dict(model.named_parameters())
    for k, p in ref.named_parameters():
        diff["params"] = max(diff["params"], (full(params[k]).detach() - p.detach()).abs().max().item())
    if dist.get_rank() == 0:
        print(f"{name} {mode} x{world}: worst difference " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    dist.destroy_process_group()
    # loss and gradients to 1e-5; parameters after three Adam steps to 5e-5 (Adam's 1/sqrt(v) amplifies the
    # last-bit differences of a reduction done in another order where a gradient is near zero)
    ok = diff["loss"] <= TOL and diff["grads"] <= TOL and diff["params"] <= 5 * TOL
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
