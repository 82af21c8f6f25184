"""`graphformer.parallelize`: shard a built model on torch.distributed — tensor parallelism from the plan the
graph implies (graphformer/tp_plan.py), FSDP2 on every repetition of every repeated block and on the
root, optional activation checkpointing and torch.compile per repetition. See docs/distributed.md.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import UsageError
from .tp_plan import Shard, derive


def plan(spec, tp: int = 1) -> list[Shard]:
    """Which module is split how under `tp`-way tensor parallelism (no building, no torch.distributed)."""
    return derive(spec, tp)


def repetitions(model) -> list[tuple[nn.ModuleList, int]]:
    """Every repetition of every repeated block as (its ModuleList, index): the unit FSDP, activation
    checkpointing and compilation wrap. The generated forwards look modules up at call time, so a
    repetition replaced in its list is the one that runs."""
    out = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            out += [(module, i) for i in range(len(module))]
    return out


def parallelize(model, mesh, *, tp: int = 1, fsdp: bool = True, activation_checkpointing: bool = False,
                compile: bool = False, mixed_precision=None):
    """Shard `model` (from `graphformer.build`) in place on `mesh` and return it.

    `mesh`: a 1-D DeviceMesh (data parallel with FSDP when tp == 1; tensor parallel when tp equals its
    size and fsdp is False) or a 2-D one with dims ("dp", "tp"). `mixed_precision`: a torch dtype for
    parameters in compute (FSDP2's MixedPrecisionPolicy, gradients reduced in fp32)."""
    dp_mesh, tp_mesh = _meshes(mesh, tp, fsdp)
    if tp > 1:
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
        styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
        layout = {s.module: styles[s.style]() for s in derive(model.spec, tp) if s.style in styles}
        parallelize_module(model, tp_mesh, layout)
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
        for items, i in repetitions(model):
            items[i] = checkpoint_wrapper(items[i])
    if compile:
        for items, i in repetitions(model):
            items[i].compile()
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        kw = {"mesh": dp_mesh}
        if mixed_precision is not None:
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=mixed_precision, reduce_dtype=torch.float32)
        for items, i in repetitions(model):
            fully_shard(items[i], **kw)
        fully_shard(model, **kw)
    return model


def _meshes(mesh, tp: int, fsdp: bool):
    if mesh.ndim == 2:
        names = mesh.mesh_dim_names or ()
        if tuple(names) != ("dp", "tp"):
            raise UsageError(f"a 2-D mesh must name its dims (\"dp\", \"tp\"), got {names}")
        if mesh["tp"].size() != tp:
            raise UsageError(f"tp = {tp} but the mesh's tp dim has size {mesh['tp'].size()}")
        return mesh["dp"], mesh["tp"]
    if mesh.ndim != 1:
        raise UsageError(f"the mesh must be 1-D or 2-D (\"dp\", \"tp\"), got {mesh.ndim} dims")
    if tp > 1:
        if fsdp:
            raise UsageError("tensor and data parallelism together need a 2-D mesh with dims (\"dp\", \"tp\")")
        if mesh.size() != tp:
            raise UsageError(f"tp = {tp} but the mesh has {mesh.size()} ranks")
        return None, mesh
    return mesh, None
