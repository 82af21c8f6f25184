"""An encoder–decoder exported with past keys and values (`graphformer export --with-past` of T5, Whisper): the
three graphs optimum's ORTModelForSeq2SeqLM / ORTModelForSpeechSeq2Seq load from one directory.

- `encoder_model.onnx`: the encoder's nodes alone. Inputs `input_ids` (the token ids an `embedding` reads;
  Whisper: `input_features`, a float input) and `attention_mask` (where the spec has the encoder's padding
  mask); output `last_hidden_state`, the one value every cross-attention attends to.
- `decoder_model.onnx`, the first step: `input_ids` [B, n], `encoder_attention_mask`, `encoder_hidden_states`
  → `logits`, `present.{i}.decoder.key/value` (the self-attention's keys and values) and
  `present.{i}.encoder.key/value` (the cross-attention's, projected once per sequence).
- `decoder_with_past_model.onnx`, every later step: `input_ids`, `encoder_attention_mask` and per layer
  `past_key_values.{i}.decoder.key/value`, `past_key_values.{i}.encoder.key/value` → `logits` and
  `present.{i}.decoder.key/value`. It reads no encoder output: the cross-attentions take the encoder pasts.

Two decoder files rather than optimum's other form, one `decoder_model_merged.onnx` switching on
`use_cache_branch`: optimum-onnx loads either, but the pair needs no control flow, and its first step needs
no dummy past — for which optimum makes [B, hidden_size / heads, 0] tensors, a width that is wrong for a T5
whose d_kv · heads ≠ d_model. The price is the decoder's weights stored twice.

Positions: optimum feeds a seq2seq decoder no position ids, so the step counts them from its past's length
(`prelude`: position_ids = past .. past + n − 1), which the learned position table (Whisper) reads, and the
relative position bias (T5) as queries at those positions against keys at 0 .. past + n − 1.

The plan is decoding.plan_decoder's with stages (the encoder, the cross-attentions, the position ops shifted
by the cache), the one torch generation reads; `Seq2Seq.of` adds the refusals of this interface (GF280–GF283).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from onnx import TensorProto, ValueInfoProto, helper, numpy_helper

from ...analysis.decoding import CacheSlot, DecoderPlan, plan_decoder
from ...base.diagnostics import Diagnostic, SpecError
from ...ir import IRGraph, IRNode
from ...ops import REGISTRY
from ...ops.base import CONTEXT
from ...ir.defaults import default_of
from .graph import filling, to_model, without_inputs
from .lower import NodeEmitter
from .past import INPUT_IDS, POSITION_IDS, past_name, present_name

ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE = "encoder_model.onnx", "decoder_model.onnx", \
    "decoder_with_past_model.onnx"
FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)
INPUT_FEATURES, ATTENTION_MASK, LAST_HIDDEN = "input_features", "attention_mask", "last_hidden_state"
ENCODER_HIDDEN, ENCODER_MASK = "encoder_hidden_states", "encoder_attention_mask"
PAST_LENGTH, TOTAL_LENGTH = "past_length", "total_length"


def is_encoder_decoder(ir: IRGraph) -> bool:
    """Whether some node attends to another sequence (a `CONTEXT` op: cross-attention)."""
    return any(n.op != "input" and REGISTRY[n.op].sequence == CONTEXT for n in ir.nodes())


@dataclass
class Seq2Seq:
    """An encoder–decoder's split into optimum's three graphs."""

    plan: DecoderPlan
    context: str                       # the node every cross-attention attends to: `last_hidden_state`
    source: str                        # the encoder's spec input: token ids or features
    source_name: str                   # its graph name: input_ids or input_features
    mask: str | None                   # the encoder's padding mask (spec input), when the spec has one
    cross: dict[str, int] = field(default_factory=dict)   # cross-attention node → its layer

    @classmethod
    def of(cls, ir: IRGraph) -> "Seq2Seq":
        """The split of `ir`; SpecError for a spec whose decoder a step cannot run (GF210–GF215) or whose
        encoder and decoder do not fit optimum's interface (GF280–GF283)."""
        plan = plan_decoder(ir, ("logits",), states=False)   # its inputs carry key/value pasts only
        crosses = [ir.node(c) for c in plan.cross]
        contexts = list(dict.fromkeys(c.inputs["context"] for c in crosses))
        if len(contexts) != 1:
            other = next(c for c in crosses if c.inputs["context"] == contexts[1])
            raise _refuse("GF280", f"`{other.name}` attends to `{contexts[1]}`, `{crosses[0].name}` to "
                          f"`{contexts[0]}`: optimum's decoder takes one encoder output (`{ENCODER_HIDDEN}`)", other,
                          "every cross-attention of the decoder attends to the encoder's one output")
        if len(crosses) != len(plan.slots):
            raise _refuse("GF281", f"the decoder has {len(plan.slots)} cached self-attentions and {len(crosses)} "
                          "cross-attentions: optimum's past holds one of each per layer", crosses[0],
                          "each decoder layer has one causal self-attention and one cross-attention")
        mask = _encoder_mask(ir, plan, crosses)
        sources = [k for k in plan.encoder_inputs if k != mask]
        if len(sources) != 1:
            raise _refuse("GF283", f"the encoder reads {len(sources)} inputs besides a padding mask "
                          f"({', '.join(f'`{k}`' for k in sources) or 'none'}): optimum's encoder takes one, token "
                          "ids or features", ir.node(ir.inputs[sources[1]]) if len(sources) > 1 else None,
                          "the encoder reads one input (and optionally a padding mask)")
        src = ir.node(ir.inputs[sources[0]])
        ids = any(REGISTRY[c.op].token_table for c, _ in ir.consumers(src.name))
        if not ids and src.shape.dtype != "float32":
            raise _refuse("GF283", f"the encoder's input `{sources[0]}` ({src.shape.dtype}) is neither token ids "
                          "an `embedding` reads nor float features", src, "optimum feeds input_ids or input_features")
        for k in (plan.mask, plan.positions):
            if k is not None and not ir.node(ir.inputs[k]).meta.get("optional"):
                raise _refuse("GF283", f"the decoder reads `{k}`, which optimum's seq2seq decoder is not fed "
                              "(it takes input_ids and the encoder's mask; positions follow from the past)",
                              ir.node(ir.inputs[k]), f"make `{k}` optional, or leave it out of the decoder")
        return cls(plan, contexts[0], sources[0], INPUT_IDS if ids else INPUT_FEATURES, mask,
                   {c.name: i for i, c in enumerate(crosses)})

    # ------------------------------------------------------------ the graphs

    def encoder_ir(self, ir: IRGraph) -> IRGraph:
        """The encoder alone: its inputs renamed as optimum feeds them, its output `last_hidden_state`."""
        keep = ir.ancestors([self.context])
        inputs = {self.source_name: ir.inputs[self.source]}
        if self.mask and ir.inputs[self.mask] in keep:
            inputs[ATTENTION_MASK] = ir.inputs[self.mask]
        return _subgraph(ir, keep, inputs, {LAST_HIDDEN: self.context})

    def decoder_ir(self, ir: IRGraph, with_past: bool) -> IRGraph:
        """One decoder step: the encoder's output an input (`encoder_hidden_states`; with past, read by nothing
        and left out), the decoder's optional inputs a step is not fed left out."""
        p = self.plan
        unfed = set(p.unfed) | {k for k in (p.mask, p.positions) if k is not None}
        defaulted = {k for k in unfed if default_of(ir, k) is not None}   # built in the graph (graph.filling)
        ir = filling(without_inputs(ir, unfed - defaulted), defaulted)
        keep = (ir.ancestors([ir.outputs["logits"]]) - p.encoder) | {self.context}
        inputs = {INPUT_IDS: ir.inputs[p.tokens]}
        if self.mask and any(n.inputs.get("mask") == ir.inputs[self.mask] for n in map(ir.node, self.cross)):
            inputs[ENCODER_MASK] = ir.inputs[self.mask]
        if not with_past:
            inputs[ENCODER_HIDDEN] = self.context
        return _subgraph(ir, keep, inputs, {"logits": ir.outputs["logits"]}, as_input=self.context)

    def step(self, ir: IRGraph, with_past: bool) -> "Step":
        past = "past"
        while past in ir.dims:  # a spec dim of that name would be conflated with the cache's length
            past += "_"
        return Step(self, ir, with_past, past)


def _encoder_mask(ir: IRGraph, plan: DecoderPlan, crosses: list[IRNode]) -> str | None:
    """The encoder input the cross-attentions read as `mask` (optimum's `encoder_attention_mask`, the encoder's
    `attention_mask`); GF282 for a cross-attention's `bias`, or a mask that is not an encoder input."""
    by_node = {v: k for k, v in ir.inputs.items()}
    masks = set()
    for c in crosses:
        if "bias" in c.inputs:
            raise _refuse("GF282", f"`{c.name}` adds a logit `bias`, which optimum's decoder is not fed", c,
                          "a cross-attention reads the encoder's output and its padding mask only")
        if "mask" in c.inputs:
            k = by_node.get(c.inputs["mask"])
            if k is None or k not in plan.encoder_inputs:
                raise _refuse("GF282", f"`{c.name}` reads `{c.inputs['mask']}` as its mask, which is not the encoder's "
                              "input mask: optimum feeds the encoder's `attention_mask` as the decoder's "
                              f"`{ENCODER_MASK}`", c, "mask the cross-attention with the encoder's padding mask input")
            masks.add(k)
    if len(masks) > 1:
        raise _refuse("GF282", f"the cross-attentions read {len(masks)} different masks; optimum feeds one", crosses[0],
                      "mask every cross-attention with the encoder's one padding mask input")
    if masks:
        return masks.pop()
    mask_inputs = [k for k in plan.encoder_inputs
                   if all(port == "mask" for _, port in ir.consumers(ir.inputs[k]))]
    return mask_inputs[0] if len(mask_inputs) == 1 else None


