"""All primitive ops. `REGISTRY` holds the built-in ops (each family lives in its own module, imported on the
first lookup of one of its ops: `HOMES`) and, from its first read on, installed plugins' ops (ops/plugins.py,
docs/plugins.md)."""
import importlib

from .base import REGISTRY, OpDef, Attrs, TensorType, ShapeError, tt  # noqa: F401

# module of graphformer.ops -> the built-in ops it registers, in the order the table lists them (`graphformer
# list --ops`, docs/ops.md). A new op goes here too: tests/unit/test_op_homes_table.py compares it with the modules.
MODULES: dict[str, tuple[str, ...]] = {
    "core": ("embedding", "positional", "linear", "attention", "cross_attend", "norm", "residual", "relu", "gelu",
             "silu", "tanh", "sigmoid", "activation", "softcap", "mul", "dropout", "softmax", "concat", "pool",
             "learned_scale", "offset", "clamp"),
    "vision": ("patch_embed", "prepend_tokens", "latents", "mask_tokens", "grid_positions"),
    "audio": ("spectrogram", "conv1d", "group_norm"),
    "sequence": ("slice", "transpose", "unsqueeze", "interleave", "deinterleave", "table_row", "vestigial",
                 "relative_position_bias", "logical_not", "apply_mask"),
    "multimodal": ("token_at", "l2_normalize", "cosine_logits", "quick_gelu", "scale", "equal", "scatter_tokens"),
    "moe": ("moe",),
    "grid": ("window_partition", "window_merge", "window_position_bias", "patch_merge", "flatten_grid"),
    "mla": ("latent_attention",),                 # multi-head latent attention, DeepSeek-V2
    "shape": ("reshape", "permute", "tile"),      # axes between batch and tokens
    "conv": ("conv2d", "conv_transpose2d", "batch_norm", "interpolate", "pool2d"),   # channels-first image grids: CNN layers
    "scan": ("selective_scan", "token_shift", "wkv"),                # recurrences: Mamba's state-space scan
    "relative": ("relative_embeddings", "disentangled_attention"),   # DeBERTa's disentangled attention
}
REGISTRY.homes = {op: module for module, ops in MODULES.items() for op in ops}
REGISTRY._ready = True   # from here on, the first read of the registry loads the installed plugins once


def __getattr__(name: str):
    """`graphformer.ops.vision` and the like, as attributes, import their module on first use."""
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
