"""The transformers model a config describes, run beside our build on the same inputs (`graphformer compare`).

This is how a user who writes a spec for an architecture outside the catalogue learns, without Python,
whether it computes what the reference does: the reference is transformers' own class, built from the
config.json of a checkpoint directory (its weights read by transformers from safetensors only: no pickle)
or, for a directory holding only a config, initialised from a seed and perturbed (`perturb`), its state
dict then loaded into our build through the spec's weight map. Nothing of the config runs: the class is
looked up among transformers' own registered classes by name (never `trust_remote_code`, never a
download), and the config class is the one transformers registers for its `model_type`.

Inputs and outputs are paired by name: the spec's own name where the reference's `forward` takes it (or
its output holds it), else the conventional one (`tokens` → `input_ids`, `hidden` → `last_hidden_state`,
...), else as the caller pairs them. Inputs a call may leave out (optional, or with a default) are left out
on both sides unless asked for (`--padded` asks for the padding masks).
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ...base.errors import UsageError

# conventional spec names (the bundled specs') → transformers' argument and output names
INPUT_ALIASES = {"tokens": "input_ids", "mask": "attention_mask", "positions": "position_ids",
                 "pixels": "pixel_values", "decoder_tokens": "decoder_input_ids"}
OUTPUT_ALIASES = {"hidden": "last_hidden_state", "pooled": "pooler_output", "encoder_hidden": "encoder_last_hidden_state"}


def transformers_module():
    """transformers, or UsageError (exit 2) naming the install: it is the reference, not a dependency."""
    try:
        import transformers
    except ImportError:
        raise UsageError("compare runs the reference implementation: install Hugging Face transformers "
                         "(pip install transformers)") from None
    return transformers


def known_classes() -> set[str]:
    """Every model class transformers' auto mappings name: the only names a config's `architectures` may pick."""
    from transformers.models.auto import modeling_auto
    names: set[str] = set()
    for attr in dir(modeling_auto):
        table = getattr(modeling_auto, attr)
        if attr.startswith("MODEL_") and attr.endswith("_MAPPING_NAMES") and isinstance(table, dict):
            for v in table.values():
                names.update(v if isinstance(v, (list, tuple)) else [v])
    return {n for n in names if isinstance(n, str)}


def reference_class(name: str) -> type:
    """transformers' class `name`, looked up only among its registered model classes."""
    transformers = transformers_module()
    if not isinstance(name, str) or name not in known_classes() or not hasattr(transformers, name):
        raise UsageError(f"`{name}` is not a model class of transformers {transformers.__version__} "
                         "(name one with --reference-class, e.g. LlamaForCausalLM)")
    return getattr(transformers, name)


def reference_config(cfg: dict):
    """transformers' config object for a config.json's contents, through the class registered for its
    `model_type` (from_dict: fields as transformers reads them; no code from the config)."""
    transformers_module()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    kind = cfg.get("model_type")
    if not isinstance(kind, str) or kind not in CONFIG_MAPPING:
        raise UsageError(f"config model_type {kind!r} is not one transformers knows")
    data = {k: v for k, v in cfg.items() if k not in ("auto_map", "custom_pipelines")}
    try:
        return CONFIG_MAPPING[kind].from_dict(data)
    except (TypeError, ValueError, KeyError) as e:
        raise UsageError(f"transformers refuses the config: {e}") from None


