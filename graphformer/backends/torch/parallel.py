"""`graphformer.parallelize`: shard a built model on torch.distributed — tensor parallelism from the plan the
graph implies (graphformer/analysis/tp_plan.py), FSDP2 on every repetition of every repeated block and on the
root, optional activation checkpointing and torch.compile per repetition; checkpoints of a sharded model
(torch.distributed.checkpoint, loadable at another world size) and its export as one safetensors file.
See docs/distributed.md.
"""
from __future__ import annotations

import functools
import io
import os
import pickle
import stat
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


def _sharing(items: nn.ModuleList) -> bool:
    """Whether repetitions in `items` use the same Parameter objects (`share`)."""
    seen: set[int] = set()
    for m in items:
        mine = {id(p) for p in m.parameters()}
        if mine & seen:
            return True
        seen |= mine
    return False


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
        model.relink_shared()   # each module got DTensors of its own: a shared repetition takes its owner's
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
        sharing = {}
        for items, i in repetitions(model):
            # a repetition that shares parameters (`share`) is no unit of its own: FSDP would free them after
            # it while the next repetition still reads them; the root unit holds them
            if sharing.setdefault(id(items), _sharing(items)) is False:
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
    A checkpoint holding more (an optimizer when none is passed) is fine. Raises WeightFileError, also for
    a directory whose files would run code or read outside it (docs/distributed.md, "What a checkpoint
    directory may hold"): they are refused before DCP reads anything."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import set_state_dict
    path = os.fspath(path)
    reader_class, planner_class = _safe_dcp()
    reader = reader_class(path)    # the metadata, read and checked here: WeightFileError before any other read
    state = _state(model, optimizer)
    try:
        with _single_process_is_meant():
            dcp.load(state, storage_reader=reader, planner=planner_class(), no_dist=not dist.is_initialized())
    except CheckpointException as e:  # a BaseException holding each rank's, e.g. a shape another spec has
        first = next(iter(e.failures.values()), None)
        why = first[0] if isinstance(first, tuple) else first
        raise WeightFileError(f"cannot load checkpoint `{path}` into `{_name(model)}`: {why}") from None
    try:
        set_state_dict(model, optimizer or (), model_state_dict=state["model"],
                       optim_state_dict=state.get("optim", {}))
    except Exception as e:  # optimizer settings of the wrong kind: the checkpoint's fault, not a traceback
        raise WeightFileError(f"cannot load checkpoint `{path}` into `{_name(model)}`: {e}") from None
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


# ---------------------------------------------------------------- reading a checkpoint without running it

# DCP's `.metadata` is a pickle, and its reader unpickles it unrestricted (and its planner unpickles each
# non-tensor entry with torch.load(weights_only=False)): a hostile directory would run code. Here the
# metadata is unpickled with only the classes torch's save writes into it, its structure is checked, and
# the non-tensor entries go through torch.load(weights_only=True).
METADATA_LIMIT = 1 << 30     # bytes of `.metadata`; a 70B model's at hundreds of ranks is tens of MB


@functools.cache
def _metadata_classes() -> dict[tuple[str, str], object]:
    """(module, name) → object for every global a `save_checkpoint` `.metadata` names (found by listing
    what torch 2.13 writes for FSDP, tensor-parallel and unsharded saves of models and AdamW): DCP's
    metadata dataclasses, torch.Size, dtypes, layouts (by name), and the checkpoint id's path class.
    The three that act on a value check its type first, so that no error message formats (and so
    multiplies, through the pickle's shared references) an attacker's nested lists."""
    import pathlib
    from torch.distributed.checkpoint import filesystem as fs, metadata as md
    found = [md.Metadata, md.MetadataIndex, md.StorageMeta, md.TensorStorageMetadata, md.BytesStorageMetadata,
             md.ChunkStorageMetadata, fs._StorageInfo, torch.Size,
             pathlib.PurePosixPath, pathlib.PosixPath, pathlib.PureWindowsPath, pathlib.WindowsPath]
    allowed = {(c.__module__, c.__qualname__): c for c in found}
    allowed |= {("torch", k): v for k, v in vars(torch).items() if isinstance(v, torch.dtype)}
    layouts = {str(v): v for v in vars(torch).values() if isinstance(v, torch.layout)}
    encodings = {e.value: e for e in md._MEM_FORMAT_ENCODING}

    def layout(name):                 # torch.serialization._get_layout: a layout by its name
        if type(name) is not str or name not in layouts:
            raise _Refused("is malformed: a tensor layout")
        return layouts[name]

    def encoding(value):              # the memory-format enum, by its value
        if type(value) is not int or value not in encodings:
            raise _Refused("is malformed: a memory format")
        return encodings[value]

    class Properties(md.TensorProperties):
        def __setstate__(self, state):     # the state TensorProperties.__getstate__ writes, checked first
            if not (type(state) is tuple and len(state) == 5 and isinstance(state[0], torch.dtype)
                    and isinstance(state[1], torch.layout) and type(state[3]) is md._MEM_FORMAT_ENCODING):
                raise _Refused("is malformed: tensor properties")
            md.TensorProperties.__setstate__(self, state)
            self.__class__ = md.TensorProperties   # the plain class from here on: DCP pickles it between ranks

    allowed[("torch.serialization", "_get_layout")] = layout
    allowed[(md.__name__, "_MEM_FORMAT_ENCODING")] = encoding
    allowed[(md.__name__, "TensorProperties")] = Properties
    return allowed


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.allowed = _metadata_classes()

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise _Refused(f"names `{module}.{name}`, which is not one of torch.distributed.checkpoint's "
                           f"metadata classes: unpickling it could run code")
        return self.allowed[module, name]


class _Refused(Exception):
    """A checkpoint directory that is not what `save_checkpoint` writes."""


def read_metadata(path: str):
    """The `Metadata` of checkpoint directory `path`, unpickled with `_MetadataUnpickler` and checked by
    `_check_metadata`. Raises WeightFileError saying why it was refused."""
    from ...base.reading import FileProblem, FileTooBig, read_regular_file
    file = os.path.join(path, ".metadata")
    if not os.path.isdir(path) or not os.path.lexists(file):
        raise WeightFileError(f"`{path}` holds no torch.distributed.checkpoint (no `.metadata` file)")
    try:
        data = read_regular_file(file, METADATA_LIMIT)
    except (FileProblem, FileTooBig) as e:
        raise WeightFileError(f"checkpoint `{path}` refused: cannot read `.metadata` ({e})") from None
    if len(data) > METADATA_LIMIT:
        raise WeightFileError(f"checkpoint `{path}` refused: `.metadata` is larger than {METADATA_LIMIT} bytes")
    try:
        meta = _MetadataUnpickler(io.BytesIO(data)).load()
        _check_metadata(meta, path)
    except _Refused as e:
        raise WeightFileError(f"checkpoint `{path}` refused: `.metadata` {e}") from None
    except Exception as e:  # a truncated or foreign file: a bad input, not a traceback
        raise WeightFileError(f"checkpoint `{path}` refused: `.metadata` is not a torch.distributed.checkpoint "
                              f"metadata file ({type(e).__name__}: {str(e)[:200]})") from None
    return meta


def _check_metadata(meta, path: str) -> None:
    """Only the allowed classes could be built, but with any field values: check the fields DCP acts on,
    above all that every shard file is a regular file directly inside `path` (no `../`, no device).
    Nothing untrusted is formatted into a message unless it is a checked string (and then cut short)."""
    from torch.distributed.checkpoint import filesystem as fs, metadata as md

    def expect(ok: bool, what: str) -> None:
        if not ok:
            raise _Refused(f"is malformed: {what}")

    def size(x) -> bool:
        return type(x) is torch.Size

    expect(type(meta) is md.Metadata, f"it holds a {type(meta).__name__}, not a Metadata")
    entries, storage = meta.state_dict_metadata, meta.storage_data
    expect(type(entries) is dict and all(type(k) is str for k in entries), "state_dict_metadata")
    expect(meta.storage_meta is None or type(meta.storage_meta) is md.StorageMeta, "storage_meta")
    expect(meta.version is None or type(meta.version) is str, "version")
    for key, entry in entries.items():
        expect(type(entry) is md.BytesStorageMetadata or (
            type(entry) is md.TensorStorageMetadata and size(entry.size) and type(entry.properties) is md.TensorProperties
            and type(entry.chunks) is list and all(type(c) is md.ChunkStorageMetadata and size(c.offsets)
                                                   and size(c.sizes) for c in entry.chunks)),
            f"the entry of `{key[:200]}`")
    expect(type(storage) is dict, "storage_data")
    files = set()
    for index, info in storage.items():
        expect(type(index) is md.MetadataIndex and type(index.fqn) is str
               and (index.offset is None or size(index.offset)) and (index.index is None or type(index.index) is int)
               and type(info) is fs._StorageInfo and type(info.offset) is int and type(info.length) is int
               and info.offset >= 0 and info.length >= 0
               and (info.transform_descriptors is None or type(info.transform_descriptors) in (list, tuple)
                    and all(type(t) is str for t in info.transform_descriptors)), "a storage_data item")
        name = info.relative_path
        expect(type(name) is str, "a shard file name")
        expect(name not in ("", ".", "..") and os.path.basename(name) == name and "\\" not in name
               and "\0" not in name, f"shard file name {name[:200]!r} is not a file in the directory")
        files.add(name)
    for name in sorted(files):
        try:
            regular = stat.S_ISREG(os.stat(os.path.join(path, name)).st_mode)
        except OSError as e:
            raise _Refused(f"names shard `{name[:200]}`, which cannot be read ({e.strerror})") from None
        if not regular:
            raise _Refused(f"names shard `{name[:200]}`, which is not a regular file")


@functools.cache
def _safe_dcp():
    """FileSystemReader and DefaultLoadPlanner with their two unpickling steps made safe (defined on first
    use: importing torch.distributed.checkpoint takes seconds, which `parallelize` alone doesn't need)."""
    from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
    from torch.distributed.checkpoint._nested_dict import set_element

    class SafeReader(FileSystemReader):
        """Reads `path`'s metadata once, through `read_metadata`, so DCP's own unpickling never runs."""

        def __init__(self, path: str):
            self.metadata = read_metadata(path)
            super().__init__(path)

        def read_metadata(self, *args, **kwargs):
            from torch.distributed.checkpoint.metadata import StorageMeta
            if self.metadata.storage_meta is None:
                self.metadata.storage_meta = StorageMeta()
            self.metadata.storage_meta.load_id = self.load_id   # as FileSystemReader does
            return self.metadata

    class SafePlanner(DefaultLoadPlanner):
        """Non-tensor entries (optimizer settings) as torch.load(weights_only=True), and only where the
        state dict expects a non-tensor: bytes in a tensor's place are refused."""

        def load_bytes(self, read_item, value) -> None:
            fqn = read_item.dest_index.fqn
            if isinstance(self.state_dict.get(fqn), torch.Tensor):
                raise ValueError(f"`{fqn}` is stored as bytes where a tensor is expected")
            try:
                obj = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as e:   # torch's message would advise weights_only=False: not here
                named = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "")
                raise ValueError(f"`{fqn}` holds a pickle of more than plain data, which could run code: "
                                 f"refused. {named}".strip()) from None
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[fqn], obj)
            else:
                self.state_dict[fqn] = obj

    return SafeReader, SafePlanner


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
