"""The torch adapter of backends/weights.py: load mapped weights into a built module, write a state dict."""
from __future__ import annotations

import torch
from torch import nn

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
    converted = convert_state_dict(spec, state_dict, mapping)
    module.load_state_dict({k: torch.as_tensor(v) for k, v in converted.items()}, strict=True)
    return module


def save_safetensors(module: nn.Module, path: str, metadata: dict[str, str]) -> None:
    """Write the module's state dict to `path` with safetensors' file writer (no in-memory copy of the file)."""
    # our state dict never lists a tied parameter twice (it lives under its owner, e.g. `tok.weight`)
    write_safetensors(module.state_dict(), path, metadata)


def write_safetensors(tensors: dict, path: str, metadata: dict[str, str]) -> None:
    """Write `tensors` to `path` (on the CPU, contiguous); a tensor listed under two names (a reference's
    tied head) copied, since safetensors refuses tensors that share memory."""
    from safetensors.torch import save_file
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().to("cpu").contiguous()
        storage = v.untyped_storage().data_ptr()
        out[k] = v.clone() if storage in seen else v
        seen.add(storage)
    save_file(out, path, metadata=metadata)
