"""A built model's graph run in two stages: an encoder (run once per sequence) and a decoder (run at every
generation step), each compiled to code over the model's own modules (plan.py), so no parameter is copied.

Which node belongs to which stage is the caller's decision (graphformer/backends/torch/generation.py reads it from the
IR); this module checks that the split runs, hands the encoder's values across, and compiles both stages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import plan as _plan


class SplitError(ValueError):
    """The graph cannot run as two stages along the requested split."""


@dataclass
class Stages:
    encoder_inputs: list[str]      # spec inputs (IR input nodes) the encoder reads
    handed_over: list[str]         # values the encoder computes and the decoder reads
    decoder_inputs: list[str]      # spec inputs the decoder reads, in `decode`'s argument order
    _encode: Callable
    _decode: Callable

    def encode(self, model, inputs: dict) -> dict:
        """{value: tensor} for every value in `handed_over`, from the encoder inputs by IR input name."""
        return self._encode(model._modules, *[inputs.get(k) for k in self.encoder_inputs])

    def decode(self, model, inputs: dict, handed: dict) -> dict:
        """The decoder's outputs (by spec output name) from its inputs and the encoder's handed values."""
        return self._decode(model._modules, *[inputs.get(k) for k in self.decoder_inputs],
                            *[handed[k] for k in self.handed_over])


def split(model, encoder: set[str], outputs: dict[str, str]) -> Stages:
    """Compile the two stages of `model`: `encoder` names the nodes of the first stage (IR inputs
    included); the decoder is every other node some output in `outputs` ({spec name: node}) needs. Raises
    SplitError where one block call holds nodes of both stages (it runs as one unit)."""
    ir = model.spec.ir
    order = ir.nodes()
    root = _plan.scopes(ir, order)
    needed = ir.ancestors(outputs.values())
    enc_units, dec_units = [], []
    for u in root.units:
        members = u.members if isinstance(u, _plan.Scope) else {u.name}
        members &= needed
        if not members:
            continue
        sides = {m in encoder for m in members}
        if len(sides) > 1:
            raise SplitError(f"block call `{u.path}` holds nodes of both the encoder and the decoder: it cannot run "
                             "once per sequence")
        (enc_units if sides.pop() else dec_units).append(u)
    dec_nodes = set().union(*[u.members if isinstance(u, _plan.Scope) else {u.name} for u in dec_units])
    enc_nodes = set().union(*[u.members if isinstance(u, _plan.Scope) else {u.name} for u in enc_units])
    crossing = [v for v in (n.name for n in order) if v in encoder and any(
        c.name in dec_nodes for c, _ in ir.consumers(v))]
    inputs = set(ir.inputs.values())
    handed = [v for v in crossing if v not in inputs]
    decoder_inputs = [v for v in ir.inputs.values() if v not in encoder and any(
        c.name in dec_nodes for c, _ in ir.consumers(v))] + [v for v in crossing if v in inputs]
    encoder_inputs = [v for v in ir.inputs.values() if any(c.name in enc_nodes for c, _ in ir.consumers(v))]
    masks = _plan.mask_values(ir, order, model.node_module)
    enc_src = _plan.generate(_stage(root, enc_units), False, model.node_module, root_outputs={v: v for v in handed},
                             root_inputs=encoder_inputs, mask_values=masks)
    dec_src = _plan.generate(_stage(root, dec_units), False, model.node_module, root_outputs=outputs,
                             root_inputs=decoder_inputs + handed, mask_values=masks)
    return Stages(encoder_inputs, handed, decoder_inputs, _plan.compile_run(enc_src), _plan.compile_run(dec_src))


def _stage(root: _plan.Scope, units: list) -> _plan.Scope:
    """The root scope restricted to `units` (node lookups still go through the whole tree)."""
    return _plan.Scope("", items=root.items, children=root.children, members=root.members, owner=root.owner,
                       units=units)
