"""The one plan of token-by-token decoding, read from the IR: can a graph run step by step over the new tokens
only, with a key/value cache per causal self-attention and a carried state per recurrence, and how.

`plan_decoder(ir)` finds the token input (the one a token table reads and every cached or recurrent node
depends on), the optional padding-mask and positions inputs, each causal attention's cache slot (in graph
order), each recurrent node's state slot, and, for an encoder–decoder, the encoder: the nodes that do not
depend on the tokens, run once per sequence. Or it refuses the spec with a diagnostic at the node or input to
blame, in one vocabulary for every reader: GF210 (no causal attention and no recurrence), GF211 (an attention
a cache cannot serve), GF212 (an input a step cannot feed), GF213 (an op that combines positions, or a
recurrence in an encoder–decoder's ONNX steps), GF215 (no such output to sample from), GF289 (a required
prefix-LM `prefix` in one step graph), GF323 (a required `blocks` input: no decoder has its values), GF293 (a recurrent op that cannot step: a convolution that reads later
frames).

Its readers: `graphformer.generate` (generation.py), `graphformer export --with-past` (backends/onnx/past.py:
one graph per step, so `stages=False`: no encoder stage, no offset logit bias; past.py carries the states as
`past_states.*` inputs; an encoder–decoder's steps, seq2seq.py, do not: `states=False`) and `summary`'s KV
cache and recurrent state (`cache_slots`, `node_carry`, budget.py). It reads op traits (`OpDef.sequence`,
`carry`, `token_table`, `max_len`), never op names, and imports neither torch nor onnx, so every reader
refuses a spec before building or reading any weights.

A step is exact when every node it runs computes each position from that position alone (`POSITION` with the
tokens on axis 1, or anywhere for an element-wise op: `tp` THROUGH; `AXIS` along another axis than the token
axis; `MOVES`: a transpose, after which the plan follows the token axis to where it went), or is causal
attention over its cache, a position table or bias offset by the cache's length (`OFFSET`), a cross-attention
over the encoder's output (`CONTEXT`), or a recurrence (`RECURRENT`) whose `carry` trait declares the state it
carries from the last position to the next, running along the token axis.

Why states are declared by the ops (`OpDef.carry` → `Carry`) rather than known here: the planner proves only
that a step is exact given each recurrent node's declared state (the recurrence runs along the token axis, and
the op itself says whether this node's attributes make it causal: `conv1d` does so only with padding and
`drop_last` both its kernel's reach); what the state is (a scan's h [D, N], a causal convolution's last
d·(k − 1) input frames) is the op's business, and so is the step form of its torch lowering, which reads the slot at
the start of a forward and writes it at the end. The prompt runs through the same form from a zero state, so
prompt and steps cannot disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from ..base.diagnostics import Diagnostic, SpecError
from ..base.dims import Dim
from ..ir import IRGraph, IRNode
from ..ir.defaults import default_of, unreadable
from ..ops import REGISTRY
from ..ops.base import (AXIS, CACHE, CONTEXT, MOVES, OFFSET, POSITION, RECURRENT, THROUGH, UNKNOWN, Carry,
                        CarriedState, dtype_bytes)


@dataclass(frozen=True)
class CacheSlot:
    """The cached keys and values of one causal attention: [B, kv_heads, past, head_dim] (values
    `value_dim` wide where that differs: a latent attention's latent and rotary key)."""

    node: str
    layer: int
    kv_heads: int
    head_dim: int
    value_dim: int | None = None

    @property
    def widths(self) -> dict[str, int]:
        return {"key": self.head_dim, "value": self.value_dim or self.head_dim}


def _slot(n: IRNode, layer: int) -> CacheSlot:
    kv, hd, vd = n.attrs.cache_widths(n.shape.shape[-1].value)   # every CACHE op's attrs answer this
    return CacheSlot(n.name, layer, kv, hd, vd if vd != hd else None)


@dataclass(frozen=True)
class StateSlot:
    """What one recurrent node carries from step to step (its op's `carry` trait): tensors [B, *shape] by name,
    zero at a sequence's start."""

    node: str
    layer: int
    states: dict[str, CarriedState]

    def nbytes(self, batch: int, itemsize: int) -> int:
        """Bytes of the slot for `batch` sequences, `itemsize` the model dtype's (a float32 state: 4)."""
        return sum(batch * math.prod(st.shape) * (itemsize if st.dtype is None else dtype_bytes(st.dtype))
                   for st in self.states.values())


def _carry(ir: IRGraph, n: IRNode) -> Carry | str:
    return node_carry(n, {port: ir.node(src).shape for port, src in n.inputs.items()})


def node_carry(n: IRNode, ins: dict) -> Carry | str:
    """A recurrent node's `carry` trait at input types `ins`: what a step carries, or why it cannot step."""
    declared = REGISTRY[n.op].carry
    if declared is None:
        return f"`{n.op}` declares no `carry` trait (the state a step would carry)"
    return declared(n.attrs, ins)


@dataclass
class DecoderPlan:
    tokens: str = ""                    # spec input holding the token ids [B, n]
    vocab: int = 0                      # rows of the table that reads them
    mask: str | None = None             # spec input read only as the cached attentions' `mask` (1 = a real token)
    positions: str | None = None        # spec input read only as `positions` (of cached attentions, position tables)
    prefix: str | None = None           # spec input read only as the cached attentions' `prefix` (a prefix LM's)
    slots: dict[str, CacheSlot] = field(default_factory=dict)   # attention node → its slot
    states: dict[str, StateSlot] = field(default_factory=dict)  # recurrent node → what it carries
    cross: list[str] = field(default_factory=list)    # cross-attentions over the encoder: keys and values once
    offset: list[str] = field(default_factory=list)   # position tables and biases: shifted by the cache's length
    uses_positions: bool = False        # rotary attention or a position table: positions must be fed
    max_len: int | None = None          # the longest sequence the decoder serves, and the node that says so
    max_len_from: str | None = None
    encoder: set[str] = field(default_factory=set)    # nodes run once per sequence (they ignore the tokens)
    encoder_inputs: list[str] = field(default_factory=list)   # spec inputs of the encoder
    unfed: list[str] = field(default_factory=list)    # optional and defaulted inputs a step leaves out
    head: str | None = None             # the one output, when per position with one input: only its last row
    batch: Dim | None = None            # the token input's dims
    seq: Dim | None = None


def _sequence(n: IRNode) -> str:
    return REGISTRY[n.op].sequence


def _known_sequence(n: IRNode) -> str:
    """The node's `sequence` trait; GF255 for a plugin op that leaves it unknown (refused, not guessed)."""
    kind = _sequence(n)
    if kind == UNKNOWN:
        raise _refuse("GF255", f"`{n.name}` ({n.op}) does not declare how it treats the token axis, so a decoder "
                      "step cannot know whether it computes what the whole sequence does", n,
                      f"the plugin that installs `{n.op}` must declare its `sequence` trait (docs/plugins.md)")
    return kind


def _is_cache(n: IRNode) -> bool:
    return _sequence(n) == CACHE and n.attrs.causal


def cache_slots(ir: IRGraph, nodes: Iterable[str] | None = None) -> list[CacheSlot]:
    """A slot per causal self-attention (of `nodes`, default all), in graph order."""
    keep = None if nodes is None else set(nodes)
    out: list[CacheSlot] = []
    for n in ir.nodes():
        if n.op != "input" and n.shape is not None and (keep is None or n.name in keep) and _is_cache(n):
            out.append(_slot(n, len(out)))
    return out


def plan_decoder(ir: IRGraph, outputs: Iterable[str] | None = None, stages: bool = True,
                 states: bool = True) -> DecoderPlan:
    """Read the IR as a decoder computing `outputs` (spec output names; default all); SpecError if a step
    over the new tokens cannot compute them. `stages`: the nodes that ignore the tokens may run once per
    sequence before the steps (an encoder); False: every node runs at every step, and a logit bias is not
    offset by the cache (one ONNX graph). `states`: recurrent nodes may carry their state between steps;
    False: a reader that carries key/value pasts only (an encoder–decoder's ONNX steps) refuses them (GF213)."""
    outputs = list(ir.outputs) if outputs is None else list(outputs)
    missing = [o for o in outputs if o not in ir.outputs]
    _check_bodies(ir)
    needed = set(ir.names()) if missing else ir.ancestors([ir.outputs[o] for o in outputs])
    slots = cache_slots(ir, needed)
    recurrent = [n for n in ir.nodes() if n.name in needed and n.op != "input" and _sequence(n) == RECURRENT]
    plan = DecoderPlan(tokens=_token_input(ir, [s.node for s in slots], [n.name for n in recurrent]) or "")
    steps = [ir.inputs[k] for k in [plan.tokens, *_step_defaults(ir, plan.tokens)]] if plan.tokens else []
    fixed = needed - ir.descendants(steps) if plan.tokens and stages else set()
    plan.encoder = {n for n in fixed if ir.node(n).op != "input"}
    blocked = stray = None       # the first refusal of a node that a step runs (GF213, GF293), the first read
    axes: dict[str, int] = {}    # of the encoder; the token axis of each value a step computes (1 unless moved)
    for n in ir.nodes():
        if n.name not in needed or n.name in fixed or n.op == "input":
            continue
        kind = _known_sequence(n)
        axis = _input_axis(ir, n, axes, fixed)
        axes[n.name] = 1
        if kind == CACHE:
            _cached_attention(plan, ir, n, len(plan.slots), stages)
        elif kind == CONTEXT:
            _cross_attention(plan, n, fixed, stages)
        elif kind == OFFSET:
            plan.offset.append(n.name)
            plan.uses_positions = True
        elif kind == RECURRENT:
            blocked = blocked or _recurrence(plan, ir, n, axis, states)
            axes[n.name] = axis if axis is not None else 1     # along the tokens: they stay where they were
        elif kind == MOVES and axis is not None:
            axes[n.name] = n.attrs.moved_axis(axis, ir.node(next(iter(n.inputs.values()))).shape.rank)
        elif not _per_position(n, kind, axis):
            blocked = blocked or _mixing(n, axis)
        else:
            axes[n.name] = axis
        stray = stray or _encoder_read(ir, n, fixed, plan)
        limit = REGISTRY[n.op].max_len
        limit = limit(n.attrs) if limit is not None else None
        if limit is not None and (plan.max_len is None or limit < plan.max_len):
            plan.max_len, plan.max_len_from = limit, n.name
    if missing:
        raise _refuse("GF215", f"spec `{ir.name}` has no `{missing[0]}` output to sample from", None,
                      f"generation samples the next token from an output named `{missing[0]}` [B, n, vocab]; "
                      f"the spec's outputs: {', '.join(f'`{k}`' for k in ir.outputs) or 'none'}")
    if blocked is not None:
        raise blocked
    if stray is not None:
        n, port, src = stray
        raise _refuse("GF212", f"`{n.name}` ({n.op}) reads `{src}` on `{port}`, which does not depend on the "
                      "tokens and is computed once per sequence, so a step cannot feed it the new positions' rows",
                      n, "a decoder step reads the encoder's output through `cross_attend`'s `context` only")
    if not plan.slots and not plan.states:
        raise _refuse("GF210", f"spec `{ir.name}` has no causal attention and no recurrence, so a decoder step "
                      "has nothing to carry from one token to the next", None, "decoding token by token is for "
                      "decoders: `attention` with `causal: true`, or a recurrence such as `selective_scan`")
    _plan_inputs(plan, ir, needed, fixed, stages)
    if len(outputs) == 1:
        head = ir.node(ir.outputs[outputs[0]])
        if _sequence(head) == POSITION and len(head.inputs) == 1:
            plan.head = head.name
    return plan


def _input_axis(ir: IRGraph, n: IRNode, axes: dict[str, int], fixed: set[str]) -> int | None:
    """The token axis of the node's inputs that a step computes (spec inputs: 1); None where they disagree
    (one input transposed, another not)."""
    found = {axes.get(src, 1) for src in n.inputs.values() if src not in fixed or ir.node(src).op == "input"}
    return found.pop() if len(found) == 1 else (1 if not found else None)


def _recurrence(plan: DecoderPlan, ir: IRGraph, n: IRNode, axis: int | None, states: bool) -> SpecError | None:
    """A state slot for recurrent node `n`, or the refusal: it cannot step (GF293), it runs along another axis
    than the tokens' (GF213), or the reader carries no states (GF213)."""
    carry = _carry(ir, n)
    if isinstance(carry, str):
        return _refuse("GF293", f"`{n.name}` ({n.op}) cannot run step by step: {carry}", n,
                       "a decoder step computes each new position from a state carried from the earlier ones; "
                       "this node would need the positions after it")
    if axis is None or axis != carry.axis:
        where = "its inputs disagree on where the token axis is" if axis is None else \
            f"the tokens are on axis {axis} of `{carry.port}`"
        return _refuse("GF213", f"`{n.name}` ({n.op}) runs along axis {carry.axis} of `{carry.port}`, but {where}, "
                       "so it combines positions in a way a step over the new tokens cannot carry", n,
                       f"a recurrence steps along the token axis: `{n.op}` reads it on axis {carry.axis} "
                       "(a `transpose` moves it there)")
    if not states:
        return _refuse("GF213", f"`{n.name}` ({n.op}) carries a state from each position to the next (a "
                       "recurrence), which an encoder–decoder's ONNX decoder steps do not carry (their inputs "
                       "are past keys and values only)", n,
                       "`graphformer generate` (torch) decodes it step by step, and a decoder-only model's "
                       "`export --with-past` carries its states; export it without `--with-past`")
    plan.states[n.name] = StateSlot(n.name, len(plan.states), carry.states)
    return None


def _mixing(n: IRNode, axis: int | None) -> SpecError:
    if axis is not None and axis != 1:
        return _refuse("GF213", f"`{n.name}` ({n.op}) reads its input with the token axis moved to axis {axis} "
                       "(by a `transpose`), so it combines positions of the sequence, which a step over the new "
                       "tokens alone cannot compute", n, "transpose the tokens back to axis 1 before it")
    return _refuse("GF213", f"`{n.name}` ({n.op}) combines positions of the sequence, so a step over the new "
                   "tokens alone would not compute what the whole sequence does", n,
                   "a decoder step runs ops that treat each position on its own, plus causal attention, "
                   "position tables and recurrences that carry a state")


def _check_bodies(ir: IRGraph) -> None:
    """A block-valued attribute (a mixture of experts' expert) runs per token: no cache, no positions."""
    for body in ir.bodies:
        for n in body.ir.nodes():
            if n.op == "input":
                continue
            kind = _known_sequence(n)
            if kind in (CACHE, CONTEXT, OFFSET):
                raise _refuse("GF211", f"`{n.name}` ({n.op}) of block `{body.block}` is inside a block-valued "
                              "attribute (a mixture of experts' expert), which gets no cache", n, _ONLY_CAUSAL)
            if not _per_position(n, kind):
                raise _refuse("GF213", f"`{n.name}` ({n.op}) of block `{body.block}` combines positions inside a "
                              "block-valued attribute (a mixture of experts' expert), which runs per token", n,
                              "an expert block treats each token on its own")


def _cached_attention(plan: DecoderPlan, ir: IRGraph, n: IRNode, layer: int, stages: bool) -> None:
    if not n.attrs.causal:
        raise _refuse("GF211", f"`{n.name}` ({n.op}) is not causal: every earlier position would change with "
                      "each new token, so there is nothing to cache", n, _ONLY_CAUSAL)
    if not stages and "bias" in n.inputs:
        raise _refuse("GF211", f"`{n.name}` ({n.op}) adds a logit `bias` [.., n, m] over the whole sequence, "
                      "which a step over the new tokens cannot recompute for the cached keys", n,
                      _ONLY_CAUSAL + " without a logit `bias`")
    plan.slots[n.name] = _slot(n, layer)
    plan.uses_positions |= bool(getattr(n.attrs, "rope", True))   # a latent attention always rotates


def _cross_attention(plan: DecoderPlan, n: IRNode, fixed: set[str], stages: bool) -> None:
    if not stages:
        raise _refuse("GF211", f"`{n.name}` ({n.op}) attends to another sequence (the decoder of an "
                      "encoder-decoder model), which a cache of its own keys does not cover", n, _ONLY_CAUSAL)
    if n.inputs["context"] not in fixed:
        raise _refuse("GF211", f"`{n.name}` ({n.op}) attends to a context that changes with the tokens, so "
                      "earlier positions would change with every new token", n,
                      "a decoder attends to its own tokens causally, and to an encoder's output that does "
                      "not depend on them")
    plan.cross.append(n.name)


def _encoder_read(ir: IRGraph, n: IRNode, fixed: set[str], plan: DecoderPlan) -> tuple | None:
    """(node, port, value) where a step's node reads a value of the encoder other than as a cross-attention's
    context (or its mask and bias): a value computed once per sequence spans its whole length, not the step's
    tokens. (Spec inputs are judged by `_plan_inputs`.) An `OFFSET` node reads the cache's length, so it
    may take a per-sequence value with the prompt alone (LLaVA's image features, scattered once)."""
    if _sequence(n) == OFFSET:
        return None
    for port, src in n.inputs.items():
        if src in fixed and ir.node(src).op != "input" and not (n.name in plan.cross and port != "query"):
            return n, port, src
    return None


def _per_position(n: IRNode, kind: str, axis: int | None = 1) -> bool:
    """Whether the node computes each position alone, its inputs' token axis at `axis`: POSITION ops with
    the tokens on axis 1 (their features last) or element-wise ones (`tp` THROUGH) with the tokens anywhere,
    AXIS ops along another axis than the batch's and the tokens'."""
    if kind == POSITION:
        return axis == 1 or (axis is not None and REGISTRY[n.op].tp == THROUGH)
    if kind == AXIS and axis is not None:
        rank = n.shape.rank
        return rank >= 3 and n.attrs.axis % rank not in (0, axis)
    return False


def _token_input(ir: IRGraph, slots: list[str], recurrent: list[str]) -> str | None:
    """The token input: read by a token table (`token_table` trait), every causal attention depends on it, and
    so does a recurrence if there is no attention (an encoder's convolutions need not); None unless exactly one
    input is. An input with a `default` (token types) is not: a step fills it."""
    reads = [k for k, v in ir.inputs.items() if any(REGISTRY[c.op].token_table for c, _ in ir.consumers(v))
             and ir.node(v).meta.get("default") is None]
    found = []
    for k in reads:
        after = ir.descendants([ir.inputs[k]])
        if set(slots) <= after and (slots or any(r in after for r in recurrent)):
            found.append(k)
    return found[0] if len(found) == 1 else None


def _plan_inputs(plan: DecoderPlan, ir: IRGraph, needed: set[str], fixed: set[str], stages: bool) -> None:
    """The token input, the optional mask and positions inputs, the encoder's inputs; GF212 for any other."""
    if not plan.tokens:
        reads = [k for k, v in ir.inputs.items() if any(REGISTRY[c.op].token_table for c, _ in ir.consumers(v))]
        raise _refuse("GF212", f"spec `{ir.name}` needs exactly one token input read by an `embedding` that every "
                      f"causal attention depends on, to decode step by step; found "
                      f"{', '.join(f'`{t}`' for t in reads) or 'none'}", None,
                      "the step's new tokens are ids [B, n] that an `embedding` node reads")
    embed = next(c for c, _ in ir.consumers(ir.inputs[plan.tokens]) if REGISTRY[c.op].token_table)
    plan.vocab = embed.attrs.vocab
    plan.batch, plan.seq = ir.node(ir.inputs[plan.tokens]).shape.shape[:2]
    positional = set(plan.slots) | set(plan.offset)
    for k, v in ir.inputs.items():
        uses = ir.consumers(v)
        if k == plan.tokens or (not uses and not stages):
            continue
        if uses and all(port == "mask" and (c.name in plan.slots or _sequence(c) == POSITION) for c, port in uses):
            plan.mask = k     # a per-position op's mask too (Mamba's apply_mask): a new token is real
        elif uses and all(port == "positions" and c.name in positional for c, port in uses):
            plan.positions = k
        elif uses and all(port == "prefix" and c.name in plan.slots for c, port in uses):
            _prefix_input(plan, ir, k, stages)
        elif uses and all(port == "blocks" and c.name in plan.slots for c, port in uses):
            _blocks_input(plan, ir, k)
        elif plan.encoder and all(c.name in fixed or (c.name in plan.cross and port != "query") for c, port in uses):
            plan.encoder_inputs.append(k)
        elif stages and ir.node(v).meta.get("optional"):
            plan.unfed.append(k)
        elif k in _step_defaults(ir, plan.tokens):
            plan.unfed.append(k)   # each step's own constant (token types 0), as a call that leaves it out
        else:
            raise _refuse("GF212", f"input `{k}` cannot be fed to a decoder step: it is neither the token ids "
                          "nor an attention `mask` or `positions`" + (", nor read by the encoder alone"
                                                                      if plan.encoder else ""),
                          ir.node(v), f"a step takes `{plan.tokens}`, and optionally a padding mask and positions")


def _step_defaults(ir: IRGraph, tokens: str) -> list[str]:
    """The inputs with a `default` whose shape is read off the token input's alone (token types [B, n]): a step
    leaves them out and gets its own constant, as long as its tokens."""
    if not tokens:
        return []
    alone = {tokens: ir.node(ir.inputs[tokens]).shape}
    return [k for k, v in ir.inputs.items() if k != tokens and default_of(ir, k) is not None
            and ir.node(v).shape is not None and not unreadable(ir.node(v).shape.shape, alone)]


def _prefix_input(plan: DecoderPlan, ir: IRGraph, k: str, stages: bool) -> None:
    """A prefix LM's prefix [B, n]: generation feeds the prompt as the prefix (its steps are causal: a new
    token sees every earlier one anyway). One step graph (ONNX with past) has no prefix input: an optional
    one is left out (the model as a plain causal LM), a required one is refused."""
    if stages:
        plan.prefix = k
    elif ir.node(ir.inputs[k]).meta.get("optional"):
        plan.unfed.append(k)
    else:
        raise _refuse("GF289", f"input `{k}` is a prefix LM's `prefix`, which a decoder step graph cannot take: "
                      "its prompt would attend causally, not bidirectionally over the prefix",
                      ir.node(ir.inputs[k]), "declare the input `optional: true` to export the model as a plain "
                      "causal LM with past, export without `--with-past`, or generate with `graphformer generate` "
                      "(its prompt is the prefix)")


def _blocks_input(plan: DecoderPlan, ir: IRGraph, k: str) -> None:
    """A spec input read as the cached attentions' `blocks` [B, n]: neither generation nor a step graph has
    its values for the prompt, so an optional one is left out (the prompt attends causally) and a required one
    is refused. Blocks computed in the graph from the tokens (`equal` on an image token: gemma3-vision) need
    no input: each call, the prompt included, gets its own, and a step's cached keys are in none."""
    if ir.node(ir.inputs[k]).meta.get("optional"):
        plan.unfed.append(k)
        return
    raise _refuse("GF323", f"input `{k}` is read as attention's `blocks`, which decoding cannot feed: neither "
                  "`generate` nor a decoder step graph has its values for the prompt", ir.node(ir.inputs[k]),
                  "compute the blocks in the graph from the tokens (`equal` on the image token, as "
                  "gemma3-vision does), or declare the input `optional: true` (decoding then leaves it out: "
                  "the prompt attends causally)")


_ONLY_CAUSAL = "decoding with past keys and values needs every attention to be causal self-attention (`causal: true`)"


def _refuse(code: str, message: str, node: IRNode | None, help: str) -> SpecError:
    return SpecError([Diagnostic(code, message, node.span if node else None, node=node.name if node else None,
                                 help=help)])
