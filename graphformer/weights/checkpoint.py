"""The weight files of a transformers `save_pretrained` directory (no torch needed to find them).

A directory holds one `model.safetensors`, or shards `model-0000k-of-0000n.safetensors` listed by
`model.safetensors.index.json`, or the older `pytorch_model.bin` (possibly sharded the same way). Each
weight reader reads these files one at a time with its own per-file reader, so no file is held
twice and a shard is never concatenated in memory (graphformer/weights/maps.py `read_state_dict`).
"""
from __future__ import annotations

import json
import os

from ..base.errors import WeightFileError

CANDIDATES = [("model.safetensors.index.json", True), ("model.safetensors", False),
              ("pytorch_model.bin.index.json", True), ("pytorch_model.bin", False)]


def checkpoint_files(directory: str) -> list[str]:
    """The weight files of a checkpoint directory, in the order to read them."""
    for name, is_index in CANDIDATES:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        if not is_index:
            return [path]
        try:
            with open(path, encoding="utf-8") as fh:
                shards = json.load(fh)["weight_map"].values()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise WeightFileError(f"cannot read the shard index `{path}`: {e}") from None
        files = [os.path.join(directory, s) for s in dict.fromkeys(shards)]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise WeightFileError(f"`{path}` lists shard `{os.path.basename(missing[0])}`, which is missing"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return files
    raise WeightFileError(f"directory `{directory}` holds no weights: expected "
                          + ", ".join(f"`{n}`" for n, _ in CANDIDATES))


def is_hf_directory(path: str) -> bool:
    """A save_pretrained directory: its weights are named by the spec's `hf` map."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))

