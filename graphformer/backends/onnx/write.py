"""Writing a lowered model to disk: weights stream from their arrays straight into the file.

Serialising a ModelProto that holds its weights copies every byte three times (array → bytes →
TensorProto → serialised message). Instead the graph is serialised without initializers and the
initializers are appended in protobuf's wire format: a second occurrence of the `graph` field, which
parsers merge into the first (the protobuf rule for repeated occurrences of an embedded message), whose
body is one `initializer` entry per weight — a small serialised TensorProto header (name, dims, type)
followed by its `raw_data` field written directly from the array's memory.

Past the external-data threshold the same headers instead point into `<file>.<hash>.data` (page-aligned
offsets), named by its content and written first; the model file is renamed into place last, so the
model file never points at data that is not there yet, and a kill at any moment leaves the previous
pair loadable. Data files of earlier exports are removed after the switch.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np
from onnx import GraphProto, ModelProto, TensorProto, helper

from ...base.fileio import atomic_output, atomic_output_named, resolve_output
from .graph import to_model

ALIGN = 4096  # external tensors start on page boundaries, so runtimes can mmap them
_GRAPH = ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER = GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
_RAW_DATA = TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number


@dataclass(frozen=True)
class Written:
    """What `export_onnx` wrote."""

    path: str
    bytes: int
    nodes: int
    params: int                    # numbers in the initializers
    data_path: str | None = None   # the external data file, when there is one
    data_bytes: int = 0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int) -> bytes:
    return _varint(field << 3 | 2)  # wire type 2: length-delimited


def _header(name: str, arr: np.ndarray) -> TensorProto:
    return TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape)


def _bytes_of(arr: np.ndarray) -> np.ndarray:
    """The array's bytes as ONNX stores them (little-endian, C order), without a copy where possible."""
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)


def write_inline(ir, weights: dict[str, np.ndarray], opset: int, path: str, past=None) -> Written:
    model = to_model(ir, weights, opset, tensor=_header, past=past)
    headers = list(model.graph.initializer)
    del model.graph.initializer[:]
    arrays = [_bytes_of(weights[t.name]) for t in headers]
    entries = []
    for t, arr in zip(headers, arrays):
        head = t.SerializeToString() + _key(_RAW_DATA) + _varint(arr.nbytes)
        entries.append((_key(_INITIALIZER) + _varint(len(head) + arr.nbytes) + head, arr))
    body = sum(len(prefix) + arr.nbytes for prefix, arr in entries)
    size = 0
    with atomic_output(path) as fh:
        for chunk in (model.SerializeToString(), _key(_GRAPH) + _varint(body)):
            size += fh.write(chunk)
        for prefix, arr in entries:
            size += fh.write(prefix)
            size += fh.write(arr)
    return Written(path, size, len(model.graph.node), sum(weights[t.name].size for t in headers))


def write_external(ir, weights: dict[str, np.ndarray], opset: int, path: str, past=None) -> Written:
    real = resolve_output(path)
    directory, name = os.path.split(real)
    digest = hashlib.blake2b(digest_size=8)
    params = 0
    with atomic_output_named(directory, name + ".data", lambda: data_name(name, digest.hexdigest())) as data:
        def external(tname: str, arr: np.ndarray) -> TensorProto:
            nonlocal params
            data.seek((data.tell() + ALIGN - 1) // ALIGN * ALIGN)
            offset = data.tell()
            raw = _bytes_of(arr)
            data.write(raw)
            digest.update(f"{tname}:{offset}:{arr.nbytes};".encode())
            digest.update(raw)
            params += arr.size
            t = _header(tname, arr)
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", ""), ("offset", offset), ("length", arr.nbytes)):
                entry = t.external_data.add()
                entry.key, entry.value = key, str(value)
            return t

        model = to_model(ir, weights, opset, tensor=external, past=past)
        data_bytes = data.tell()
    location = data_name(name, digest.hexdigest())
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    blob = model.SerializeToString()
    with atomic_output(path) as fh:  # the switch: the old model keeps its old data until this rename
        fh.write(blob)
    remove_old_data(directory, name, keep=location)
    return Written(path, len(blob), len(model.graph.node), params, os.path.join(directory, location), data_bytes)


def data_name(model_name: str, digest: str) -> str:
    """The external data file of `model_name`, named by its content: a new export never overwrites the
    data an existing model file points at."""
    return f"{model_name}.{digest}.data"


def remove_old_data(directory: str, model_name: str, keep: str) -> None:
    """Once the new model file is in place, the data files of earlier exports (and of exports killed
    before their switch) are garbage; so is the `<model>.data` of graphformer before 0.2."""
    pattern = re.compile(re.escape(model_name) + r"\.[0-9a-f]{16}\.data")
    for entry in os.listdir(directory):
        if entry != keep and (pattern.fullmatch(entry) or entry == model_name + ".data"):
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass
