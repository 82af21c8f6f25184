"""The weight files of a transformers `save_pretrained` directory (no torch needed to find them).

A directory holds one `model.safetensors`, or shards `model-0000k-of-0000n.safetensors` listed by
`model.safetensors.index.json`, or the older `pytorch_model.bin` (possibly sharded the same way). Each
weight reader reads these files one at a time with its own per-file reader, so no file is held
twice and a shard is never concatenated in memory (graphformer/weights/maps.py `read_state_dict`).

Every name is confined to the directory (reading.inside): an index naming `../x`, an absolute path or
a link out of the directory is refused, never followed.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from ..base.errors import WeightFileError
from ..base.reading import LIMITS, FileProblem, inside, open_regular, read_json

MAX_SHARDS = 10_000   # files one index may list (the largest published checkpoints have a few hundred)
CANDIDATES = [("model.safetensors.index.json", True), ("model.safetensors", False),
              ("pytorch_model.bin.index.json", True), ("pytorch_model.bin", False)]


def checkpoint_files(directory: str) -> list[str]:
    """The weight files of a checkpoint directory, in the order to read them. WeightFileError for an
    unreadable index, a shard that is missing, or a name that leaves the directory."""
    try:
        return _files(directory)
    except FileProblem as e:
        raise WeightFileError(str(e)) from None


def _files(directory: str) -> list[str]:
    for name, is_index in CANDIDATES:
        if not os.path.lexists(os.path.join(directory, name)):   # a dangling link is not skipped: refused
            continue
        path = inside(directory, name)
        if not is_index:
            return [path]
        index = read_json(path, "shard index")
        shards = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(shards, dict) or not shards:
            raise WeightFileError(f"the shard index `{path}` has no `weight_map` (tensor name → file name)")
        names = dict.fromkeys(s if isinstance(s, str) else inside(directory, s) for s in shards.values())
        if len(names) > MAX_SHARDS:
            raise WeightFileError(f"the shard index `{path}` lists {len(names):,} files; the limit is {MAX_SHARDS:,}")
        files = [inside(directory, s) for s in names]
        missing = [f for f in files if not os.path.lexists(f)]
        if missing:
            raise WeightFileError(f"`{path}` lists shard `{os.path.basename(missing[0])}`, which is missing"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return files
    raise WeightFileError(f"directory `{directory}` holds no weights: expected "
                          + ", ".join(f"`{n}`" for n, _ in CANDIDATES))


def config_path(directory: str) -> str:
    """The directory's config.json, confined to it (FileProblem otherwise)."""
    return inside(directory, "config.json")


def is_hf_directory(path: str) -> bool:
    """A save_pretrained directory: its weights are named by the spec's `hf` map. A config.json that is
    not a regular file still counts, so that reading it says what is wrong with it."""
    return os.path.isdir(path) and os.path.lexists(os.path.join(path, "config.json"))


# ---------------------------------------------------------------- safetensors, one tensor at a time

# safetensors' dtype names → numpy's; the others (BF16, F8_*) are read as raw bytes and viewed as torch's
_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "b1", "C64": "<c8"}   # numpy's codes end in the width
_TORCH_ONLY = {"BF16": ("bfloat16", 2), "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1)}
MAX_RANK = 64


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies: its file, safetensors dtype name, shape and absolute byte range."""
    path: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    stop: int


class MappedTensors(Mapping):
    """The tensors of safetensors files by name, read lazily: each access maps that tensor's bytes from
    its file (copy-on-write, so the array is writable and the file never changes) and the mapping is
    released when the array is dropped. A loader that takes one tensor at a time therefore holds one
    tensor of the checkpoint in memory, never the file; nothing is cached, so every access maps again.

    Arrays are numpy's; a dtype numpy lacks (bfloat16, float8) comes back as a torch tensor (as the
    safetensors library would give), or a WeightFileError without torch."""

    def __init__(self, entries: dict[str, TensorEntry], files: dict[str, tuple]):
        self.entries = entries
        self._files = files        # path → (st_dev, st_ino, st_size) when its header was read

    def __getitem__(self, name: str):
        return _mapped(self.entries[name], self._files[self.entries[name].path])

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def nbytes(self) -> int:
        return sum(e.stop - e.start for e in self.entries.values())


def mapped_safetensors(paths: list[str]) -> MappedTensors:
    """The tensors of these safetensors files (a later file's tensor wins over an earlier one of the same
    name, as reading them one after another would). Only the headers are read here, each bounded by
    LIMITS["safetensors header"] and checked: every tensor's byte range lies in its file and fits its
    dtype and shape. Raises WeightFileError."""
    entries, files = {}, {}
    for path in paths:
        found, files[path] = _header(path)
        entries.update(found)
    return MappedTensors(entries, files)


def _header(path: str) -> tuple[dict[str, TensorEntry], tuple]:
    try:
        fd, st = open_regular(path)
    except FileProblem as e:
        raise WeightFileError(f"weights file: {e}") from None
    try:
        head = os.pread(fd, 8, 0)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        limit = LIMITS["safetensors header"]
        if length < 2 or length + 8 > st.st_size:
            raise WeightFileError(f"weights file `{path}` is not a safetensors file (its header length is missing "
                                  f"or longer than the file)")
        if length > limit:
            raise WeightFileError(f"weights file `{path}`: its safetensors header is {length:,} bytes; the limit "
                                  f"is {limit:,}")
        text = os.pread(fd, length, 8)
    except OSError as e:
        raise WeightFileError(f"cannot read weights file `{path}`: {e.strerror or e}") from None
    finally:
        os.close(fd)
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):   # not UTF-8, not JSON, nested too deeply
        header = None
    if not isinstance(header, dict):
        raise WeightFileError(f"cannot read weights file `{path}`: its safetensors header is not a JSON object")
    base, entries = 8 + length, {}
    for name, info in header.items():
        if name != "__metadata__":
            entries[name] = _entry(path, name, info, base, st.st_size)
    return entries, (st.st_dev, st.st_ino, st.st_size)


def _entry(path: str, name: str, info, base: int, size: int) -> TensorEntry:
    def bad(why: str) -> WeightFileError:
        return WeightFileError(f"cannot read weights file `{path}`: tensor `{name:.200}` {why}")
    if not isinstance(info, dict):
        raise bad("is not described by an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    width = _TORCH_ONLY[dtype][1] if dtype in _TORCH_ONLY else int(_NUMPY[dtype][-1]) if dtype in _NUMPY else None
    if width is None:
        raise bad(f"has dtype {json.dumps(dtype)[:40]}, which graphformer does not read")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or \
            not all(type(d) is int and 0 <= d < 1 << 62 for d in shape):
        raise bad("has no valid shape (a list of non-negative integers)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= size - base):
        raise bad("has a byte range outside the file")
    if offsets[1] - offsets[0] != math.prod(shape) * width:
        raise bad(f"has {offsets[1] - offsets[0]:,} bytes for shape {shape} of {dtype}")
    return TensorEntry(path, dtype, tuple(shape), base + offsets[0], base + offsets[1])


def _mapped(e: TensorEntry, identity: tuple):
    """One tensor's array, mapped from its file (read into memory where it can't be mapped)."""
    import numpy as np
    raw = _NUMPY.get(e.dtype, "u1")
    count = (e.stop - e.start) // np.dtype(raw).itemsize
    if e.stop == e.start:
        array = np.empty(0, dtype=raw)
    else:
        try:
            fd, st = open_regular(e.path)
        except FileProblem as err:
            raise WeightFileError(f"weights file: {err}") from None
        try:
            if (st.st_dev, st.st_ino, st.st_size) != identity:
                raise WeightFileError(f"weights file `{e.path}` changed while it was being read")
            array = np.frombuffer(_bytes(fd, e.start, e.stop), dtype=raw, count=count,
                                  offset=e.start % mmap.ALLOCATIONGRANULARITY)
        finally:
            os.close(fd)
    if e.dtype in _NUMPY:
        return array.reshape(e.shape)
    try:
        import torch
    except ImportError:
        raise WeightFileError(f"`{e.path}` holds a dtype numpy cannot read ({_TORCH_ONLY[e.dtype][0]}); "
                              "install torch") from None
    return torch.from_numpy(array).view(getattr(torch, _TORCH_ONLY[e.dtype][0])).reshape(e.shape)


# Each live map holds a file descriptor (Python's mmap keeps a duplicate): a caller that keeps every tensor
# (an ONNX export converts the whole state dict first) gets them read into memory past this many.
MAX_LIVE_MAPS = 256
_live = [0]


def _bytes(fd: int, start: int, stop: int):
    """The bytes [start, stop) of the file behind `fd`, from the page boundary below `start`: a private
    (copy-on-write) map, unmapped when the last array over it goes; read into memory instead past
    MAX_LIVE_MAPS live maps, or when the system refuses a map (out of descriptors or address space)."""
    first = start - start % mmap.ALLOCATIONGRANULARITY
    try:
        if _live[0] >= MAX_LIVE_MAPS:
            raise OSError("too many live maps")
        mapped = mmap.mmap(fd, stop - first, access=mmap.ACCESS_COPY, offset=first)
        _live[0] += 1
        weakref.finalize(mapped, _unmapped)
        return mapped
    except (OSError, ValueError):
        buf = bytearray(stop - first)
        view, done = memoryview(buf), 0
        while done < len(buf):
            n = os.preadv(fd, [view[done:]], first + done)
            if n <= 0:
                raise WeightFileError("cannot read weights file: it ended before its header said") from None
            done += n
        return buf


def _unmapped() -> None:
    _live[0] -= 1
