"""The torch backend: compile a checked spec to a `torch.nn.Module` (see docs/python-api.md).

Importing this package registers every lowering, one module per op family, mirroring graphformer/ops/.
"""
from . import audio, conv, core, grid, mla, moe, multimodal, relative, scan, sequence, shape, vision  # noqa: F401  (fill the lowering table)
from .builder import build, init_parameters, resolve_device, resolve_dtype  # noqa: E402
from .inputs import example_inputs, resolve_dims  # noqa: E402
from .lower import LOWERINGS, lowers  # noqa: E402
from .module import Block, GraphModule  # noqa: E402

__all__ = ["build", "example_inputs", "GraphModule", "Block", "LOWERINGS", "lowers", "init_parameters",
           "resolve_device", "resolve_dtype", "resolve_dims"]
