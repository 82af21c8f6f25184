"""Writing a lowered model to disk: weights stream from their arrays straight into the file.

Serialising a ModelProto that holds its weights copies every byte three times (array → bytes →
TensorProto → serialised message). Instead the graph is serialised without initializers and the
initializers are appended in protobuf's wire format: a second occurrence of the `graph` field, which
parsers merge into the first (the protobuf rule for repeated occurrences of an embedded message), whose
body is one `initializer` entry per weight — a small serialised TensorProto header (name, dims, type)
followed by its `raw_data` field written directly from the array's memory.

Past the external-data threshold the same headers instead point into `<file>.<hash>.data` (page-aligned
offsets), named by its content. Both files are written to temp files first and renamed under a lock on
their directory (fileio.atomic_outputs), the data file first: the model file never points at data that
is not there yet, and a kill at any moment leaves the previous pair loadable. Still under the lock, the
data files the new model does not reference are removed: those of earlier exports, of exports killed
mid-switch, and (after an inline export) all of them. A concurrent export of the same path either
switches before (its data file is then removed, with its model replaced) or after (ours is): one
complete pair remains.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np
from onnx import GraphProto, ModelProto, TensorProto, helper

from ...base.fileio import atomic_outputs, resolve_output
from ...base.progress import track
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
    with atomic_outputs() as out:
        fh = out.open(path)
        for chunk in (model.SerializeToString(), _key(_GRAPH) + _varint(body)):
            size += fh.write(chunk)
        for prefix, arr in entries:
            size += fh.write(prefix)
            size += fh.write(arr)
        directory, name = os.path.split(resolve_output(path))
        out.after_commit(lambda: remove_old_data(directory, name, keep=None))  # an inline model needs none
    return Written(path, size, len(model.graph.node), sum(weights[t.name].size for t in headers))


def write_external(ir, weights: dict[str, np.ndarray], opset: int, path: str, past=None) -> Written:
    real = resolve_output(path)
    directory, name = os.path.split(real)
    digest = hashlib.blake2b(digest_size=8)
    params = 0
    with atomic_outputs() as out:
        data = out.open(os.path.join(directory, name + ".data"), like=real,
                        final=lambda: os.path.join(directory, data_name(name, digest.hexdigest())))

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

        ticks = iter(track(range(len(weights)), len(weights), f"writing {name}'s weights", "tensor"))

        def counted(tname: str, arr: np.ndarray) -> TensorProto:   # the bar advances per tensor written
            next(ticks, None)
            return external(tname, arr)

        model = to_model(ir, weights, opset, tensor=counted, past=past)
        for _ in ticks:   # the last step, which closes the bar
            pass
        data_bytes = data.tell()
        location = data_name(name, digest.hexdigest())
        for t in model.graph.initializer:
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = location
        blob = model.SerializeToString()
        out.open(path).write(blob)  # renamed after the data file: the switch
        out.after_commit(lambda: remove_old_data(directory, name, keep=location))
    return Written(path, len(blob), len(model.graph.node), params, os.path.join(directory, location), data_bytes)


def data_name(model_name: str, digest: str) -> str:
    """The external data file of `model_name`, named by its content: a new export never overwrites the
    data an existing model file points at."""
    return f"{model_name}.{digest}.data"


def remove_old_data(directory: str, model_name: str, keep: str | None) -> None:
    """The data files of `model_name` other than `keep` (the one the live model file references, or None
    for an inline model), and the `<model>.data` of graphformer before 0.2. Called by the writer of the
    live model file while it holds the directory's lock, so no other export is between its data file's
    rename and its model's; a file that vanished meanwhile (someone else's clean-up) is no error."""
    pattern = re.compile(re.escape(model_name) + r"\.[0-9a-f]{16}\.data")
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if entry != keep and (pattern.fullmatch(entry) or entry == model_name + ".data"):
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass
