"""Where exported weights come from: a built module, a state dict, a safetensors file, or a seeded init.

Whatever the source, the result is checked against `summary.param_shapes` (the single source of truth
for parameter names and shapes) and returned as float32 numpy arrays keyed by state-dict name. Torch is
only imported when the source needs it, so exporting a safetensors file needs onnx and numpy alone.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...summary import param_shapes
from .graph import ExportError


def resolve(spec, source: Any = None, seed: int | None = 0, weights_map: str | None = None) -> dict[str, np.ndarray]:
    """Weights for `spec` from `source`: None (seeded init via the torch backend), an nn.Module, a
    mapping name → tensor/array, or a path to a .safetensors file; `weights_map` (the name of one of
    the spec's `weight_maps`) converts a reference implementation's state dict first."""
    if source is None:
        if weights_map is not None:
            raise ExportError("a weight map needs weights to convert: pass a state dict or a safetensors file")
        sd = _seeded(spec, seed)
    elif isinstance(source, (str, os.PathLike)):
        sd = read_file(os.fspath(source))
    elif hasattr(source, "state_dict") and callable(source.state_dict):
        sd = source.state_dict()
    elif isinstance(source, Mapping):
        sd = dict(source)
    else:
        raise ExportError(f"cannot take weights from a {type(source).__name__}: pass an nn.Module, a state "
                          "dict, a .safetensors path, or None for a seeded init")
    if weights_map is not None:
        sd = _convert(spec, sd, weights_map)
    return check(spec, {k: to_numpy(k, v) for k, v in sd.items()})


def _seeded(spec, seed: int | None):
    try:
        from ..torch import build
    except ImportError as e:
        raise ExportError(f"weights from a seeded init need the torch extra ({e}); install "
                          "`graphformer[torch]` or pass a safetensors file") from None
    return build(spec, seed=seed).state_dict()


def read_file(path: str) -> dict:
    """A state dict from .safetensors (numpy, no torch needed) or from .pt / .bin (torch.load)."""
    if not os.path.isfile(path):
        raise ExportError(f"weights file `{path}` does not exist")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    try:
        import torch
    except ImportError:
        raise ExportError(f"`{path}` is not a .safetensors file; reading .pt/.bin weights needs torch") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: the user's to fix, not a traceback
        raise ExportError(f"cannot read weights file `{path}`: {e}") from None
    if not isinstance(sd, Mapping):
        raise ExportError(f"`{path}` does not hold a state dict")
    return dict(sd)


def _read_safetensors(path: str) -> dict:
    try:
        from safetensors import safe_open
    except ImportError:
        raise ExportError("reading .safetensors weights needs the `safetensors` package") from None
    try:
        with safe_open(path, framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except TypeError:
        pass  # a dtype numpy lacks (bfloat16): read through torch below
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise ExportError(f"cannot read weights file `{path}`: {e}") from None
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except ImportError:
        raise ExportError(f"`{path}` holds a dtype numpy cannot read (bfloat16?); install torch") from None


def _convert(spec, sd: dict, name: str) -> dict:
    try:
        import torch
        from ..weights import convert_state_dict
    except ImportError as e:
        raise ExportError(f"weight maps need the torch extra ({e})") from None
    sd = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in sd.items()}
    return convert_state_dict(spec, sd, name)  # WeightMapError names every key that does not fit


def to_numpy(key: str, value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; import-free check keeps torch optional
        if value.device.type == "meta":
            raise ExportError(f"weight `{key}` is on the meta device: build on cpu (or pass real weights)")
        value = value.detach().float().cpu().numpy()
    arr = np.asarray(value)
    if "float" not in arr.dtype.name:  # numpy floats, and ml_dtypes' bfloat16 once onnx registered it
        raise ExportError(f"weight `{key}` has dtype {arr.dtype}, expected a floating-point tensor")
    return np.asarray(arr, dtype=np.float32, order="C")  # not ascontiguousarray: it makes scalars 1-D


def check(spec, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every parameter present with the shape the spec gives it, and nothing else."""
    expected = param_shapes(spec.ir)
    problems = []
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing:
        problems.append(f"missing {len(missing)}: " + _few(missing))
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: " + _few(unexpected))
    for k, shape in expected.items():
        if k in weights and tuple(weights[k].shape) != tuple(shape):
            problems.append(f"`{k}` has shape {list(weights[k].shape)}, the spec needs {list(shape)}")
    if problems:
        raise ExportError(f"the weights do not match spec `{spec.name}`: " + "; ".join(problems[:6]))
    return {k: weights[k] for k in expected}


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(f"`{k}`" for k in keys[:n]) + (", ..." if len(keys) > n else "")