def perturb(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter moved by 0.1·N(0, 1): norm scales (initialised to 1), biases and zero-initialised
    tables then carry information, so a missing norm, bias or table shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@contextmanager
def quiet():
    """transformers' loading bar and notes (kernel fallbacks, ...) would interleave with our report."""
    from transformers.utils import logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def build_reference(cls: type, config, directory: str | None, seed: int) -> nn.Module:
    """The reference in float32 eval mode: `directory`'s weights (safetensors, read by transformers), or
    `seed`'s initialisation perturbed where `directory` is None."""
    # the plain implementations: eager attention, and experts run one by one (transformers' grouped kernel
    # refuses small widths); the reference's maths, not its fastest kernels
    config._attn_implementation, config._experts_implementation = "eager", "eager"
    with quiet():
        if directory is None:
            torch.manual_seed(seed)
            model = perturb(cls(config), seed)
        else:
            model = cls.from_pretrained(directory, config=config, local_files_only=True, use_safetensors=True,
                                        trust_remote_code=False, dtype=torch.float32)
    return model.float().eval()


@dataclass
class Pairing:
    inputs: dict[str, str] = field(default_factory=dict)     # spec input → the reference's argument
    left_out: list[str] = field(default_factory=list)        # spec inputs with a default, fed to neither
    outputs: dict[str, str] = field(default_factory=dict)    # spec output → the reference's output field
    unpaired: list[str] = field(default_factory=list)        # spec outputs the reference doesn't return


def pair_inputs(spec, forward, given: dict[str, str], wanted: tuple[str, ...] = ()) -> Pairing:
    """Each spec input a call must give, or `given` or `wanted` names → the argument of `forward` it is:
    `given`, the same name, or the alias. The others (optional, or with a default: masks, DINOv2's
    `bool_masked_pos`) are left out on both sides, which both read as "none". A required input with no
    partner is a UsageError listing what `forward` takes."""
    params = inspect.signature(forward).parameters
    accepts = [p for p in params if p not in ("self", "kwargs", "args")]
    unknown = [f"{k}" for k in given if k not in spec.ir.inputs]
    if unknown:
        raise UsageError(f"--input: spec `{spec.name}` has no input {', '.join(f'`{k}`' for k in unknown)} "
                         f"(its inputs: {', '.join(spec.ir.inputs)})")
    out = Pairing()
    for name in spec.ir.inputs:
        theirs = given.get(name) or (name if name in params else INPUT_ALIASES.get(name))
        if theirs is not None and theirs not in params:
            if name in given:
                raise UsageError(f"--input {name}={theirs}: the reference's forward takes no `{theirs}` "
                                 f"(it takes {', '.join(accepts)})")
            theirs = None
        optional = _may_leave_out(spec.ir, name)
        if optional and name not in given and name not in wanted:
            out.left_out.append(name)
        elif theirs is not None:
            out.inputs[name] = theirs
        elif optional:
            out.left_out.append(name)
        else:
            raise UsageError(f"spec input `{name}` has no counterpart in the reference's forward "
                             f"({', '.join(accepts)}): pair it with --input {name}=ARGUMENT")
    return out


def _may_leave_out(ir, name: str) -> bool:
    meta = ir.node(ir.inputs[name]).meta
    return bool(meta.get("optional")) or meta.get("default") is not None


def pair_outputs(pairing: Pairing, names, theirs: dict, given: dict[str, str]) -> None:
    """Each spec output → the reference output field it is: `given`, the same name, or the alias."""
    for name in given:
        if name not in names:
            raise UsageError(f"--output: the spec has no output `{name}` (its outputs: {', '.join(names)})")
        if given[name] not in theirs:
            raise UsageError(f"--output {name}={given[name]}: the reference returns no `{given[name]}` "
                             f"(it returns {', '.join(theirs) or 'no tensors'})")
    for name in names:
        field_ = given.get(name) or (name if name in theirs else OUTPUT_ALIASES.get(name))
        if field_ in theirs:
            pairing.outputs[name] = field_
        else:
            pairing.unpaired.append(name)


def tensors_of(output) -> dict[str, torch.Tensor]:
    """A transformers ModelOutput (or tuple/tensor) as its tensor fields by name."""
    if isinstance(output, torch.Tensor):
        return {"output": output}
    items = output.items() if hasattr(output, "items") else enumerate(output)
    return {str(k): v for k, v in items if isinstance(v, torch.Tensor)}


def is_padding_mask(spec, name: str) -> bool:
    """Whether spec input `name` is read as a padding mask (an op's `mask` port)."""
    return any(port == "mask" for _, port in spec.ir.consumers(spec.ir.inputs[name]))


def reference_inputs(spec, pairing: Pairing, inputs: dict) -> dict:
    """The reference's keyword arguments: padding masks as integers (1 = keep), as transformers' signatures
    take them (BERT's eager path subtracts them from 1); other inputs as they are (DINOv2's boolean
    `bool_masked_pos` stays boolean)."""
    return {theirs: inputs[ours].long() if inputs[ours].dtype == torch.bool and is_padding_mask(spec, ours)
            else inputs[ours] for ours, theirs in pairing.inputs.items()}


@dataclass
class Row:
    ours: str
    theirs: str
    shape: tuple
    error: float
    scale: float
    bound: float
    problem: str = ""
    at: tuple = ()          # the index of the largest error


    @property
    def ok(self) -> bool:
        return not self.problem and self.error <= self.bound


def compared(name: str, theirs: str, got: torch.Tensor, want: torch.Tensor, rtol: float,
             keep: torch.Tensor | None) -> Row:
    """Max abs error of `got` against `want` within `rtol` × max(1, the reference's largest magnitude), at
    the kept positions (`keep` [B, n]) where the output is per position."""
    if got.shape != want.shape:
        return Row(name, theirs, tuple(got.shape), math.inf, 0.0, 0.0,
                   f"shape {list(got.shape)}, the reference's {list(want.shape)}")
    got, want = got.detach().float(), want.detach().float()
    if keep is not None and tuple(got.shape[:2]) == tuple(keep.shape):
        got, want = got[keep], want[keep]
    if not want.numel():
        return Row(name, theirs, tuple(got.shape), 0.0, 0.0, rtol)
    diff = (got - want).abs().nan_to_num(nan=math.inf)
    flat = int(diff.argmax())
    at = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    scale = want.abs().max().item()
    # reshape: a transposed output (CLIP's and SigLIP's logits_per_image) is no contiguous view
    return Row(name, theirs, tuple(got.shape), diff.reshape(-1)[flat].item(), scale, rtol * max(1.0, scale), at=at)
