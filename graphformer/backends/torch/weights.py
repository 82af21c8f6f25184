"""The torch adapter of backends/weights.py: load mapped weights into a built module, write a state dict."""
from __future__ import annotations

import json
import os
import struct

import torch
from torch import nn

from ...base.progress import track
from ...weights.maps import convert_state_dict


def load_weights(module: nn.Module, state_dict: dict, mapping: str, spec=None) -> nn.Module:
    """Load a reference state dict into a module built by `graphformer.build`, through a weight map.

    `spec` defaults to the module's own (`module.spec`, set by the builder). Strict: the converted dict
    has exactly the spec's parameters, so `load_state_dict(strict=True)` checks the build agrees too.
    Numpy arrays (a .safetensors file read without torch) are taken without a copy.
    """
    spec = spec if spec is not None else getattr(module, "spec", None)
    if spec is None:
        raise TypeError("load_weights needs the spec: pass `spec=` (this module has no `.spec`)")
    tensors = {k: torch.as_tensor(v) for k, v in convert_state_dict(spec, state_dict, mapping).items()}
    own = module.state_dict()   # views of the parameters: copying into them loads
    if own.keys() != tensors.keys() or any(own[k].shape != t.shape for k, t in tensors.items()):
        module.load_state_dict(tensors, strict=True)   # raises torch's message naming the keys
    with torch.no_grad():   # one tensor at a time, so a memory-mapped file is read as the bar advances
        for k in track(tensors, len(tensors), "loading weights", "tensor"):
            own[k].copy_(tensors[k])
    return module


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


def write_safetensors(tensors: dict, out, metadata: dict[str, str]) -> None:
    """Write `tensors` in the safetensors format to `out`: a binary file object (fileio.atomic_output's),
    or the path of an existing file to write in place (fileio.atomic_path's temp file).

    The format is written here rather than by safetensors' `save_file`, which writes its own temporary
    file and renames it over `out`: the output would get that file's 0600 mode, a kill would leave a
    temp graphformer can't recognise, and a full disk would surface as a SafetensorError. Tensors are
    streamed from their memory (no copy of the file in memory); the header is padded to 8 bytes and the
    tensors ordered widest dtype first, as safetensors does, so every tensor stays aligned."""
    entries = []
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
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
        if t.numel():
            fh.write(t.reshape(-1).view(torch.uint8).numpy())  # the tensor's own bytes (little-endian host)
