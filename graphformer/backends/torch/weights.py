"""The torch adapter of backends/weights.py: load mapped weights into a built module, write a state dict."""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ...base.errors import UsageError
from ...base.fileio import atomic_outputs
from ...base.progress import track
from ...weights.maps import check_shapes, convert_state_dict


def load_weights(module: nn.Module, state_dict: Mapping, mapping: str, spec=None) -> nn.Module:
    """Load a reference state dict into a module built by `graphformer.build`, through a weight map.

    `spec` defaults to the module's own (`module.spec`, set by the builder). Strict: the map is first
    run on the tensors' shapes alone (meta tensors), so every problem of names and shapes is reported
    before a parameter changes, and the spec's parameters must be the module's. Then the tensors stream:
    each reference tensor is taken (mapped from its file, for `read_state_dict`'s safetensors), converted
    and copied into its parameter before the next is taken, so loading needs the module plus about one
    tensor of memory (and one rule's worth where a rule splits or joins tensors). A problem only the
    values show (tied tensors that differ, a non-zero tensor declared absent) is raised after the
    parameters before it were written.
    """
    spec = spec if spec is not None else getattr(module, "spec", None)
    if spec is None:
        raise TypeError("load_weights needs the spec: pass `spec=` (this module has no `.spec`)")
    planned = convert_state_dict(spec, shape_stubs(state_dict), mapping)   # WeightMapError: nothing written
    own = module.state_dict()   # views of the parameters: copying into them loads
    problems = check_shapes(spec, own) if own.keys() != planned.keys() else [
        f"`{k}` is {list(own[k].shape)} in the module, {list(t.shape)} in the spec"
        for k, t in planned.items() if own[k].shape != t.shape]
    if problems:
        raise RuntimeError(f"the module does not have spec `{spec.name}`'s parameters: " + "; ".join(problems[:6]))

    def place(name: str, value):
        with torch.no_grad():
            own[name].copy_(torch.as_tensor(value))
        return own[name]
    convert_state_dict(spec, _Tracked(state_dict), mapping, place=place)
    return module


def shape_stubs(state_dict: Mapping) -> dict:
    """The state dict's tensors as meta tensors of the same shapes and dtypes (nothing read or mapped):
    enough to run a weight map's checks. Entries that aren't arrays are kept for the map to report."""
    entries = getattr(state_dict, "entries", None)   # checkpoint.MappedTensors: from the headers alone
    if entries is not None:
        return {k: torch.empty(e.shape, dtype=_FROM_NAME[e.dtype], device="meta") for k, e in entries.items()}
    return {k: _stub(v) for k, v in state_dict.items()}


def _stub(value):
    if isinstance(value, torch.Tensor):
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    if hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__"):
        try:
            dtype = torch.from_numpy(np.empty(0, dtype=value.dtype)).dtype
        except TypeError:   # a dtype torch lacks: the map sees (and refuses) the array itself
            return value
        return torch.empty(tuple(value.shape), dtype=dtype, device="meta")
    return value


class _Tracked(Mapping):
    """A state dict whose `items()` reports progress per tensor (base/progress.py): the map's main loop."""

    def __init__(self, tensors: Mapping):
        self.tensors = tensors

    def __getitem__(self, key):
        return self.tensors[key]

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def items(self):
        return track(self.tensors.items(), len(self.tensors), "loading weights", "tensor")


def save_safetensors(module: nn.Module, out, metadata: dict[str, str]) -> None:
    """Write the module's state dict as safetensors to `out` (see `write_safetensors`)."""
    # our state dict never lists a tied parameter twice (it lives under its owner, e.g. `tok.weight`)
    write_safetensors(module.state_dict(), out, metadata)


# torch dtype -> safetensors' name; the widest first, which is also the order tensors are laid out in
_DTYPES = {getattr(torch, t): n for t, n in (
    ("float64", "F64"), ("int64", "I64"), ("uint64", "U64"), ("complex64", "C64"),
    ("float32", "F32"), ("int32", "I32"), ("uint32", "U32"),
    ("float16", "F16"), ("bfloat16", "BF16"), ("int16", "I16"), ("uint16", "U16"),
    ("int8", "I8"), ("uint8", "U8"), ("bool", "BOOL"), ("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"),
) if hasattr(torch, t)}