def _subgraph(ir: IRGraph, keep: set[str], inputs: dict[str, str], outputs: dict[str, str],
              as_input: str | None = None) -> IRGraph:
    """The nodes of `ir` in `keep`, graph inputs named by `inputs` (name → node), `as_input` turned into an
    input node (its value comes from outside)."""
    out = replace(ir, inputs=inputs, outputs=outputs, output_spans={}, _nodes={}, _succ={}, _pred={}, _order=None,
                  _ties=None)
    for name in ir.names():
        if name not in keep:
            continue
        node = ir.node(name)
        if name == as_input:
            node = replace(node, op="input", attrs=None, inputs={}, meta={"dtype": node.shape.dtype})
        out.add(node)
    out.connect()
    return out


@dataclass
class Step:
    """What the lowerings ask of a decoder step (the questions past.Past answers for a causal decoder)."""

    s2s: Seq2Seq
    ir: IRGraph
    with_past: bool
    past_dim: str

    @property
    def plan(self) -> DecoderPlan:
        return self.s2s.plan

    @property
    def position_ids(self) -> str:
        return POSITION_IDS       # computed by the prelude

    def slot(self, node: str) -> int | None:
        s = self.plan.slots.get(node)
        return None if s is None else s.layer

    def cross_slot(self, node: str) -> int | None:
        return self.s2s.cross.get(node)

    def renamed_inputs(self) -> dict[str, str]:
        return {}                 # the decoder's IR names its inputs as the graph does

    def names(self) -> set[str]:
        return {POSITION_IDS, PAST_LENGTH, TOTAL_LENGTH} | {
            f(i, f"{side}.{kind}") for i in range(len(self.plan.slots)) for f in (past_name, present_name)
            for side in ("decoder", "encoder") for kind in ("key", "value")}

    def _slots(self) -> list[tuple[CacheSlot, tuple[int, int]]]:
        """Per layer: the self-attention's slot and the cross-attention's (heads, head width)."""
        out = []
        for slot, node in zip(self.plan.slots.values(), self.s2s.cross):
            n = self.ir.node(node)
            inner = n.attrs.dim or self.ir.node(n.inputs["query"]).shape.shape[-1].value
            out.append((slot, (n.attrs.heads, inner // n.attrs.heads)))
        return out

    def _encoder_length(self) -> str | int:
        d = self.ir.node(self.s2s.context).shape.shape[1]
        return d.value if d.is_const else str(d)

    def _values(self, name, length, with_self: bool, with_cross: bool) -> list[ValueInfoProto]:
        b, out = str(self.plan.batch), []
        for slot, (heads, width) in self._slots():
            for kind in ("key", "value"):
                if with_self:
                    out.append(helper.make_tensor_value_info(name(slot.layer, f"decoder.{kind}"), TensorProto.FLOAT,
                                                             [b, slot.kv_heads, length, slot.widths[kind]]))
            for kind in ("key", "value"):
                if with_cross:
                    out.append(helper.make_tensor_value_info(name(slot.layer, f"encoder.{kind}"), TensorProto.FLOAT,
                                                             [b, heads, self._encoder_length(), width]))
        return out

    def inputs(self, ir: IRGraph) -> list[ValueInfoProto]:
        """The past inputs, per layer the decoder's key and value, then the encoder's (optimum's order)."""
        return self._values(past_name, self.past_dim, True, True) if self.with_past else []

    def outputs(self) -> list[ValueInfoProto]:
        n = str(self.plan.seq)
        return self._values(present_name, f"{self.past_dim} + {n}" if self.with_past else n, True, not self.with_past)

    def cache_names(self, layer: int, kind: str) -> tuple[str | None, str]:
        return (past_name(layer, f"decoder.{kind}") if self.with_past else None,
                present_name(layer, f"decoder.{kind}"))

    def cross_cache(self, ctx: NodeEmitter, layer: int, project: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        """A cross-attention's keys and values (B, s, h, hd): the encoder pasts with past, else projected from
        the encoder's output (`project`) and returned as the encoder presents (B, h, s, hd)."""
        if self.with_past:
            return tuple(ctx.op("Transpose", [past_name(layer, f"encoder.{kind}")], f"{kind}_past", perm=[0, 2, 1, 3])
                         for kind in ("key", "value"))
        kv = project()
        for x, kind in zip(kv, ("key", "value")):
            ctx.state.nodes.append(helper.make_node(
                "Transpose", [x], [present_name(layer, f"encoder.{kind}")], perm=[0, 2, 1, 3],
                name=ctx.state.unique(f"{ctx.path}/Transpose_present_{kind}")))
        return kv

    def prelude(self, state) -> list:
        """position_ids [1, n] = past .. past + n − 1, the past's length (a scalar) and past + n."""
        nodes = []

        def op(kind: str, ins: list[str], out: str | None = None, value=None, **attrs) -> str:
            name = state.unique(f"step/{kind}" + (f"_{out}" if out else ""))
            if value is not None:
                attrs["value"] = numpy_helper.from_array(np.asarray(value, dtype=np.int64), name="")
            nodes.append(helper.make_node(kind, ins, [out or name], name=name, **attrs))
            return out or name

        n = op("Shape", [INPUT_IDS], start=1, end=2)                                             # [1]
        past = op("Shape", [past_name(0, "decoder.key")], start=2, end=3) if self.with_past else \
            op("Constant", [], value=[0])
        axis = op("Constant", [], value=[0])
        past_s = op("Squeeze", [past, axis], PAST_LENGTH)
        total = op("Squeeze", [op("Add", [past, n]), axis], TOTAL_LENGTH)
        pos = op("Range", [past_s, total, op("Constant", [], value=1)])
        op("Reshape", [pos, op("Concat", [op("Constant", [], value=[1]), n], axis=0)], POSITION_IDS)   # [1, n]
        return nodes

    def relative_positions(self, ctx: NodeEmitter) -> str:
        """key − query [n, past + n]: the step's queries at past .. past + n − 1, keys at every position."""
        queries = ctx.op("Reshape", [POSITION_IDS, ctx.const([-1, 1], "queries", np.int64)], "queries")   # [n, 1]
        keys = ctx.op("Range", [ctx.const(0, "zero", np.int64), TOTAL_LENGTH, ctx.const(1, "one", np.int64)], "keys")
        keys = ctx.op("Unsqueeze", [keys, ctx.const([0], "row", np.int64)], "keys")                    # [1, m]
        return ctx.op("Sub", [keys, queries], "distance")


def plan(ir: IRGraph) -> Seq2Seq:
    """`Seq2Seq.of`: the split, or a SpecError before any weights are read."""
    return Seq2Seq.of(ir)


def to_models(spec, weights: dict[str, np.ndarray], opset: int, tensor=None) -> dict[str, object]:
    """The three ModelProtos by file name (weights: resolved, as weights.resolve returns them)."""
    s2s = Seq2Seq.of(spec.ir)
    ir = spec.ir
    return {ENCODER_FILE: to_model(s2s.encoder_ir(ir), weights, opset, tensor),
            DECODER_FILE: to_model(s2s.decoder_ir(ir, False), weights, opset, tensor, past=s2s.step(ir, False)),
            DECODER_WITH_PAST_FILE: to_model(s2s.decoder_ir(ir, True), weights, opset, tensor,
                                              past=s2s.step(ir, True))}


def write(spec, weights: dict[str, np.ndarray], opset: int, directory: str, external: bool) -> list:
    """Write the three graphs into `directory` (each file atomically, its weights inline or in a data file
    beside it); the `Written` of each."""
    from .write import write_external, write_inline
    s2s = Seq2Seq.of(spec.ir)
    ir, writer = spec.ir, write_external if external else write_inline
    parts = [(ENCODER_FILE, s2s.encoder_ir(ir), None), (DECODER_FILE, s2s.decoder_ir(ir, False), s2s.step(ir, False)),
             (DECODER_WITH_PAST_FILE, s2s.decoder_ir(ir, True), s2s.step(ir, True))]
    return [writer(part, weights, opset, os.path.join(directory, name), past) for name, part, past in parts]


def _refuse(code: str, message: str, node: IRNode | None, help: str) -> SpecError:
    return SpecError([Diagnostic(code, message, node.span if node else None, node=node.name if node else None,
                                 help=help)])
