"""The ONNX adapter of backends/weights.py: where exported weights come from, as float32 numpy arrays.

Sources: a built module, a state dict, a weights file (backends/weights.py reads it), or a seeded init.
Whatever the source, the result is checked against the spec's parameter shapes (the single source of
truth for names and shapes). Torch is only imported when the source needs it, so exporting a
safetensors file, through a weight map or not, needs onnx and numpy alone.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...base.errors import ExportError, WeightFileError
from ...weights.maps import check_shapes, convert_state_dict, read_state_dict


def resolve(spec, source: Any = None, seed: int | None = 0, weights_map: str | None = None) -> dict[str, np.ndarray]:
    """Weights for `spec` from `source`: None (seeded init via the torch backend), an nn.Module, a
    mapping name → tensor/array, or a path to a .safetensors / .pt / .bin file; `weights_map` (the name
    of one of the spec's `weight_maps`) converts a reference implementation's state dict first."""
    if source is None:
        if weights_map is not None:
            raise ExportError("a weight map needs weights to convert: pass a state dict or a safetensors file")
        sd = _seeded(spec, seed)
    elif isinstance(source, (str, os.PathLike)):
        try:
            sd = read_state_dict(os.fspath(source))
        except WeightFileError as e:
            raise ExportError(str(e)) from None
    elif hasattr(source, "state_dict") and callable(source.state_dict):
        sd = source.state_dict()
    elif isinstance(source, Mapping):
        sd = dict(source)
    else:
        raise ExportError(f"cannot take weights from a {type(source).__name__}: pass an nn.Module, a state "
                          "dict, a .safetensors path, or None for a seeded init")
    if weights_map is not None:
        sd = convert_state_dict(spec, sd, weights_map)  # WeightMapError names every key that does not fit
    return check(spec, {k: to_numpy(k, v) for k, v in sd.items()})


def _seeded(spec, seed: int | None):
    try:
        from ..torch import build
    except ImportError as e:
        raise ExportError(f"weights from a seeded init need the torch extra ({e}); install "
                          "`graphformer[torch]` or pass a safetensors file") from None
    return build(spec, seed=seed).state_dict()


def to_numpy(key: str, value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; import-free check keeps torch optional
        if value.device.type == "meta":
            raise ExportError(f"weight `{key}` is on the meta device: build on cpu (or pass real weights)")
        if not value.is_floating_point():  # .float() would cast ids and drop imaginary parts silently
            raise ExportError(f"weight `{key}` has dtype {str(value.dtype).removeprefix('torch.')}, expected a "
                              "floating-point tensor")
        value = value.detach().float().cpu().numpy()
    arr = np.asarray(value)
    if "float" not in arr.dtype.name:  # numpy floats, and ml_dtypes' bfloat16 once onnx registered it
        raise ExportError(f"weight `{key}` has dtype {arr.dtype}, expected a floating-point tensor")
    return np.asarray(arr, dtype=np.float32, order="C")  # not ascontiguousarray: it makes scalars 1-D


def check(spec, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every parameter present with the shape the spec gives it, and nothing else."""
    problems = check_shapes(spec, weights)
    if problems:
        raise ExportError(f"the weights do not match spec `{spec.name}`: " + "; ".join(problems[:6]))
    return {k: weights[k] for k in spec.ir.param_shapes()}
