"""Export with past keys and values (`graphformer export --with-past`): a causal decoder's step, in the
interface of optimum's and onnxruntime-genai's decoders.

Inputs `input_ids` [B, n]; `attention_mask` [B, past + n] over the cached and the new keys (where the spec
has a padding mask); `position_ids` [B, n] (where rotary attention or a position table reads positions);
and per cached attention `past_key_values.{i}.key` / `.value` [B, kv_heads, past, head_dim] (a latent
attention's: its latent [B, 1, past, kv_rank] and rotary key [B, 1, past, rope_dim]). Outputs: the
spec's (`logits`, ...) and `present.{i}.key` / `.value` [B, kv_heads, past + n, head_dim], the past with
this step's keys and values appended. The prompt is the same graph at past = 0.

A recurrence (Mamba's causal `conv1d` and `selective_scan`: the plan's state slots, `decoding.StateSlot`)
reads `past_states.{j}.{name}` [B, *shape] (zeros before the prompt) and returns `present_states.{j}.{name}`,
its state after this step's tokens, fixed in size; a model with state slots and no attention has no past
length, and its `attention_mask` covers this step's tokens only [B, n]. A hybrid (Jamba: attention layers and
Mamba layers) has both: its `attention_mask` covers past + n for the attentions, and the per-position ops that
read it too (`apply_mask` zeroing the padding's states) read its last n columns, the step's own tokens, as
transformers' `create_recurrent_attention_mask` trims it (`prelude`).

`decoding.plan_decoder` (the plan `graphformer.generate` reads too, here with `stages=False`: the whole
graph is one step) says which attention nodes get a slot (i counts them in graph order) or refuses the spec
(GF210–GF213, GF293); the lowerings of `attention` and `positional` (core.py), `conv1d` (audio.py) and
`selective_scan` (scan.py) read `GraphState.past` and call the emitters here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, ValueInfoProto, helper, numpy_helper

from ...analysis.decoding import DecoderPlan, StateSlot, plan_decoder
from ...base.errors import ExportError
from ...ir import IRGraph
from ...ops import REGISTRY
from ...ops.base import POSITION
from .lower import ELEM_TYPES, NodeEmitter

INPUT_IDS, ATTENTION_MASK, POSITION_IDS = "input_ids", "attention_mask", "position_ids"
STEP_MASK = "attention_mask/step"    # the mask's last n columns: this step's tokens (per-position readers)


def past_name(layer: int, kind: str) -> str:
    return f"past_key_values.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    return f"present.{layer}.{kind}"


def past_state_name(layer: int, name: str) -> str:
    return f"past_states.{layer}.{name}"


def present_state_name(layer: int, name: str) -> str:
    return f"present_states.{layer}.{name}"


@dataclass
class Past:
    """The plan of an export with past keys and values, and the names of its graph inputs."""

    plan: DecoderPlan
    past_dim: str          # the dim_param of the cached length
    step_mask: frozenset[str] = frozenset()   # nodes that read the mask over this step's tokens only

    @classmethod
    def of(cls, ir: IRGraph) -> "Past":
        """The step of `ir`; SpecError (GF210–GF213) for a spec that is not a causal decoder."""
        plan = plan_decoder(ir, stages=False)
        past = "past"
        while past in ir.dims:  # a spec dim of that name would be conflated with the cache's length
            past += "_"
        return cls(plan, past, _step_mask_readers(ir, plan))

    @property
    def position_ids(self) -> str | None:
        """The graph input holding positions, if anything reads them."""
        return POSITION_IDS if self.plan.positions or self.plan.uses_positions else None

    def slot(self, node: str) -> int | None:
        s = self.plan.slots.get(node)
        return None if s is None else s.layer

    def state(self, node: str) -> StateSlot | None:
        """A recurrent node's state slot (its states in `past_state_name` / `present_state_name`)."""
        return self.plan.states.get(node)

    def renamed_inputs(self) -> dict[str, str]:
        """Spec input → graph input name."""
        p = self.plan
        out = {p.tokens: INPUT_IDS}
        if p.mask:
            out[p.mask] = ATTENTION_MASK
        if p.positions:
            out[p.positions] = POSITION_IDS
        return out

    def names(self) -> set[str]:
        return {name(s.layer, kind) for s in self.plan.slots.values() for name in (past_name, present_name)
                for kind in ("key", "value")} | {INPUT_IDS, ATTENTION_MASK, POSITION_IDS} | \
            {name(s.layer, k) for s in self.plan.states.values() for k in s.states
             for name in (past_state_name, present_state_name)}

    def inputs(self, ir: IRGraph) -> list[ValueInfoProto]:
        p, b, n = self.plan, str(self.plan.batch), str(self.plan.seq)

        def dtype(spec_input: str | None, default: str = "int64") -> int:
            return ELEM_TYPES[ir.node(ir.inputs[spec_input]).shape.dtype if spec_input else default]

        out = [helper.make_tensor_value_info(INPUT_IDS, dtype(p.tokens), [b, n])]
        if p.mask:     # over the cached keys too; with states alone, over this step's tokens
            out.append(helper.make_tensor_value_info(ATTENTION_MASK, dtype(p.mask),
                                                     [b, f"{self.past_dim} + {n}" if p.slots else n]))
        if self.position_ids:
            out.append(helper.make_tensor_value_info(POSITION_IDS, dtype(p.positions), [b, n]))
        out += self._cache(past_name, self.past_dim) + self._states(past_state_name)
        return out

    def outputs(self) -> list[ValueInfoProto]:
        return self._cache(present_name, f"{self.past_dim} + {self.plan.seq}") + self._states(present_state_name)

    def _states(self, name) -> list[ValueInfoProto]:
        return [helper.make_tensor_value_info(name(s.layer, k), TensorProto.FLOAT, [str(self.plan.batch), *st.shape])
                for s in self.plan.states.values() for k, st in s.states.items()]

    # ------------------------------------------------------------ what the lowerings ask every step
    # (an encoder–decoder's step, seq2seq.py, answers the same questions)

    def cache_names(self, layer: int, kind: str) -> tuple[str | None, str]:
        """The graph input holding slot `layer`'s cached `kind` (None: no past) and the output it returns."""
        return past_name(layer, kind), present_name(layer, kind)

    def cross_slot(self, node: str) -> int | None:
        """A cross-attention's layer: none here (the plan refuses them, GF211)."""
        return None

    def prelude(self, state) -> list:
        """Nodes the step computes before any lowering (positions are an input): where per-position ops read
        the padding mask beside cached attentions, its last n columns (STEP_MASK), which those ops read."""
        if not self.step_mask:
            return []
        state.retarget |= {node: {self.plan.mask: STEP_MASK} for node in self.step_mask}
        n, start, ends, axes = (state.unique(f"step/{tag}") for tag in ("Shape_n", "Neg_n", "Constant_end",
                                                                          "Constant_axis"))

        def const(name: str, value: int):
            return helper.make_node("Constant", [], [name], name=name,
                                    value=numpy_helper.from_array(np.array([value], np.int64), name=""))
        return [helper.make_node("Shape", [INPUT_IDS], [n], name=n, start=1, end=2),          # [1]: n
                helper.make_node("Neg", [n], [start], name=start),
                const(ends, np.iinfo(np.int64).max), const(axes, 1),
                helper.make_node("Slice", [ATTENTION_MASK, start, ends, axes], [STEP_MASK],
                                 name=state.unique("step/Slice_mask"))]                      # [B, n]

    def relative_positions(self, ctx: NodeEmitter) -> str:
        raise ExportError("a relative position bias in a decoder step needs an encoder–decoder's step (seq2seq.py)")

    def _cache(self, name, length: str) -> list[ValueInfoProto]:
        return [helper.make_tensor_value_info(name(s.layer, kind), TensorProto.FLOAT,
                                              [str(self.plan.batch), s.kv_heads, length, s.widths[kind]])
                for s in self.plan.slots.values() for kind in ("key", "value")]


