"""graphformer: a declarative model-graph compiler for transformer-family models.

`load` and the checker need no torch; `build`, `example_inputs`, `load_weights` import torch lazily,
and `export_onnx` imports onnx lazily, so `import graphformer` stays fast and dependency-free.
This facade is the one place that takes a spec file path where a `Spec` is meant (`build("gpt2.yaml")`):
the backends below it take a `Spec` only.
"""
from .api import Spec, as_spec, load
from .diagnostics import Diagnostic, SpecError
from .errors import UsageError, WeightMapError

__version__ = "0.1.0"
__all__ = ["Spec", "load", "SpecError", "Diagnostic", "UsageError", "WeightMapError", "build", "example_inputs",
           "load_weights", "export_onnx", "parallelize", "plan", "generate", "from_pretrained"]


def build(spec, device="cpu", dtype=None, seed=None):
    from .backends.torch import build as _build
    return _build(as_spec(spec), device=device, dtype=dtype, seed=seed)


def example_inputs(spec, dims=None, seed=0, device="cpu"):
    from .backends.torch import example_inputs as _ex
    return _ex(as_spec(spec), dims=dims, seed=seed, device=device)


def load_weights(module, state_dict, mapping, spec=None):
    from .backends.torch.weights import load_weights as _lw
    return _lw(module, state_dict, mapping, spec=spec)


def parallelize(model, mesh, *, tp=1, fsdp=True, activation_checkpointing=False, compile=False,
                mixed_precision=None):
    from .parallel import parallelize as _p
    return _p(model, mesh, tp=tp, fsdp=fsdp, activation_checkpointing=activation_checkpointing, compile=compile,
              mixed_precision=mixed_precision)


def plan(spec, tp=1):
    from .tp_plan import derive
    return derive(as_spec(spec), tp)


def export_onnx(spec, module_or_weights, path, opset=17, **options):
    from .backends.onnx import export_onnx as _export
    return _export(as_spec(spec), module_or_weights, path, opset=opset, **options)


def generate(model, tokens, max_new_tokens, **options):
    """Continue prompts with a built causal model and a key/value cache (see docs/generation.md)."""
    from .generation import generate as _generate
    return _generate(model, tokens, max_new_tokens, **options)


def from_pretrained(path, device="cpu", dtype=None):
    """(spec, model) for a transformers `save_pretrained` directory: the config imported as a spec
    (`graphformer import hf`), the model built and its weights loaded through the `hf` map."""
    from .hf import from_pretrained as _fp
    return _fp(path, device=device, dtype=dtype)
