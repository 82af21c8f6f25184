"""The op registry: one declaration per primitive op (attributes, ports, shape rule, parameters, FLOPs,
and the traits the analyses read: they branch on traits, never on op names).

Shape rules are plain functions over `TensorType`s; they raise `ShapeError` with the port that is at
fault so the checker can point at both the consumer and the producer. Nothing here imports torch.
"""
# No `from __future__ import annotations` here: pydantic evaluates the annotations of `Attrs` again for
# each of the ~50 attrs models that subclass it, and strings cost a compile and an eval each time.

import functools
import importlib
import math
import sys
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Callable, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, BeforeValidator, PrivateAttr

from ..base.dims import Dim
from ..base.dtypes import canonical_dtype

# A dimension-valued attribute: an int or an expression string over params (`4 * d_model`). The
# expander replaces it by a concrete int before the attrs model is built, so rules see plain ints.
def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError("expected an integer, not a boolean")
    if isinstance(v, (list, tuple)):   # `groups: [2, 2]`: only some attributes take a pair (conv2d's kernel)
        raise ValueError("expected one number, not a list")
    return v


DimAttr = Annotated[int, BeforeValidator(_no_bool)]


class Attrs(BaseModel):
    # no inf or nan: a number attribute is a real constant (and goes into generated code as its repr)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)
    # Names of fields that hold dimension expressions (evaluated against params by the expander).
    dim_fields: ClassVar[tuple[str, ...]] = ()
    # Fields that name another node (resolved to an IR path by the expander), e.g. `tied: tok`.
    ref_fields: ClassVar[tuple[str, ...]] = ()
    # Fields that hold a list of dimension expressions that may keep symbols (a reshape's `[B * T, n, d]`):
    # the expander binds params and stores each as the text of its canonical Dim.
    shape_fields: ClassVar[tuple[str, ...]] = ()
    # Fields that name a block of the spec, used as a sub-graph (MoE's `expert: mlp`). The expander
    # expands the block once on its own and attaches it as `body()`; rules ask it for shapes and counts.
    block_fields: ClassVar[tuple[str, ...]] = ()
    _body: Any = PrivateAttr(None)

    def body(self):
        """The expanded block of this node's block field (an `ir.Body`), or None."""
        return self._body
    # The ref field naming the node whose `weight` this op reuses (a tie), if the op can have one.
    tie_field: ClassVar[str | None] = None

    def tied_to(self) -> str | None:
        """The node whose `weight` this node reuses, or None."""
        return getattr(self, self.tie_field) if self.tie_field else None

    @classmethod
    @functools.cache
    def words(cls, name: str) -> tuple[str, ...]:
        """The literal words a dimension attribute also accepts (conv2d's `padding: same`): the expander
        passes them through instead of reading them as expressions over params."""
        field = cls.model_fields.get(name)
        found, todo = [], [field.annotation] if field is not None else []
        while todo:
            t = todo.pop()
            if typing.get_origin(t) is typing.Literal:
                found += [w for w in typing.get_args(t) if isinstance(w, str)]
            else:
                todo += typing.get_args(t)
        return tuple(found)

    @classmethod
    def is_real(cls, name: str) -> bool:
        """Whether attribute `name` is a real number (`float`, `float | None`): the expander then
        accepts an arithmetic expression over params for it (`scale: d_model ** -0.5`)."""
        field = cls.model_fields.get(name)
        return field is not None and (field.annotation is float or float in typing.get_args(field.annotation))


class NoAttrs(Attrs):
    pass


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]" + ("" if self.dtype == "float32" else f" {self.dtype}")


def tt(*dims: Dim | int, dtype: str = "float32") -> TensorType:
    return TensorType(tuple(d if isinstance(d, Dim) else Dim.const(d) for d in dims), dtype)


class ShapeError(Exception):
    """A shape rule failed. `port` names the input at fault (None: the node itself); `attr` the attribute
    whose value is at fault, so the caret can land on it (`heads: 5`) rather than on the node's name."""

    def __init__(self, code: str, message: str, port: str | None = None, help: str | None = None,
                 attr: str | None = None):
        super().__init__(message)
        self.code, self.message, self.port, self.help, self.attr = code, message, port, help, attr
        self.conflict: tuple | None = None   # GF120: (the port's dim, the dim expected, its axis or None)

    def with_conflict(self, got, want, axis: int | None = None) -> "ShapeError":
        self.conflict = (got, want, axis)   # the checker's hint names what sets `got` (frontend/infer.py)
        return self


