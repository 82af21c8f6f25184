"""`graphformer.parallelize`: shard a built model on torch.distributed — tensor parallelism from the plan the
graph implies (graphformer/analysis/tp_plan.py), FSDP2 on every repetition of every repeated block and on the
root, optional activation checkpointing and torch.compile per repetition; checkpoints of a sharded model
(torch.distributed.checkpoint, loadable at another world size) and its export as one safetensors file.
See docs/distributed.md.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from ...base.errors import UsageError, WeightFileError
from ...analysis.tp_plan import Shard, derive


def plan(spec, tp: int = 1) -> list[Shard]:
    """Which module is split how under `tp`-way tensor parallelism (no building, no torch.distributed)."""
    return derive(spec, tp)


def repetitions(model) -> list[tuple[nn.ModuleList, int]]:
    """Every repetition of every repeated block as (its ModuleList, index): the unit FSDP, activation
    checkpointing and compilation wrap. The generated forwards look modules up at call time, so a
    repetition replaced in its list is the one that runs."""
    from .moe import MoE
    # a mixture of experts' experts are not repetitions: each rank runs only the experts its tokens pick,
    # so an expert can't be a unit whose forward all ranks enter (FSDP's all-gather); its block is
    inside_moe = {id(m) for moe in model.modules() if isinstance(moe, MoE) for m in moe.modules()}
    out = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and id(module) not in inside_moe:
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
        from torch.distributed.tensor.parallel import parallelize_module
        layout = {s.module: _style(model, s) for s in derive(model.spec, tp) if s.style != "replicate"}
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


def _style(model, shard: Shard):
    """torch's ParallelStyle for one entry of the plan."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel
    if shard.style == "vocab":
        if isinstance(model.get_submodule(shard.module), nn.Embedding):
            return RowwiseParallel(input_layouts=Replicate())     # rows of the table; token ids everywhere
        return ColwiseParallel(output_layouts=Replicate())        # the head's logits gathered
    return {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}[shard.style]()


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


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path, model, optimizer=None) -> None:
    """Save `model` (and `optimizer`) under directory `path` with torch.distributed.checkpoint: every rank
    writes its own shards, replicated tensors once. Called on every rank (or in one process without a
    process group). The parameter names are the unsharded model's, so any layout loads it."""
    import torch.distributed.checkpoint as dcp
    with _single_process_is_meant():
        dcp.save(_state(model, optimizer), checkpoint_id=os.fspath(path), no_dist=not dist.is_initialized())


def load_checkpoint(path, model, optimizer=None):
    """Load a `save_checkpoint` directory into `model` (and `optimizer`) sharded any way, at any world size,
    or unsharded in one process: DCP reads each rank's part of every tensor from whichever shards hold it.
    A checkpoint holding more (an optimizer when none is passed) is fine. Raises WeightFileError."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import set_state_dict
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, ".metadata")):
        raise WeightFileError(f"`{path}` holds no torch.distributed.checkpoint (no `.metadata` file)")
    state = _state(model, optimizer)
    try:
        with _single_process_is_meant():
            dcp.load(state, checkpoint_id=path, no_dist=not dist.is_initialized())
    except CheckpointException as e:  # a BaseException holding each rank's, e.g. a shape another spec has
        first = next(iter(e.failures.values()), None)
        why = first[0] if isinstance(first, tuple) else first
        raise WeightFileError(f"cannot load checkpoint `{path}` into `{_name(model)}`: {why}") from None
    set_state_dict(model, optimizer or (), model_state_dict=state["model"], optim_state_dict=state.get("optim", {}))
    return model


@contextmanager
def _single_process_is_meant():
    """DCP warns on every save and load without a process group; here that is a supported use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _state(model, optimizer) -> dict:
    """{"model": ..., "optim": ...} with the unsharded model's parameter names (DCP's own layout)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict
    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    msd, osd = get_state_dict(model, optimizer)
    return {"model": msd, "optim": osd}


def export_safetensors(model, path, mapping: str | None = None, reference=None) -> None:
    """Write the whole of a sharded model as one safetensors file at `path`. Called on every rank: each
    takes part in gathering the full tensors, which only rank 0 holds (on the CPU) and writes; the others
    return once the file is there, or raise UsageError with rank 0's reason when it could not be written.

    `mapping`: a weight map of the spec (`hf`) to name the tensors as that reference does (`reference`: its
    state dict, to name exactly its keys; see backends/weights.py `to_reference`); default: the spec's own
    names, as `graphformer build -o` writes them."""
    from .weights import write_safetensors
    from ...base.fileio import atomic_path
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    full = _full_state_dict(model)
    failed = None
    if rank0:
        spec = model.spec
        try:
            if mapping is not None:
                from ...weights.maps import to_reference
                full = to_reference(spec, full, mapping, reference)
            meta = {"graphformer_spec": spec.name, "format": "pt", **({"weight_map": mapping} if mapping else {})}
            with atomic_path(path) as tmp:
                write_safetensors(full, tmp, meta)
        except Exception as e:  # a map that doesn't fit, a missing directory: re-raised below
            failed = e
    if dist.is_initialized():   # every rank returns once the file is there, or raises if it is not
        outcome = [str(failed) if failed is not None else None]
        dist.broadcast_object_list(outcome, src=0)
        if outcome[0] is not None and not rank0:
            raise UsageError(f"rank 0 could not write `{path}`: {outcome[0]}")
    if failed is not None:
        raise failed


def _full_state_dict(model) -> dict:
    """The unsharded tensors on rank 0's CPU ({} on the other ranks); a collective when distributed."""
    if not dist.is_initialized():
        return {k: v.detach() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _name(model) -> str:
    spec = getattr(model, "spec", None)
    return spec.name if spec is not None else type(model).__name__
