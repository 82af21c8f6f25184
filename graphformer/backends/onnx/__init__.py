"""The ONNX backend: a ModelProto straight from the IR (no tracing).

`to_onnx(spec, weights)` resolves the weights (`weights.resolve`) and lowers the IR op by op
(`graph.to_model`). `export_onnx(spec, weights, path)` writes the same model atomically, streaming the
weights from their arrays into the file (`write.py`); past `external_data_threshold` bytes (default:
just under protobuf's 2 GiB limit) they go to `<file>.<hash>.data` beside it, so a model far larger than 2 GB
is never held twice in memory. `with_past=True` exports a causal decoder's step instead, reading and
returning past keys and values (`past.py`). An input the spec declares `optional: true` (a padding
`mask`, `positions`) is in the model only when `inputs` names it (or with `with_past`, whose inputs are
fixed): by default the model takes the required inputs alone and computes what the torch build computes
without the optional ones.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

from onnx import ModelProto, defs

from ...analysis import memory
from ...base.fileio import resolve_output
from ...analysis.decoding import plan_decoder
from ...base.diagnostics import did_you_mean
from ...ir.defaults import default_of
from .graph import MIN_OPSET, ExportError, exported_nodes, filling, to_model, without_inputs
from .past import Past
from . import seq2seq
from .lower import LOWERINGS, custom_node
from .weights import resolve
from .write import Written, write_external, write_inline

__all__ = ["export_onnx", "to_onnx", "check_exact", "plan_past", "exported_ir", "to_model", "Written", "ExportError",
           "to_seq2seq", "export_seq2seq",
           "LOWERINGS", "EXTERNAL_DATA_THRESHOLD",
           "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
# Protobuf cannot serialise a message of 2 GiB or more; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26


def check_opset(opset: int) -> int:
    latest = defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= latest:
        raise ExportError(f"opset {opset} is not supported: choose {MIN_OPSET}..{latest} "
                          f"(LayerNormalization needs {MIN_OPSET}; the installed onnx knows up to {latest})")
    return opset


def check_exact(spec, opset: int, custom_ops: bool = False) -> None:
    """SpecError (GF233) for a node that this opset can't express as torch computes it, and (GF254) for a
    plugin op without an ONNX lowering unless `custom_ops`; reads the IR only."""
    from ...base.diagnostics import SpecError
    from .vision import opset_refusals
    refused = opset_refusals(spec.ir, opset) + ([] if custom_ops else _unlowered_plugin_ops(spec.ir))
    if refused:
        raise SpecError(refused)


def _unlowered_plugin_ops(ir) -> list:
    """GF254 for each node of a plugin op that has no ONNX lowering (built-in ops all have one)."""
    from ...base.diagnostics import Diagnostic
    from ...ops import plugins
    nodes = list(ir.nodes()) + [n for body in ir.bodies for n in body.ir.nodes()]
    return [Diagnostic("GF254", f"op `{n.op}` (plugin {plugins.origin(n.op)}) has no ONNX lowering, so `{n.name}` "
                       "cannot be exported", n.span, node=n.name,
                       help=f"the plugin can add one (`Plugin(onnx=...)`, docs/plugins.md); torch builds `{n.op}`")
            for n in nodes if n.op != "input" and plugins.is_plugin(n.op) and n.op not in LOWERINGS]


def plan_past(spec) -> Past:
    """What an export with past keys and values reads and returns; `SpecError` (GF210–GF213) for a spec that
    is not a causal decoder. An encoder–decoder is three graphs instead (`to_seq2seq`, `export_seq2seq`)."""
    if seq2seq.is_encoder_decoder(spec.ir):
        seq2seq.plan(spec.ir)   # a spec that does not decode at all is refused as such (GF210–GF215, GF280–GF283)
        raise ExportError(f"`{spec.name}` is an encoder–decoder: with past keys and values it is three graphs "
                          f"({', '.join(seq2seq.FILES)}): to_seq2seq / export_seq2seq, or graphformer export "
                          "--with-past -o DIR/")
    return Past.of(spec.ir)


def to_seq2seq(spec, module_or_weights: Any = None, opset: int = DEFAULT_OPSET, *, seed: int | None = 0,
               weights_map: str | None = None) -> dict[str, ModelProto]:
    """An encoder–decoder with past keys and values, in memory: the encoder, the decoder's first step and
    its later steps, by the file names optimum loads (seq2seq.py). Arguments as `to_onnx`."""
    check_opset(opset)
    check_exact(spec, opset)
    seq2seq.plan(spec.ir)
    return seq2seq.to_models(spec, resolve(spec, module_or_weights, seed, weights_map), opset)


def export_seq2seq(spec, module_or_weights: Any, directory: str | os.PathLike, opset: int = DEFAULT_OPSET, *,
                   seed: int | None = 0, weights_map: str | None = None,
                   external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[Written]:
    """Write `to_seq2seq`'s three graphs into `directory` (made if missing), each file atomically; weights
    over `external_data_threshold` bytes go to a data file beside each graph. Returns what was written."""
    check_opset(opset)
    check_exact(spec, opset)
    seq2seq.plan(spec.ir)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    if module_or_weights is None or isinstance(module_or_weights, (str, os.PathLike)):
        memory.require(memory.param_bytes(spec.ir), f"exporting `{spec.name}`'s weights")
    weights = resolve(spec, module_or_weights, seed, weights_map)
    external = sum(a.nbytes for a in weights.values()) > external_data_threshold
    return seq2seq.write(spec, weights, opset, directory, external)


def exported_ir(spec, inputs=None, with_past: bool = False):
    """The IR to lower: `spec`'s, with the graph inputs `inputs` (spec input names) asks for besides the
    required ones. None: the inputs with a default that some node reads, no optional one. A left-out optional
    input is absent (`without_inputs`), a left-out defaulted one built in the graph (`filling`). With past keys
    and values the step's inputs are fixed (past.py)."""
    if inputs is None:
        names = None
    elif isinstance(inputs, str):
        names = [inputs]
    elif isinstance(inputs, (list, tuple, set, frozenset)) and all(isinstance(k, str) for k in inputs):
        names = list(inputs)
    else:
        raise ExportError(f"inputs must be a list of the spec's input names, not {inputs!r}")
    if with_past:
        if names:
            raise ExportError("inputs and with_past together: a decoder step's inputs are fixed (input_ids, "
                              "attention_mask, position_ids, past_key_values.*)")
        unfed = set(plan_past(spec).plan.unfed)   # an optional prefix-LM `prefix`: left out of the step
        defaulted = {k for k in unfed if default_of(spec.ir, k) is not None}
        return filling(without_inputs(spec.ir, unfed - defaulted), defaulted)
    ir = spec.ir
    defaulted = {k for k in ir.inputs if default_of(ir, k) is not None}
    if names is None:   # what a caller hands over: a tokenizer's token_type_ids too
        names = [k for k in defaulted if ir.consumers(ir.inputs[k])]
    for name in names:
        if name not in spec.ir.inputs:
            hint = did_you_mean(name, spec.ir.inputs)
            raise ExportError(f"`{name}` is not an input of `{spec.name}`" + (f" (did you mean `{hint}`?)" if hint
                              else "") + f": its inputs are {', '.join(spec.ir.inputs)}")
    optional = {k for k, v in ir.inputs.items() if ir.node(v).meta.get("optional")}
    return filling(without_inputs(ir, optional - set(names)), defaulted - set(names))


