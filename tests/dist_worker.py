"""Run under torchrun by tests/slow/test_parallel.py.

`dist_worker.py NAME LAYOUT`: train a tiny spec for 3 AdamW steps sharded (LAYOUT fsdp, tp, or 2d: both
on a 2-D mesh) and compare losses, gradients and parameters with the same training in one process.
`dist_worker.py NAME LAYOUT save DIR`: train one step sharded, save a DCP checkpoint (model and optimizer)
and export one safetensors file under DIR, and record the outputs before and after one more step.
`dist_worker.py NAME LAYOUT load DIR`: load that checkpoint into a model sharded as LAYOUT (another world
size) and check the same outputs, before and after the same step (so the optimizer state came too).
Exits non-zero with the difference when they disagree."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

import graphformer
from graphformer.analysis.budget import per_device
from graphformer.base.errors import UsageError, WeightMapError
from graphformer.backends.torch.parallel import export_safetensors, load_checkpoint, save_checkpoint

SPECS = Path(__file__).resolve().parents[1] / "specs"
TOL = 1e-5


def spec_path(name: str) -> Path:
    """A bundled spec by name, or a spec file by its path (a test's own)."""
    return Path(name) if name.endswith(".yaml") else SPECS / f"{name}.yaml"


def full(t):
    return t.full_tensor() if isinstance(t, DTensor) else t


def named_parameters(model) -> dict:
    """By the unwrapped model's names (activation checkpointing's wrapper adds a path segment)."""
    return {k.replace("_checkpoint_wrapped_module.", ""): p for k, p in model.named_parameters()}


def step(model, ids, opt):
    logits = model(tokens=ids)["logits"]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    grads = {k: full(p.grad).detach().clone() for k, p in named_parameters(model).items()}
    opt.step()
    opt.zero_grad()
    return loss.detach(), grads


def shard(model, layout: str) -> tuple[int, int]:
    """Parallelize `model` as `layout` (`+ac`: with activation checkpointing) over all ranks; returns
    (data-parallel size, this rank's index)."""
    world = dist.get_world_size()
    layout, ac = layout.removesuffix("+ac"), layout.endswith("+ac")
    if layout == "fsdp":
        graphformer.parallelize(model, init_device_mesh("cpu", (world,)), activation_checkpointing=ac)
        return world, dist.get_rank()
    if layout == "tp":
        graphformer.parallelize(model, init_device_mesh("cpu", (world,)), tp=world, fsdp=False)
        return 1, 0
    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
    graphformer.parallelize(model, mesh, tp=world // 2)
    return 2, mesh["dp"].get_local_rank()


def batch(spec, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, spec.params["vocab"], (4, 8), generator=torch.Generator().manual_seed(seed))


def probe(model, opt, ids, local) -> dict[str, torch.Tensor]:
    """The logits on `ids` before and after one AdamW step on `local` (this rank's part of the batch)."""
    with torch.no_grad():
        before = model(tokens=ids)["logits"]
    step(model, local, opt)
    with torch.no_grad():
        after = model(tokens=ids)["logits"]
    return {"before": before, "after": after}


def checkpoint(name: str, layout: str, action: str, out: Path) -> None:
    dist.init_process_group("gloo")
    spec = graphformer.load(spec_path(name), preset="tiny")
    model = graphformer.build(spec, seed=0 if action == "save" else 1).eval()
    dp, dp_rank = shard(model, layout)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = batch(spec, 1)
    if action == "save":
        step(model, batch(spec, 0).chunk(dp)[dp_rank], opt)     # weights and optimizer state away from init
        save_checkpoint(out / "dcp", model, opt)
        export_safetensors(model, out / "model.safetensors")
        export_safetensors(model, out / "hf.safetensors", mapping="hf")
        try:    # rank 0 can't write it: every rank hears so, none waits forever
            export_safetensors(model, out / "bad.safetensors", mapping="no-such-map")
            sys.exit(f"rank {dist.get_rank()}: an export through a missing map did not fail")
        except (UsageError, WeightMapError) as e:
            assert "no weight map `no-such-map`" in str(e), e
        got = probe(model, opt, ids, ids.chunk(dp)[dp_rank])
        if dist.get_rank() == 0:
            torch.save(got, out / "expected.pt")
        worst = 0.0
    else:
        load_checkpoint(out / "dcp", model, opt)
        worst = compare(probe(model, opt, ids, ids.chunk(dp)[dp_rank]), torch.load(out / "expected.pt"))
    if dist.get_rank() == 0:
        print(f"{name} {action} {layout} x{dist.get_world_size()}: worst difference {worst:.2e}")
    finish(worst <= 5 * TOL)


def compare(got: dict, want: dict) -> float:
    return max((got[k] - want[k]).abs().max().item() for k in want)


def main(name: str, mode: str) -> None:
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    spec = graphformer.load(spec_path(name), preset="tiny")
    ref = graphformer.build(spec, seed=0).eval()        # eval: no dropout, so both runs are deterministic
    model = graphformer.build(spec, seed=0).eval()
    dp, dp_rank = shard(model, mode)
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
    params = named_parameters(model)
    for k, p in ref.named_parameters():
        diff["params"] = max(diff["params"], (full(params[k]).detach() - p.detach()).abs().max().item())
    if dist.get_rank() == 0:
        print(f"{name} {mode} x{world}: worst difference " + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()))
    # loss and gradients to 1e-5; parameters after three Adam steps to 5e-5 (Adam's 1/sqrt(v) amplifies the
    # last-bit differences of a reduction done in another order where a gradient is near zero)
    finish(diff["loss"] <= TOL and diff["grads"] <= TOL and diff["params"] <= 5 * TOL)


def finish(ok: bool) -> None:
    """Leave once the work is checked: every rank done, the process group torn down, the output flushed,
    and no interpreter shutdown after it (under load a rank once aborted in gloo's teardown, "terminate
    called without an active exception", after every check had passed)."""
    dist.barrier()   # no rank tears the group down while another still saves or reduces through it
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) == 5:
        checkpoint(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    else:
        main(sys.argv[1], sys.argv[2])