def _step_mask_readers(ir: IRGraph, plan: DecoderPlan) -> frozenset[str]:
    """The per-position nodes reading the padding mask where cached attentions read it too: in a step graph the
    mask covers past + n keys, and these read only the step's n tokens of it."""
    if not (plan.mask and plan.slots):
        return frozenset()
    return frozenset(c.name for c, _ in ir.consumers(ir.inputs[plan.mask])
                     if c.name not in plan.slots and REGISTRY[c.op].sequence == POSITION)


def carry_states(ctx: NodeEmitter, slot: StateSlot, name: str, last: str) -> None:
    """`present_states.{layer}.{name}` is value `last` (a recurrence's state after this step's tokens)."""
    ctx.state.nodes.append(helper.make_node("Identity", [last], [present_state_name(slot.layer, name)],
                                            name=ctx.state.unique(f"{ctx.path}/Identity_present_{name}")))


def extend(ctx: NodeEmitter, layer: int, k: str, v: str) -> tuple[str, str]:
    """Append this step's keys and values (B, n, kv, hd) to the cached ones. The concatenations are the
    `present.{layer}.*` outputs; returned are all of them in the layout they came in: (B, past + n, kv, hd)."""
    out = []
    for x, kind in ((k, "key"), (v, "value")):
        new = ctx.op("Transpose", [x], f"{kind}_new", perm=[0, 2, 1, 3])                   # (B, kv, n, hd)
        past, present = ctx.state.past.cache_names(layer, kind)
        join = helper.make_node("Concat", [past, new], [present], axis=2,
                                name=ctx.state.unique(f"{ctx.path}/Concat_present_{kind}")) if past else \
            helper.make_node("Identity", [new], [present], name=ctx.state.unique(f"{ctx.path}/Identity_present_{kind}"))
        ctx.state.nodes.append(join)   # no past (an encoder–decoder's first step): this step's keys alone
        out.append(ctx.op("Transpose", [present], f"{kind}_all", perm=[0, 2, 1, 3]))      # (B, past + n, kv, hd)
    return out[0], out[1]


def causal_offset(ctx: NodeEmitter, scores: str) -> str:
    """The length of the past, m − n of the scores (B, h, n, m), as a scalar: query i is at key past + i."""
    m = ctx.shape(scores, 3, 4, "keys")
    n = ctx.shape(scores, 2, 3, "queries")
    past = ctx.op("Sub", [m, n], "past")                                                     # [1]
    return ctx.op("Squeeze", [past, ctx.const([0], "past_axis", np.int64)], "past")          # scalar (Trilu's k)
