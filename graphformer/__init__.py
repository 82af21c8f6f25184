"""graphformer: a declarative model-graph compiler for transformer-family models.

`load` and the checker need no torch; `build`, `example_inputs`, `load_weights` import torch lazily,
and `export_onnx` imports onnx lazily, so `import graphformer` stays fast and dependency-free.
This facade is the one place that takes a spec file path where a `Spec` is meant (`build("gpt2.yaml")`):
the backends below it take a `Spec` only.
"""
from .frontend.api import Spec, as_spec, load
from .base.diagnostics import Diagnostic, SpecError
from .base.errors import UsageError, WeightMapError

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
    from .backends.torch.parallel import parallelize as _p
    return _p(model, mesh, tp=tp, fsdp=fsdp, activation_checkpointing=activation_checkpointing, compile=compile,
              mixed_precision=mixed_precision)


def plan(spec, tp=1):
    from .analysis.tp_plan import derive
    return derive(as_spec(spec), tp)


def export_onnx(spec, module_or_weights, path, opset=17, **options):
    from .backends.onnx import export_onnx as _export
    return _export(as_spec(spec), module_or_weights, path, opset=opset, **options)


def generate(model, tokens, max_new_tokens, **options):
    """Continue prompts with a built causal model and a key/value cache (see docs/generation.md)."""
    from .backends.torch.generation import generate as _generate
    return _generate(model, tokens, max_new_tokens, **options)


def _weights_cover(spec, path) -> None:
    """Before building what a (tiny) config describes: the directory's weight files must hold at least
    a byte per parameter, so a config of a huge model beside a few bytes of weights allocates nothing."""
    import os
    import stat
    from .weights.checkpoint import checkpoint_files
    from .base.errors import WeightFileError
    from .analysis.summary import total_params
    files = checkpoint_files(path) if os.path.isdir(path) else [path]
    try:
        sizes = [os.stat(f) for f in files]
    except OSError:
        return   # read_state_dict says what is wrong with the file
    if not all(stat.S_ISREG(st.st_mode) for st in sizes):
        return
    stored, needed = sum(st.st_size for st in sizes), total_params(spec.ir)
    if stored < needed:
        raise WeightFileError(f"`{path}` holds {stored:,} bytes of weights, fewer than the {needed:,} parameters "
                              f"its config.json describes")


def from_pretrained(path, device="cpu", dtype=None):
    """The model of a transformers `save_pretrained` directory, in eval mode: its config imported as a spec
    (as `graphformer import hf` would write it), the model built and its weights loaded through the `hf` map.
    The spec is `model.spec`. (It used to return `(spec, model)`: write `model = from_pretrained(p)`
    and `model.spec`.) The meta device is refused (UsageError): it holds no values, so the weights would be
    dropped without a word."""
    import os
    from .backends.torch.builder import resolve_device
    from .backends.torch.weights import load_weights as _lw
    from .weights.maps import read_state_dict
    from .frontend.hf import convert_config, read_config, spec_path
    given = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(given, str) or not given or "\0" in given:
        raise UsageError(f"from_pretrained: path must be a non-empty str or os.PathLike, not {path!r:.80}")
    path = given
    if resolve_device(device).type == "meta":   # before anything is read
        raise UsageError("from_pretrained loads weights, and the meta device holds none: use device=\"cpu\" or "
                         "\"cuda\"; for the structure alone, build the imported spec on meta "
                         "(`graphformer import hf DIR -o spec.yaml`, then graphformer.build(spec, device=\"meta\"))")
    imported = convert_config(read_config(path))   # HFImportError for a refused config
    spec = load(str(spec_path(imported.family)), None, dict(imported.params))   # the bundled spec at these params
    _weights_cover(spec, path)
    model = build(spec, device=device, dtype=dtype)
    _lw(model, read_state_dict(path), "hf", spec)   # WeightFileError, WeightMapError
    return model.eval()
