"""All primitive ops. Importing this package fills `REGISTRY` with the built-in ops (each family lives in its
own module); installed plugins' ops join on the registry's first read (ops/plugins.py, docs/plugins.md)."""
from .base import REGISTRY, OpDef, Attrs, TensorType, ShapeError, tt  # noqa: F401
from . import core  # noqa: F401  (registers the core ops)
from . import vision, audio, sequence, multimodal, moe, grid  # noqa: F401,E402  (vision, audio, RL, multimodal, MoE, Swin)
from . import mla  # noqa: F401,E402  (multi-head latent attention, DeepSeek-V2)
from . import shape  # noqa: F401,E402  (reshape, permute, tile: axes between batch and tokens)
REGISTRY._ready = True   # from here on, the first read of the registry loads the installed plugins once
