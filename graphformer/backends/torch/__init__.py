"""The torch backend: compile a checked spec to a `torch.nn.Module` (see docs/python-api.md).

Importing this package registers every lowering: the core ops here, the vision ops in `vision.py`.
"""
import importlib.util

from . import core  # noqa: F401  (registers the core lowerings)

# vision / audio / multimodal lowerings; a checkout without them reports those ops as "no lowering"
if importlib.util.find_spec(__name__ + ".vision") is not None:
    from . import vision  # noqa: F401

from . import moe  # noqa: F401,E402  (mixture of experts)
from .builder import build, init_parameters, resolve_device, resolve_dtype  # noqa: E402
from .inputs import example_inputs, resolve_dims  # noqa: E402
from .lower import LOWERINGS, lowers  # noqa: E402
from .module import Block, GraphModule  # noqa: E402

__all__ = ["build", "example_inputs", "GraphModule", "Block", "LOWERINGS", "lowers", "init_parameters",
           "resolve_device", "resolve_dtype", "resolve_dims"]