# ---------------------------------------------------------------- traits: what analyses know of an op

# `sequence`: how the op treats the token axis (dim 1 of [B, n, ...]). decoding.py reads it to decide whether
# a decoder step over the new tokens alone computes what the whole sequence does.
POSITION = "position"   # each position from that position alone (element-wise ops, linear, norm, embedding)
AXIS = "axis"           # per position when its `axis` attribute is past the token axis (softmax, concat)
CACHE = "cache"         # self-attention over `x`: causal (`attrs.causal`) gets a key/value cache slot
CONTEXT = "context"     # attends to another sequence (port `context`): fine when an encoder computed it once
OFFSET = "offset"       # computes from positions 0..n-1 (position tables, relative biases): a step offsets them
MIXES = "mixes"         # combines positions (pooling, slicing, convolution, interleaving): no decoder step
RECURRENT = "recurrent"  # carries a state from each position to the next (scans, causal convolutions): its
                         # `carry` trait says what a step carries (`Carry`), or why this node cannot step
MOVES = "moves"         # moves axes (transpose): each position alone, the token axis going where
                        # `attrs.moved_axis(axis, rank)` puts it (a convolution over time reads it there)
SEQUENCE = (POSITION, AXIS, CACHE, CONTEXT, OFFSET, MIXES, RECURRENT, MOVES)


@dataclass(frozen=True)
class CarriedState:
    """One tensor a decoder step carries to the next for one node: its shape per batch row, and its dtype
    (None: the model's; a scan keeps its state in float32 whatever the model's dtype, as the reference)."""

    shape: tuple[int, ...]
    dtype: str | None = None


@dataclass(frozen=True)
class Carry:
    """What a `RECURRENT` node carries between decoder steps: the recurrence runs along `axis` of input
    `port` (the planner checks that this is where the token axis is), and `states` (name → `CarriedState`)
    hold everything a step over the new positions needs of the earlier ones. A `carry` trait returns this,
    or a sentence saying why the node cannot step (GF293: a convolution that reads later frames)."""

    port: str
    axis: int
    states: dict[str, CarriedState]

# `tp`: how tensor parallelism splits the op. tp_plan.py reads it.
THROUGH = "through"     # element-wise, no weights: a column-split input stays split (every input must be)
MATMUL = "matmul"       # a projection `[*, d] → [*, out]` (attrs `out`, `tied`): column/row-wise in a
                        # feed-forward pair, vocab-parallel as an untied LM head, else replicated and listed
HEADS = "heads"         # self-attention (attrs.geometry): q, k, v column-wise by heads, o row-wise
EXPERTS = "experts"     # a mixture of experts (attrs.body(), attrs.experts): each expert split like a dense MLP
VOCAB = "vocab"         # a token table (attrs `vocab`, `tied`): vocab-parallel when untied
REPLICATE = "replicate"  # weight matrices kept whole on every rank, listed in the plan (cross-attention, convs)
UNPLANNED = "unplanned"  # nothing the plan lists: no weights, or small ones every rank keeps (norms, tables)
TP = (THROUGH, MATMUL, HEADS, EXPERTS, VOCAB, REPLICATE, UNPLANNED)

# A plugin op (`PluginOpDef`) may leave `sequence` and `tp` undeclared: they are then UNKNOWN, and the
# analyses that need them (decoding.py GF255, tp_plan.py GF256) refuse the op instead of guessing.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Saved:
    """What autograd keeps for an op's backward (budget.py's activation estimate): the input ports whose
    values it keeps ("out": its output; a tensor kept by several ops counts once) and bytes of tensors of
    its own (attention's q, k, v; norm statistics)."""

    ports: tuple[str, ...] = ()
    own: int = 0