_FROM_NAME = {n: t for t, n in _DTYPES.items()}


def write_safetensors(tensors: dict, out, metadata: dict[str, str]) -> None:
    """Write `tensors` in the safetensors format to `out`: a binary file object (fileio.atomic_output's),
    or the path of an existing file to write in place (fileio.atomic_path's temp file).

    The format is written here rather than by safetensors' `save_file`, which writes its own temporary
    file and renames it over `out`: the output would get that file's 0600 mode, a kill would leave a
    temp graphformer can't recognise, and a full disk would surface as a SafetensorError. Tensors are
    streamed from their memory (no copy of the file in memory); the header is padded to 8 bytes and the
    tensors ordered widest dtype first, as safetensors does, so every tensor stays aligned. A tensor off
    the CPU is copied to it one at a time, as it is written."""
    entries = []
    for name, t in tensors.items():
        if t.dtype not in _DTYPES:
            raise TypeError(f"cannot write tensor `{name}` of dtype {t.dtype} as safetensors")
        entries.append((list(_DTYPES).index(t.dtype), name, t))
    entries.sort(key=lambda e: e[:2])
    header, offset = {"__metadata__": dict(metadata)} if metadata else {}, 0
    for _, name, t in entries:
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    if isinstance(out, (str, os.PathLike)):
        with open(out, "r+b") as fh:  # the temp file exists (atomic_path made it): "r+b" never creates one
            fh.truncate()
            _write_safetensors(fh, text, entries)
    else:
        _write_safetensors(out, text, entries)


def _write_safetensors(fh, header: bytes, entries) -> None:
    fh.write(struct.pack("<Q", len(header)))
    fh.write(header)
    for _, _, t in entries:
        if t.numel():   # one tensor at a time: a copy (off a GPU, or made contiguous) lives for one write
            t = t.detach().to("cpu").contiguous()
            fh.write(t.reshape(-1).view(torch.uint8).numpy())  # the tensor's own bytes (little-endian host)


# ---------------------------------------------------------------- a checkpoint directory in a reference's names

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_OLD_WEIGHTS = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?")


def shard(tensors: dict, max_bytes: int) -> list[dict]:
    """The tensors in file order, cut into shards of at most `max_bytes` each (a tensor larger than that gets a
    shard of its own), as transformers' `save_pretrained` cuts them."""
    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if current and size + n > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += n
    return shards + [current] if current or not shards else shards


def write_checkpoint(tensors: dict, directory: str, metadata: dict[str, str], max_shard_bytes: int,
                     extra: dict[str, bytes] | None = None) -> list[str]:
    """Write `tensors` into `directory` as `save_pretrained` lays them out: one `model.safetensors`, or above
    `max_shard_bytes` shards `model-0000k-of-0000n.safetensors` listed by `model.safetensors.index.json`; plus
    `extra` files (config.json). All of them appear together or none does (fileio.atomic_outputs); weight files
    of an earlier save that the new ones don't replace are removed after, so a reader never mixes two saves.
    A directory made here is removed again when writing fails. Returns the names written."""
    made = not os.path.exists(directory)
    if not made and not os.path.isdir(directory):
        raise UsageError(f"-o: `{directory}` exists and is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UsageError(f"-o: cannot make directory `{directory}`: {e.strerror or e}") from None
    parts = shard(tensors, max_shard_bytes)
    names = [WEIGHTS_NAME] if len(parts) == 1 else [f"model-{k + 1:05d}-of-{len(parts):05d}.safetensors"
                                                    for k in range(len(parts))]
    files = dict(extra or {})
    if len(parts) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": {k: name for name, part in zip(names, parts) for k in part}}
        files[INDEX_NAME] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    try:
        with atomic_outputs() as out:
            for name, part in track(list(zip(names, parts)), len(parts), "writing weights", "file"):
                write_safetensors(part, out.path(os.path.join(directory, name)), metadata)
            for name, data in files.items():
                with out.open(os.path.join(directory, name)) as fh:
                    fh.write(data)
            keep = set(names) | set(files)
            out.after_commit(lambda: _remove_old_weights(directory, keep))
    except BaseException:
        if made:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return names + list(files)


def _remove_old_weights(directory: str, keep: set[str]) -> None:
    for name in os.listdir(directory):
        if name not in keep and _OLD_WEIGHTS.fullmatch(name):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
