"""The ONNX backend: a ModelProto straight from the IR (no tracing).

`to_onnx(spec, weights)` resolves the weights (`weights.resolve`) and lowers the IR op by op
(`graph.to_model`). `export_onnx(spec, weights, path)` writes the same model atomically, streaming the
weights from their arrays into the file (`write.py`); past `external_data_threshold` bytes (default:
just under protobuf's 2 GiB limit) they go to `<file>.<hash>.data` beside it, so a model far larger than 2 GB
is never held twice in memory. `with_past=True` exports a causal decoder's step instead, reading and
returning past keys and values (`past.py`).
"""
from __future__ import annotations

import os
from typing import Any

from onnx import ModelProto, defs

from ...analysis import memory
from ...base.fileio import resolve_output
from ...analysis.decoding import plan_decoder
from .graph import MIN_OPSET, ExportError, exported_nodes, to_model
from .past import Past
from .lower import LOWERINGS
from .weights import resolve
from .write import Written, write_external, write_inline

__all__ = ["export_onnx", "to_onnx", "check_exact", "plan_past", "to_model", "Written", "ExportError", "LOWERINGS",
           "EXTERNAL_DATA_THRESHOLD",
           "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
# Protobuf cannot serialise a message of 2 GiB or more; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26


def check_opset(opset: int) -> int:
    latest = defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= latest:
        raise ExportError(f"opset {opset} is not supported: choose {MIN_OPSET}..{latest} "
                          f"(LayerNormalization needs {MIN_OPSET}; the installed onnx knows up to {latest})")
    return opset


def check_exact(spec, opset: int) -> None:
    """SpecError (GF233) for a node that this opset can't express as torch computes it; reads the IR only."""
    from ...base.diagnostics import SpecError
    from .vision import opset_refusals
    refused = opset_refusals(spec.ir, opset)
    if refused:
        raise SpecError(refused)


def plan_past(spec) -> Past:
    """What an export with past keys and values reads and returns; `SpecError` (GF210–GF213) for a spec that
    is not a causal decoder."""
    return Past.of(spec.ir, plan_decoder(spec.ir, exported_nodes(spec.ir)))


def to_onnx(spec, module_or_weights: Any = None, opset: int = DEFAULT_OPSET, *, seed: int | None = 0,
            weights_map: str | None = None, with_past: bool = False) -> ModelProto:
    """The ONNX model of `spec` (a `graphformer.Spec`), in memory, weights included.

    `module_or_weights`: a built nn.Module, a state dict, a .safetensors path, or None for the torch
    backend's seeded init (`seed`). `weights_map` converts a reference's state dict first (the name of
    one of the spec's `weight_maps`). `with_past`: a decoder step with past keys and values (past.py).
    """
    check_opset(opset)
    check_exact(spec, opset)
    past = plan_past(spec) if with_past else None
    return to_model(spec.ir, resolve(spec, module_or_weights, seed, weights_map), opset, past=past)


def export_onnx(spec, module_or_weights: Any, path: str | os.PathLike, opset: int = DEFAULT_OPSET, *,
                seed: int | None = 0, weights_map: str | None = None,
                external_data_threshold: int = EXTERNAL_DATA_THRESHOLD, with_past: bool = False) -> Written:
    """Write the ONNX model of `spec` to `path` atomically (arguments as `to_onnx`).

    Weights over `external_data_threshold` bytes go to `<path>.<hash>.data` beside it (write.py). Returns what was written.
    """
    check_opset(opset)
    check_exact(spec, opset)
    past = plan_past(spec) if with_past else None
    path = os.fspath(path)
    resolve_output(path)  # a bad output fails before the (possibly slow) weights, not after
    if module_or_weights is None or isinstance(module_or_weights, (str, os.PathLike)):
        memory.require(memory.param_bytes(spec.ir), f"exporting `{spec.name}`'s weights")
    weights = resolve(spec, module_or_weights, seed, weights_map)
    if sum(a.nbytes for a in weights.values()) <= external_data_threshold:
        return write_inline(spec.ir, weights, opset, path, past)
    return write_external(spec.ir, weights, opset, path, past)