class SaveContext(Protocol):
    """What a `saves` trait is given (budget.py builds it): the node's attrs, its input types by port
    (None where unknown), its output type, the concrete dims and the activation dtype's bytes."""

    attrs: Any
    ins: dict[str, "TensorType | None"]
    out: "TensorType"
    dims: dict[str, int]
    itemsize: int

    def numel(self, t: "TensorType") -> int: ...
    def bytes(self, t: "TensorType") -> int: ...        # in the activation dtype (integer tensors: their own)
    def body_saved(self, x: "TensorType") -> int: ...   # what a block-valued attribute's body saves on x


def keeps(*ports: str) -> Callable[[SaveContext], Saved]:
    """A `saves` trait: backward keeps these inputs ("out": the output), nothing of its own."""
    return lambda c: Saved(ports)


def keeps_float_inputs(c: SaveContext) -> Saved:
    """A `saves` trait: backward keeps every float input (convolutions, grid reshapes, ...)."""
    return Saved(tuple(p for p, t in c.ins.items() if t is not None and t.dtype == "float32"))


# Port spec: "x" required, "mask?" optional, "*xs" variadic (one or more, positional).
# Traits are keyword fields: `sequence`, `tp` and `saves` must be declared by every op (tests/unit/test_op_traits.py);
# the others default to the common case.
@dataclass(frozen=True)
class OpDef:
    name: str
    family: str
    doc: str
    attrs: type[Attrs]
    ports: tuple[str, ...]
    shape: Callable[..., TensorType]
    params: Callable[..., dict[str, tuple[int, ...]]] = lambda a, ins: {}
    flops: Callable[..., Dim] = lambda a, ins, out: Dim.const(0)
    example: str = ""
    # parameters one token uses, where fewer than all (mixture of experts: the router and top-k experts)
    active_params: Callable[..., int] | None = None
    # --- traits (see above)
    sequence: str = field(kw_only=True)                          # POSITION, AXIS, CACHE, ... (decoding.py)
    tp: str = field(kw_only=True)                                # THROUGH, MATMUL, HEADS, ... (tp_plan.py)
    saves: Callable[[SaveContext], Saved] = field(kw_only=True)  # activations kept for backward (budget.py)
    matmul: bool = field(default=False, kw_only=True)            # FLOPs are matmuls: backward costs two forwards
    embedding: bool = field(default=False, kw_only=True)         # its parameters count as embedding parameters
    token_table: bool = field(default=False, kw_only=True)       # looks token ids up (port 0) in `attrs.vocab` rows
    frozen: Callable[[Any], bool] | None = field(default=None, kw_only=True)   # params never trained, by attrs
    max_len: Callable[[Any], int | None] | None = field(default=None, kw_only=True)  # longest sequence it serves
    # entries of `params` that are running state, not parameters (batch norm's running statistics, torch
    # buffers): loaded, saved and exported like weights, but never trained nor counted as parameters
    state: Callable[[Any], tuple[str, ...]] | None = field(default=None, kw_only=True)
    # what a decoder step carries for a node of this op (attrs, input types → `Carry`, or why not): required
    # of `RECURRENT` ops (decoding.py's state slots, the torch lowering's step form)
    carry: Callable[[Any, dict[str, "TensorType"]], "Carry | str"] | None = field(default=None, kw_only=True)

    def trained(self, attrs, ins) -> dict[str, tuple[int, ...]]:
        """`params` less the `state` entries: what torch counts as parameters and an optimizer trains."""
        params = self.params(attrs, ins)
        if self.state is None:
            return params
        state = self.state(attrs)
        return {k: v for k, v in params.items() if k not in state}

    def __post_init__(self):
        assert self.sequence in SEQUENCE, f"op {self.name}: sequence must be one of {SEQUENCE}"
        assert self.tp in TP, f"op {self.name}: tp must be one of {TP}"

    # read per node by expand and infer: computed once per op (an OpDef never changes)
    @cached_property
    def variadic(self) -> bool:
        return bool(self.ports) and self.ports[0].startswith("*")

    @cached_property
    def port_names(self) -> list[str]:
        return [p.strip("*?") for p in self.ports]

    @cached_property
    def required_ports(self) -> list[str]:
        return [p.strip("*") for p in self.ports if not p.endswith("?")]


