"""The weight files of a transformers `save_pretrained` directory (no torch needed to find them).

A directory holds one `model.safetensors`, or shards `model-0000k-of-0000n.safetensors` listed by
`model.safetensors.index.json`, or the older `pytorch_model.bin` (possibly sharded the same way). Each
weight reader reads these files one at a time with its own per-file reader, so no file is held
twice and a shard is never concatenated in memory (graphformer/weights/maps.py `read_state_dict`).

Every name is confined to the directory (reading.inside): an index naming `../x`, an absolute path or
a link out of the directory is refused, never followed.
"""
from __future__ import annotations

import os

from ..base.errors import WeightFileError
from ..base.reading import FileProblem, inside, read_json

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