def to_onnx(spec, module_or_weights: Any = None, opset: int = DEFAULT_OPSET, *, seed: int | None = 0,
            weights_map: str | None = None, with_past: bool = False, inputs=None, custom_ops: bool = False) -> ModelProto:
    """The ONNX model of `spec` (a `graphformer.Spec`), in memory, weights included.

    `module_or_weights`: a built nn.Module, a state dict, a .safetensors path, or None for the torch
    backend's seeded init (`seed`). `weights_map` converts a reference's state dict first (the name of
    one of the spec's `weight_maps`). `inputs`: the optional or defaulted spec inputs to take (`["mask"]`: the
    required inputs and mask; `[]`: the required ones only); default: the required inputs and the defaulted
    ones some node reads (BERT's token_type_ids). `with_past`: a decoder step with past keys and values (past.py).
    `custom_ops`: a plugin op without an ONNX lowering becomes a node of the plugin's own domain
    (`lower.custom_node`) instead of an error (GF254).
    """
    check_opset(opset)
    check_exact(spec, opset, custom_ops)
    ir = exported_ir(spec, inputs, with_past)
    past = plan_past(spec) if with_past else None
    weights = resolve(spec, module_or_weights, seed, weights_map)
    with _custom_ops(custom_ops):
        return to_model(ir, weights, opset, past=past)


def export_onnx(spec, module_or_weights: Any, path: str | os.PathLike, opset: int = DEFAULT_OPSET, *,
                seed: int | None = 0, weights_map: str | None = None,
                external_data_threshold: int = EXTERNAL_DATA_THRESHOLD, with_past: bool = False,
                inputs=None, custom_ops: bool = False) -> Written:
    """Write the ONNX model of `spec` to `path` atomically (arguments as `to_onnx`).

    Weights over `external_data_threshold` bytes go to `<path>.<hash>.data` beside it (write.py). Returns what was written.
    """
    check_opset(opset)
    check_exact(spec, opset, custom_ops)
    ir = exported_ir(spec, inputs, with_past)
    past = plan_past(spec) if with_past else None
    path = os.fspath(path)
    resolve_output(path)  # a bad output fails before the (possibly slow) weights, not after
    if module_or_weights is None or isinstance(module_or_weights, (str, os.PathLike)):
        memory.require(memory.param_bytes(spec.ir), f"exporting `{spec.name}`'s weights")
    weights = resolve(spec, module_or_weights, seed, weights_map)
    with _custom_ops(custom_ops):
        if sum(a.nbytes for a in weights.values()) <= external_data_threshold:
            return write_inline(ir, weights, opset, path, past)
        return write_external(ir, weights, opset, path, past)


@contextmanager
def _custom_ops(on: bool):
    """While exporting with `custom_ops`: a plugin op without a lowering lowers to a custom-domain node."""
    LOWERINGS.fallback = custom_node if on else None
    try:
        yield
    finally:
        LOWERINGS.fallback = None