@dataclass(frozen=True)
class PluginOpDef(OpDef):
    """An op of an installed plugin (docs/plugins.md): an `OpDef` whose `sequence` and `tp` may stay
    UNKNOWN (the analyses that need them refuse the op) and whose `saves` defaults to every float input."""

    sequence: str = field(default=UNKNOWN, kw_only=True)
    tp: str = field(default=UNKNOWN, kw_only=True)
    saves: Callable[[SaveContext], Saved] = field(default=keeps_float_inputs, kw_only=True)

    def __post_init__(self):
        assert self.sequence in SEQUENCE + (UNKNOWN,), f"op {self.name}: sequence must be one of {SEQUENCE}"
        assert self.tp in TP + (UNKNOWN,), f"op {self.name}: tp must be one of {TP}"


class LazyDict(dict):
    """A dict whose reads first call `_load()` (once-only loading is the subclass's business): the op
    registry and the backends' lowering tables, which plugins fill on first use."""

    def _load(self) -> None:
        raise NotImplementedError

    def __getitem__(self, k):
        self._load()
        return dict.__getitem__(self, k)

    def __contains__(self, k):
        self._load()
        return dict.__contains__(self, k)

    def __iter__(self):
        self._load()
        return dict.__iter__(self)

    def __len__(self):
        self._load()
        return dict.__len__(self)

    def get(self, k, default=None):
        self._load()
        return dict.get(self, k, default)

    def keys(self):
        self._load()
        return dict.keys(self)

    def values(self):
        self._load()
        return dict.values(self)

    def items(self):
        self._load()
        return dict.items(self)


class Registry(LazyDict):
    """The op table: name → OpDef. Each built-in op is registered by its family's module when that module is
    imported, and `homes` (filled by ops/__init__.py) says which module that is without importing it: looking
    an op up imports its module only, so a spec using five families imports five; reading the whole table
    (iterating, `len`, `items`) imports them all, in one fixed order. The ops of installed plugins (the
    `graphformer.ops` entry points) are loaded lazily, once, on the first read (`ops/plugins.py`), so a command
    that never looks an op up imports no plugin."""

    _ready = False      # set by ops/__init__.py once `homes` is filled
    _loading = False
    _complete = False   # every built-in module imported, and the table in its fixed order
    _loaded = False     # the plugins' ops are in
    homes: dict[str, str] = {}   # built-in op name -> the module of graphformer.ops that registers it

    def _load(self) -> None:
        if self._ready and not self._loading and not self._loaded:
            self._loading = True
            try:
                from .plugins import load_plugins
                load_plugins(self)
            finally:
                self._loaded, self._loading = True, False

    def _builtin(self, name) -> None:
        """Import the module that registers built-in op `name`, unless it is in already."""
        home = self.homes.get(name) if isinstance(name, str) else None
        if home is not None and not dict.__contains__(self, name):
            importlib.import_module(f"{__package__}.{home}")

    def _everything(self) -> None:
        """Every built-in module imported, and the built-ins first in `homes`' order (that of the modules'
        import when they were eager), then the plugins' ops in their order: listings don't depend on what
        was looked up before."""
        if self._complete or not self._ready:
            return
        for module in dict.fromkeys(self.homes.values()):
            importlib.import_module(f"{__package__}.{module}")
        ops = dict(dict.items(self))
        dict.clear(self)
        for name in [*self.homes, *(n for n in ops if n not in self.homes)]:
            dict.__setitem__(self, name, ops[name])
        self._complete = True

    # Lookups run thousands of times per check: once the plugins are in, an op already imported costs one
    # dict read.
    def __getitem__(self, k):
        op = dict.get(self, k) if self._loaded else None
        if op is None:
            self._builtin(k)
            return super().__getitem__(k)
        return op

    def __contains__(self, k):
        if self._loaded and dict.__contains__(self, k):
            return True
        self._builtin(k)
        return super().__contains__(k)

    def get(self, k, default=None):
        op = dict.get(self, k) if self._loaded else None
        if op is None:
            self._builtin(k)
            return super().get(k, default)
        return op

    def __iter__(self):
        self._everything()
        return super().__iter__()

    def __len__(self):
        self._everything()
        return super().__len__()

    def keys(self):
        self._everything()
        return super().keys()

    def values(self):
        self._everything()
        return super().values()

    def items(self):
        self._everything()
        return super().items()


