"""What a causal decoder looks like in the IR, for a step that reads past keys and values.

`plan_decoder(ir)` finds the token input (the one an `embedding` reads), the optional padding-mask and
positions inputs, and the causal `attention` nodes, each of which gets a cache slot (in graph order), or
refuses the spec with a diagnostic (GF210–GF213) at the node or input to blame. It reads the IR only (no
torch, no onnx), so the ONNX export with past keys and values (`graphformer export --with-past`) refuses a
spec before reading or initialising any weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..base.diagnostics import Diagnostic, SpecError
from ..base.dims import Dim
from ..ir import IRGraph, IRNode
from ..ops.mla import SELF_ATTENTION, cache_widths


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


@dataclass
class DecoderPlan:
    tokens: str                         # spec input holding the token ids [B, n]
    mask: str | None = None             # spec input read only as attention `mask` (1 = a real token)
    positions: str | None = None        # spec input read only as attention `positions`
    slots: dict[str, CacheSlot] = field(default_factory=dict)   # attention node → its slot
    uses_positions: bool = False        # rotary attention or a position table: positions must be fed
    batch: Dim | None = None            # the token input's dims
    seq: Dim | None = None


def plan_decoder(ir: IRGraph, nodes: set[str] | None = None) -> DecoderPlan:
    """Read the IR (only `nodes`, default all) as a decoder; SpecError if a step with past keys cannot run it."""
    plan = DecoderPlan("")
    for body in ir.bodies:
        for n in body.ir.nodes():
            if n.op in SELF_ATTENTION + ("cross_attend",):
                raise _refuse("GF211", f"`{n.name}` ({n.op}) of block `{body.block}` is inside a block-valued "
                              "attribute (a mixture of experts' expert), which gets no cache", n, _ONLY_CAUSAL)
    mixing = None                       # the first op that combines positions, reported after attention
    for n in ir.nodes():
        if nodes is not None and n.name not in nodes:
            continue
        if n.op == "attention" and n.attrs.causal and "bias" in n.inputs:
            raise _refuse("GF211", f"`{n.name}` (attention) adds a logit `bias` [.., n, m] over the whole "
                          "sequence, which a step over the new tokens cannot recompute for the cached keys", n,
                          _ONLY_CAUSAL + " without a logit `bias`")
        if n.op in SELF_ATTENTION and n.attrs.causal:
            x = ir.node(n.inputs["x"]).shape
            kv_heads, head_dim, value_dim = cache_widths(n, x.shape[-1].value)
            plan.slots[n.name] = CacheSlot(n.name, len(plan.slots), kv_heads, head_dim,
                                           value_dim if value_dim != head_dim else None)
            plan.uses_positions |= bool(n.attrs.rope)
        elif n.op in SELF_ATTENTION + ("cross_attend",):
            why = ("is not causal: every earlier position would change with each new token, so there is "
                   "nothing to cache" if n.op in SELF_ATTENTION else
                   "attends to another sequence (the decoder of an encoder-decoder model), which a cache of "
                   "its own keys does not cover")
            raise _refuse("GF211", f"`{n.name}` ({n.op}) {why}", n, _ONLY_CAUSAL)
        elif n.op == "positional":
            plan.uses_positions = True
        elif n.op != "input" and not _per_position(n) and mixing is None:
            mixing = n
    if mixing is not None:
        raise _refuse("GF213", f"`{mixing.name}` ({mixing.op}) combines positions of the sequence, so a step "
                      "over the new tokens alone would not compute what the whole sequence does", mixing,
                      "a decoder step runs ops that treat each position on its own, plus causal attention "
                      "and position tables")
    if not plan.slots:
        raise _refuse("GF210", f"spec `{ir.name}` has no causal attention, so a decoder step has no keys and "
                      "values to cache", None, "export with past keys and values is for decoders: "
                      "`attention` with `causal: true`; export the spec without `--with-past`")
    _plan_inputs(plan, ir)
    return plan


def _plan_inputs(plan: DecoderPlan, ir: IRGraph) -> None:
    readers = {k: [(c.op, port) for c, port in ir.consumers(v)] for k, v in ir.inputs.items()}
    tokens = [k for k, r in readers.items() if any(op == "embedding" for op, _ in r)]
    if len(tokens) != 1:
        found = ", ".join(f"`{t}`" for t in tokens) or "none"
        raise _refuse("GF212", f"spec `{ir.name}` needs exactly one token input read by an `embedding` to "
                      f"decode step by step; found {found}", None, "the step's new tokens are ids [B, n] "
                      "that an `embedding` node reads")
    plan.tokens = tokens[0]
    plan.batch, plan.seq = ir.node(ir.inputs[plan.tokens]).shape.shape[:2]
    for k, r in readers.items():
        if k == plan.tokens or not r:
            continue
        if all(port == "mask" for _, port in r):
            plan.mask = k
        elif all(port == "positions" for _, port in r):
            plan.positions = k
        else:
            raise _refuse("GF212", f"input `{k}` cannot be fed to a decoder step: it is neither the token "
                          "ids nor an attention `mask` or `positions`", ir.node(ir.inputs[k]),
                          f"a step takes `{plan.tokens}`, and optionally a padding mask and positions")


# Ops that compute each position from that position alone (on the last axes), so running them on the new
# tokens only is exact. Everything else (pooling, slicing, interleaving, prepending tokens, ...) is refused.
PER_POSITION = {"activation", "dropout", "embedding", "gelu", "l2_normalize", "linear", "moe", "mul", "norm",
                "quick_gelu", "relu", "residual", "scale", "sigmoid", "silu", "table_row", "tanh", "vestigial"}
ALONG_AXIS = {"softmax", "concat"}   # per position when their axis is past the token axis


def _per_position(n: IRNode) -> bool:
    if n.op in PER_POSITION:
        return True
    if n.op in ALONG_AXIS:
        rank = n.shape.rank
        return rank >= 3 and n.attrs.axis % rank >= 2
    return False


_ONLY_CAUSAL = "export with past keys and values needs every attention to be causal self-attention (`causal: true`)"


def _refuse(code: str, message: str, node: IRNode | None, help: str) -> SpecError:
    return SpecError([Diagnostic(code, message, node.span if node else None, node=node.name if node else None,
                                 help=help)])