REGISTRY: Registry = Registry()
_REGISTERED_BY: dict[str, str] = {}   # built-in op name -> the module that registered it (tests check `homes`)


def register(op: OpDef) -> OpDef:
    """Add a built-in op (plugins go through `ops/plugins.py`, which checks them instead of asserting)."""
    assert not dict.__contains__(REGISTRY, op.name), f"op {op.name} registered twice"
    dict.__setitem__(REGISTRY, op.name, op)
    _REGISTERED_BY[op.name] = sys._getframe(1).f_globals.get("__name__", "?")
    return op


# ---------------------------------------------------------------- helpers for shape rules

def dstr(d: Dim | int) -> str:
    return f"`{d}`"


def numel(dims) -> Dim:
    out = Dim.const(1)
    for d in dims:
        out = out * d
    return out


def expect_rank(x: TensorType, port: str, rank: int | None = None, min_rank: int = 0, what: str = "") -> None:
    if rank is not None and x.rank != rank:
        raise ShapeError("GF121", f"`{port}` must have rank {rank}{what}, got {x}", port)
    if x.rank < min_rank:
        raise ShapeError("GF121", f"`{port}` must have rank ≥ {min_rank}{what}, got {x}", port)


def expect_dim(actual: Dim, expected: Dim | int, port: str, what: str, x: TensorType | None = None) -> None:
    expected = expected if isinstance(expected, Dim) else Dim.const(expected)
    if actual != expected:
        got = f" (shape {x})" if x is not None else ""
        raise ShapeError("GF120", f"{what} of `{port}` is {dstr(actual)}, expected {dstr(expected)}{got}",
                         port).with_conflict(actual, expected)


def expect_dtype(x: TensorType, port: str, allowed: tuple[str, ...]) -> None:
    if x.dtype not in allowed:
        raise ShapeError("GF122", f"`{port}` has dtype {x.dtype}, expected {' or '.join(allowed)}", port)


def expect_float(x: TensorType, port: str) -> None:
    expect_dtype(x, port, FLOAT_DTYPES)


def expect_positions(ins: dict, n: Dim) -> None:
    """An optional `positions` input: token indices `[B, n]`, int64, as long as the sequence."""
    pos = ins.get("positions")
    if pos is not None:
        expect_rank(pos, "positions", 2, what=" ([B, n])")
        expect_dtype(pos, "positions", INT_DTYPES)
        expect_dim(pos.shape[1], n, "positions", "dimension 1 (tokens)", pos)


def expect_divisible(total: int, parts: int, what: str, help: str | None = None, attr: str | None = None) -> None:
    if parts <= 0 or total % parts:
        raise ShapeError("GF123", f"{what}: {total} is not divisible by {parts}", None, help, attr)


def same_shape(ins: dict[str, TensorType], ports: list[str]) -> TensorType:
    first = ins[ports[0]]
    for p in ports[1:]:
        x = ins[p]
        if x.rank != first.rank:
            raise ShapeError("GF121", f"`{p}` has shape {x} but `{ports[0]}` has {first}: ranks differ", p)
        for i, (a, b) in enumerate(zip(first.shape, x.shape)):
            if a != b:
                raise ShapeError("GF120", f"dimension {i} of `{p}` is {dstr(b)} but `{ports[0]}` has {dstr(a)}"
                                 f" ({x} vs {first})", p).with_conflict(b, a, i)
    return first


def positive(v: int, name: str) -> None:
    if v <= 0:
        raise ShapeError("GF102", f"`{name}` must be positive, got {v}", attr=name)


FLOAT_DTYPES = ("float32",)
INT_DTYPES = ("int64",)
# Bytes per element of every dtype a tensor or a weight may have (the one table: the memory plan, the
# memory check before allocations, example inputs); `bf16`-style names go through base/dtypes.py.
DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "bool": 1}


def dtype_bytes(dtype: str | None, default: int = 4) -> int:
    """Bytes per element of `dtype` (a name or an alias such as `bf16`); `default` for None or an unknown one."""
    return DTYPE_BYTES.get(canonical_dtype(dtype), default) if dtype is not None else default


def count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
