"""Front end, part 2: a loaded `Program` → the IR graph (blocks inlined, `repeat` unrolled).

A repeated call is unrolled compactly where that is exact: its body is expanded once per distinct
instantiation (the params each repetition sees, `repeat_index`-driven ones included) into an `ir.Repeat`,
which the IR unrolls on demand. Any diagnostic, a forward reference into the call, a resolved node
reference (`tied:`) or a block output that is a block input takes the full path instead, so the IR and
every diagnostic are what unrolling every repetition gives.

References are resolved through `Slot`s so that a node may name one defined later in the same scope
and block inputs can alias values that are not known yet; all slots are resolved once at the end.
Errors are collected (never raised) and the offending node is marked broken so that its consumers
stay quiet instead of cascading.
"""
from __future__ import annotations

import math
import ast
import operator
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from ..base.diagnostics import Diagnostic, Span, did_you_mean
from ..base.dims import Dim, DimError, number, parse
from ..base.errors import UsageError
from ..ir import BlockInputCheck, Body, Frame, IRGraph, IRNode, Repeat, WeightMap, WeightRule
from ..ir.defaults import required_shapes, unreadable
from .load import MAX_PARAM, Program, SpecCtx, param_kind, pydantic_diagnostics
from ..ops import REGISTRY
from ..ops.base import TensorType
from ..ops.shape import MAX_RANK
from ..weights.maps import rename_problems
from .format import BlockInputDecl, NodeDecl, WeightMap as WeightMapDecl, block_input_shape

MAX_NODES = 200_000  # defaults; the environment variables below raise (or lower) them
MAX_REPEAT = 10_000
# In the attributes of a repeated block call, the repetition's number (0, 1, ...): Swin shifts its
# windows in every second layer, `shift: (repeat_index % 2) * (window // 2)`.
REPEAT_INDEX = "repeat_index"
MAX_INDEX_K = 1_000_000   # the largest K of a weight-map index `{i+K}`, `{i*K}`, ... (weights/maps.py MAX_K)
MAX_HINTS = 200  # "did you mean" hints per expansion
# a weight map's `scale` (GF180): real factors (1/√head_dim, 2, -1) are far inside; zero or a factor past
# these bounds is a typo that would load zeros, infinities or weights overflowing half precision
MIN_SCALE, MAX_SCALE = 1e-6, 1e6
MAX_DIM = MAX_PARAM  # example sizes of symbolic dims (`dims:`), bounded like params


def env_limit(name: str, default: int) -> int:
    """A limit from the environment, read per run so a bad value is a usage error, not a crash at import."""
    raw = os.environ.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise UsageError(f"environment variable {name} must be a positive integer, got `{os.environ[name]}`")
    return int(raw)


DEFAULT_EXAMPLE = {"B": 2}
DEFAULT_EXAMPLE_SIZE = 8


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_BAD = object()   # an attribute value already reported as wrong
_KIND = {"int": "an integer", "float": "a float", "bool": "a boolean", "str": "a string", "list": "a per-layer list"}
# What makes a block param's value or a `when` a per-layer expression rather than a dimension or a param
# name: a comparison, `and` / `or` / `not`, a conditional, or a per-layer list read by index.
_LOGIC = re.compile(r"[<>=!\['\"]|\b(?:if|and|or|not|in)\b")   # a quote: a string literal ('mlp')
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
          ast.Mod: operator.mod, ast.Div: operator.truediv}


# ops whose output has the type of their one input `x`: switched off by `when`, they pass it through
_SAME_TYPE = frozenset({"norm", "group_norm", "dropout", "activation", "relu", "gelu", "silu", "tanh", "sigmoid", "softcap",
                        "attention", "scale"})


class _ExprError(Exception):
    def __init__(self, code: str, message: str, offset: int, help: str | None = None):
        super().__init__(message)
        self.code, self.message, self.offset, self.help = code, message, offset, help


def per_layer_value(text: str, env: dict[str, Any], repeat: int | None) -> Any:
    """Evaluate a per-layer expression over params: numbers, strings, booleans, param names, `L[i]` on a
    per-layer list, + - * / // %, comparisons, `and` / `or` / `not` and `a if cond else b`. Python's parser
    builds the tree; only these nodes are walked (never executed). `repeat`: the repetition count of the
    call whose attribute this is; a list indexed by `repeat_index` must have exactly that many entries.
    Raises _ExprError (GF130 syntax, GF131 unknown name, GF221 list length, GF222 types)."""
    if len(text) > 200:
        raise _ExprError("GF130", f"expression is too long ({len(text)} chars, limit 200)", 200)
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise _ExprError("GF130", "not an expression", max(0, (e.offset or 1) - 1)) from None
    shift = len(text) - len(text.lstrip())

    def kind(v: Any) -> str:
        return param_kind(v) if not isinstance(v, list) else "list"

    def want(v: Any, kinds: tuple[str, ...], node, what: str) -> Any:
        if kind(v) not in kinds or (kinds == ("int", "float") and isinstance(v, bool)):
            raise _ExprError("GF222", f"{what} needs {' or '.join(_KIND[k] for k in kinds)}, got {_KIND[kind(v)]} "
                             f"`{v}`", shift + node.col_offset)
        return v

    def walk(node, depth: int = 0) -> Any:
        at = shift + getattr(node, "col_offset", 0)
        if depth > 32:
            raise _ExprError("GF130", "expression is nested too deeply", at)
        if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise _ExprError("GF131", f"`{node.id}` is not a param", at,
                                 f"`{REPEAT_INDEX}` is known only in the attributes of a block call with `repeat`"
                                 if node.id == REPEAT_INDEX else None)
            return env[node.id]
        if isinstance(node, ast.Subscript):
            table = walk(node.value, depth + 1)
            if not isinstance(table, list):
                raise _ExprError("GF222", f"only a per-layer list can be indexed, not {_KIND[kind(table)]} `{table}`",
                                 at)
            i = want(walk(node.slice, depth + 1), ("int",), node.slice, "an index")
            indexed_by_layer = any(isinstance(n, ast.Name) and n.id == REPEAT_INDEX for n in ast.walk(node.slice))
            name = node.value.id if isinstance(node.value, ast.Name) else "the list"
            if indexed_by_layer and repeat is not None and len(table) != repeat:
                raise _ExprError("GF221", f"per-layer list `{name}` has {len(table)} entries but the call repeats "
                                 f"{repeat} times", at, f"give `{name}` one entry per repetition ({repeat})")
            if not -len(table) <= i < len(table):
                raise _ExprError("GF221", f"index {i} is out of range for `{name}` ({len(table)} entries)", at)
            if len({kind(v) for v in table}) > 1:
                raise _ExprError("GF222", f"the entries of `{name}` mix types: a per-layer list holds values of one "
                                 "type", at)
            return table[i]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not want(walk(node.operand, depth + 1), ("bool",), node.operand, "`not`")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = want(walk(node.operand, depth + 1), ("int", "float"), node.operand, "a sign")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BoolOp):
            values = [want(walk(v, depth + 1), ("bool",), v, "`and` / `or`") for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            a = want(walk(node.left, depth + 1), ("int", "float"), node.left, "arithmetic")
            b = want(walk(node.right, depth + 1), ("int", "float"), node.right, "arithmetic")
            try:
                return _ARITH[type(node.op)](a, b)
            except ZeroDivisionError:
                raise _ExprError("GF130", "division by zero", at) from None
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            # membership in a list param of any length (Qwen3-MoE's `repeat_index in mlp_only_layers`)
            item, table = walk(node.left, depth + 1), walk(node.comparators[0], depth + 1)
            if not isinstance(table, list):
                raise _ExprError("GF222", f"`in` needs a list param on its right, got {_KIND[kind(table)]} `{table}`",
                                 shift + node.comparators[0].col_offset)
            return (item in table) == isinstance(node.ops[0], ast.In)
        if isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
            left, result = walk(node.left, depth + 1), True
            for op, right_node in zip(node.ops, node.comparators):
                right = walk(right_node, depth + 1)
                if type(op) not in (ast.Eq, ast.NotEq) or kind(left) != kind(right):
                    want(left, ("int", "float"), node.left, "an ordering")
                    want(right, ("int", "float"), right_node, "an ordering")
                result, left = result and _CMP[type(op)](left, right), right
            return result
        if isinstance(node, ast.IfExp):
            test = want(walk(node.test, depth + 1), ("bool",), node.test, "the condition of `if`")
            return walk(node.body if test else node.orelse, depth + 1)
        raise _ExprError("GF130", "only numbers, strings, param names, `list[i]`, + - * / // %, comparisons, "
                         "`x in list`, `and` / `or` / `not` and `a if c else b` are allowed", at)

    return walk(tree)


@lru_cache(maxsize=4096)
def _names(text: str) -> tuple[str, ...]:
    """The distinct names an expression reads, in order."""
    return tuple(dict.fromkeys(_NAME.findall(text)))


def _attrs_key(op: str, values: dict) -> tuple:
    # types too: `1`, `1.0` and `true` are equal keys to a dict but not to a strict validator
    return (op,) + tuple([(k, type(v), v) for k, v in values.items()])


def _ints(text: str, env: dict[str, Any]) -> dict[str, int]:
    """The params of `env` that `text` names and that can size a dimension (only the names it reads are
    looked up while parsing: the whole env, rebuilt per expression, cost more than the parse)."""
    return {k: env[k] for k in _names(text) if k in env and param_kind(env[k]) == "int"}


class _Abort(Exception):
    """Expansion can't go on (a limit was hit); the diagnostic is already recorded."""


class Slot:
    """A value reference: an IR node name, an alias of another slot, or broken (already reported)."""

    def __init__(self, target: str | None = None, alias: "Slot | None" = None, broken: bool = False,
                 problem: str | None = None, off: str | None = None):
        self.target, self.alias, self.broken, self.problem = target, alias, broken, problem
        self.off = off   # a node left out by its `when`: why, for whoever reads it

    def resolve(self) -> "Slot":
        s, hops = self, 0
        while s.alias is not None and hops < 10_000:
            s, hops = s.alias, hops + 1
        return s


@dataclass
class Scope:
    ctx: SpecCtx                  # file whose text this scope's nodes come from (for spans)
    base: tuple                   # YAML path of the scope's `nodes` owner: () or ("blocks", name)
    prefix: str                   # IR path prefix, e.g. "encoder.3."
    env: dict[str, int]           # params visible to expressions
    frames: tuple[Frame, ...]
    names: dict[str, Slot] = field(default_factory=dict)
    forward: dict[str, list[tuple[Slot, Span | None]]] = field(default_factory=dict)
    first_input: Slot | None = None
    # Memos a repeated body shares with its other repetitions: spans by YAML path (the same text is read
    # in every repetition), and `_dim` results and block-input patterns while the params are the same.
    spans: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)

    def span(self, *path: Any, key: bool = False) -> Span | None:
        k = (id(self.ctx), self.base + path, key)
        try:
            return self.spans[k]
        except KeyError:
            sp = self.spans[k] = self.ctx.span(self.base + path, key)
            return sp

    def define(self, name: str, slot: Slot) -> None:
        self.names[name] = slot
        for placeholder, _ in self.forward.pop(name, []):
            placeholder.alias = slot


@dataclass
class Expectation:
    """A block input's declared shape at one call, by slot; `_resolve` turns it into the IR's
    `BlockInputCheck` once every slot names a node."""

    slots: dict[str, Slot]
    patterns: dict[str, tuple[Dim, ...]]
    spans: dict[str, Span | None]
    call_span: Span | None
    block: str
    index: int | None = None
    carried: tuple[str, ...] = ()


class Expander:
    def __init__(self, prog: Program, compact: bool = True):
        self.prog, self.compact = prog, compact
        self.total = 0                                          # nodes of the full expansion so far
        self.diags: list[Diagnostic] = []
        root = prog.root
        self.ir = IRGraph(root.spec.name, root.file, root.spec.doc, params=dict(prog.params),
                          param_origin=dict(prog.origin))
        self.pending: list[tuple[IRNode, str, Slot]] = []      # (node, port or "attr:<name>", slot)
        self.expectations: list[Expectation] = []
        self.max_nodes = env_limit("GRAPHFORMER_MAX_NODES", MAX_NODES)
        self.max_repeat = env_limit("GRAPHFORMER_MAX_REPEAT", MAX_REPEAT)
        self.read: set[str] = set()                             # params some expression or attribute read
        self.bodies: dict[str, Body | None] = {}                # block name -> its body (block-valued attrs)
        self.hints_left = MAX_HINTS
        self.repeat_count: int | None = None                    # while a repeated call's attributes are read
        self.dims_seen: dict[tuple, Dim] = {}                   # _dim's successes
        self.attrs_seen: dict[tuple, Any] = {}                  # (op, values) -> validated attrs
        self.ir.weight_maps = {k: self._weight_map(k, m) for k, m in root.spec.weight_maps.items()}

    def _hint(self, word: str, choices) -> str | None:
        """A 'did you mean' hint, for the first MAX_HINTS misses only: thousands of unknown names in a
        namespace of thousands would otherwise cost a comparison per pair."""
        if self.hints_left <= 0:
            return None
        self.hints_left -= 1
        return did_you_mean(word, choices)

    # ------------------------------------------------------------------ entry point
    def run(self) -> tuple[IRGraph, list[Diagnostic]]:
        root = self.prog.root
        scope = Scope(root, (), "", dict(self.prog.params), ())
        try:
            self._refuse_oversized()
            self._inputs(scope)
            self._nodes(scope, root.spec.nodes)
            for out, ref in root.spec.outputs.items():
                span = root.span(("outputs", out))
                self.ir.output_spans[out] = span
                self.pending.append((IRNode(f"<output {out}>", "output", None, {}, span), out, self._lookup(scope, ref, span)))
            self._close(scope)
            self._resolve()
        except _Abort:
            pass
        library = bool(root.spec.blocks) and not root.spec.nodes  # a file of blocks for others to import
        if not root.spec.outputs and not library:
            self.diags.append(Diagnostic("GF115", "the spec has no `outputs`", root.span(("name",), key=True),
                                         help="add `outputs: {name: node}` naming the values the model returns"))
        self._unused_params()
        # a block body is expanded once per repetition: its errors are one error each, not `repeat` copies
        self.diags = list({(d.code, d.span, d.message): d for d in self.diags}.values())
        return self.ir, self.diags

    def _unused_params(self) -> None:
        """A declared param that nothing reads is a warning: setting it would silently change nothing."""
        if any(d.is_error for d in self.diags):
            return
        root = self.prog.root
        # a param a derived param's expression reads is read (`inner: {expr: expand * d_model}` reads expand)
        derived = {n for v in root.spec.params.values() if isinstance(getattr(v, "expr", None), str)
                   for n in _NAME.findall(v.expr)}
        for k in root.spec.params:
            if k not in self.read and k not in derived:
                self.diags.append(Diagnostic(
                    "GF113", f"param `{k}` is declared but nothing reads it", root.span(("params", k), key=True),
                    severity="warning", help="use it in a shape or an attribute (`eps: eps`), or delete it"))

    # ------------------------------------------------------------------ size before expansion
    def _refuse_oversized(self) -> None:
        """Refuse a spec whose repeat tree expands past the node limit before expanding any of it: nested
        repeats multiply, and unrolling them until the limit fires would cost minutes and gigabytes."""
        estimate = _SizeEstimate(self.prog, self.max_repeat)
        root = self.prog.root
        total = len(root.spec.inputs)
        for name, decl in root.spec.nodes.items():
            size = estimate.node(decl, dict(self.prog.params))
            total += size
            if total > self.max_nodes:
                self.diags.append(Diagnostic(
                    "GF150", f"the expanded graph would have more than {self.max_nodes:,} nodes "
                    f"(`{name}` alone expands to {size:,})", root.span(("nodes", name), key=True),
                    notes=["counted from the `repeat` counts before expanding anything"],
                    help="lower the `repeat` counts, or raise the limit with the GRAPHFORMER_MAX_NODES "
                         "environment variable"))
                raise _Abort()

    # ------------------------------------------------------------------ inputs and dims
    def _inputs(self, scope: Scope) -> None:
        spec = scope.ctx.spec
        symbols: dict[str, Span | None] = {}
        for name, decl in spec.inputs.items():
            shape = []
            if len(decl.shape) > MAX_RANK:
                self.diags.append(Diagnostic("GF266", f"input `{name}` has {len(decl.shape)} axes; at most "
                                             f"{MAX_RANK} are supported", scope.span("inputs", name, "shape")))
                shape = None   # unknown: its consumers stay quiet
            for i, expr in enumerate(decl.shape if shape is not None else ()):
                span = scope.span("inputs", name, "shape", i)
                d = self._dim(scope, expr, span, allow_symbols=True)
                if d is not None and d.is_const and d.value < 1:
                    self.diags.append(Diagnostic("GF102", f"dimension {i} of input `{name}` is {d.value}; sizes "
                                                 "must be at least 1", span))
                    d = None
                if d is None:
                    shape = None
                    break
                for s in d.symbols:
                    symbols.setdefault(s, span)
                shape.append(d)
            node = IRNode(name, "input", None, {}, scope.span("inputs", name, key=True),
                          shape=TensorType(tuple(shape), decl.dtype) if shape is not None else None)
            node.meta["dtype"] = decl.dtype
            node.meta["optional"] = decl.optional
            if decl.default is not None and self._default_fits(scope, name, decl):
                node.meta["default"] = decl.default
            self._add(node)
            self.ir.inputs[name] = name
            slot = Slot(name)
            scope.define(name, slot)
            if scope.first_input is None:
                scope.first_input = slot
        self._defaults_readable(scope)
        for s, span in symbols.items():
            if s in spec.dims:
                self.ir.dims[s] = spec.dims[s]
            elif spec.dims:
                guess = self._hint(s, list(spec.dims) + list(scope.env))
                self.diags.append(Diagnostic("GF131", f"unknown name `{s}` in an input shape"
                                             + (f" — did you mean `{guess}`?" if guess else ""), span,
                                             help="declare symbolic sizes under `dims:` or params under `params:`"))
            else:
                self.ir.dims[s] = DEFAULT_EXAMPLE.get(s, DEFAULT_EXAMPLE_SIZE)
        for s, v in spec.dims.items():
            if not 1 <= v <= MAX_DIM:
                self.diags.append(Diagnostic("GF150", f"example size `{s}` = {v} must be between 1 and {MAX_DIM:,}",
                                             scope.span("dims", s)))
            self.ir.dims.setdefault(s, v)

    def _default_fits(self, scope: Scope, name: str, decl) -> bool:
        """An input's `default` is a constant of its dtype, and the input is not also `optional` (GF252)."""
        value, dtype = decl.default, decl.dtype
        if decl.optional:
            why = "it is also `optional: true` (absent when omitted); an input is one or the other"
        elif dtype == "bool" and not isinstance(value, bool):
            why = "a bool input's default is `true` or `false`"
        elif dtype == "int64" and (isinstance(value, bool) or not isinstance(value, int) or
                                   not -2**63 <= value < 2**63):
            why = "an int64 input's default is an integer"
        elif dtype == "float32" and isinstance(value, bool):
            why = "a float32 input's default is a number"
        else:
            return True
        shown = str(value).lower() if isinstance(value, bool) else repr(value)   # as YAML writes it
        self.diags.append(Diagnostic("GF252", f"input `{name}` has `default: {shown}`, which it can't take: {why}",
                                     scope.span("inputs", name, "default"),
                                     help="a default is the constant the input stands for when a call leaves it "
                                          "out (`token_type_ids`: 0); drop `optional` or write a value of the dtype"))
        return False

    def _defaults_readable(self, scope: Scope) -> None:
        """A defaulted input is built at run time from the required inputs' shapes: each of its symbols must be
        an axis of one of them (GF250)."""
        required = required_shapes(self.ir)
        for name in scope.ctx.spec.inputs:
            node = self.ir.node(name)
            if node.meta.get("default") is None or node.shape is None:
                continue
            for s in unreadable(node.shape.shape, required):
                i = next(i for i, d in enumerate(node.shape.shape) if s in d.symbols)
                self.diags.append(Diagnostic(
                    "GF250", f"input `{name}` has a default, but the size `{s}` of its shape is not the size of an "
                    "axis of any required input", scope.span("inputs", name, "shape", i),
                    notes=[f"required inputs: {', '.join(required) or 'none'}"],
                    help="a left-out input is built with the shape the required inputs give at run time: use "
                         "their symbols, or make the input required"))

    def _dim(self, scope: Scope, expr: Any, span: Span | None, allow_symbols: bool,
             what: str = "") -> Dim | None:
        # A repeated block reads the same expressions with the same values in every repetition: a
        # success is remembered per (text, values it reads); anything that fails takes the full path.
        if not isinstance(expr, str):
            return self._dim_uncached(scope, expr, span, allow_symbols, what)
        names = _names(expr)
        hit = scope.dims.get((expr, allow_symbols))   # same env as a scope that read it before
        if hit is None:
            env = scope.env
            key = (expr, allow_symbols) + tuple([(type(v), v) for v in [env.get(n, _BAD) for n in names]])
            try:
                hit = self.dims_seen.get(key)
            except TypeError:   # a list param: no caching
                return self._dim_uncached(scope, expr, span, allow_symbols, what)
            if hit is None:
                hit = self._dim_uncached(scope, expr, span, allow_symbols, what)
                if hit is None:
                    return None
                self.dims_seen[key] = hit
            scope.dims[(expr, allow_symbols)] = hit
        self.read.update([n for n in names if n in scope.env])
        return hit

    def _dim_uncached(self, scope: Scope, expr: Any, span: Span | None, allow_symbols: bool,
                      what: str = "") -> Dim | None:
        if isinstance(expr, bool) or not isinstance(expr, (int, str)):
            self.diags.append(Diagnostic("GF130", f"expected a dimension (an integer or an expression){what}, got `{expr}`", span))
            return None
        names = set(_NAME.findall(expr)) if isinstance(expr, str) else set()
        self.read |= names & set(scope.env)
        typed = sorted(n for n in names if n in scope.env and param_kind(scope.env[n]) != "int")
        if typed:
            v = scope.env[typed[0]]
            self.diags.append(Diagnostic("GF132", f"param `{typed[0]}` is {_KIND[param_kind(v)]} (`{v}`); "
                                         f"only integer params can size a dimension{what}", span,
                                         notes=self._origin_notes([typed[0]]),
                                         help=f"declare `{typed[0]}` with an integer default, or use another param"))
            return None
        try:
            d = parse(expr, _ints(expr, scope.env)) if isinstance(expr, str) else Dim.const(expr)
        except DimError as e:
            sp = span
            if span is not None and e.offset is not None and isinstance(expr, str):
                # point at the character inside the expression; quoted scalars shift by one
                shift = self._quote_shift(scope.ctx, span)
                sp = Span(span.file, span.line, span.col + shift + e.offset, span.col + shift + e.offset + 1)
            self.diags.append(Diagnostic("GF130", f"bad dimension expression `{expr}`: {e}", sp))
            return None
        unknown = sorted(d.symbols)  # params were bound while parsing
        if unknown and not allow_symbols:
            name = unknown[0]
            guess = self._hint(name, scope.env)
            params = ", ".join(f"`{p}`" for p in [p for p in scope.env if p != REPEAT_INDEX][:16]) or "none"
            if REPEAT_INDEX in scope.env:   # not a param: the number of the repetition being read
                params += f" (and `{REPEAT_INDEX}`, the repetition's number)"
            where = f" in `{expr}`" if expr != name else ""
            hint = (f"`{REPEAT_INDEX}` is known only in the attributes of a block call with `repeat`"
                    if name == REPEAT_INDEX else f"params here: {params}; declare it under `params:` "
                                                 f"(e.g. `{name}: 8`) or write a number")
            self.diags.append(Diagnostic(
                "GF131", f"`{name}`{where}{what} is not a param" + (f" — did you mean `{guess}`?" if guess else ""),
                span, help=None if guess else hint))
            return None
        return d

    def _origin_notes(self, names) -> list[str]:
        """Where non-default param values came from (`--set`, a preset), for the diagnostics they cause."""
        return [f"`{n}` = {self.prog.params[n]!r} comes from {self.prog.origin[n]}" for n in names
                if n in self.prog.origin]

    def _param_ref(self, scope: Scope, value: Any) -> tuple[Any, str | None]:
        """An attribute written as a param's name reads the param's value (`eps: eps`, `kind: act`)."""
        if isinstance(value, str) and value in scope.env:
            self.read.add(value)
            return scope.env[value], value
        return value, None

    def _attr_value(self, scope: Scope, attrs: type, key: str, value: Any, span: Span | None) -> Any:
        """A non-dimension attribute: a param by name, an arithmetic expression over params where the
        attribute is a real number (`scale: d_model ** -0.5`), else the value as written."""
        value, ref = self._param_ref(scope, value)
        if ref is not None or not isinstance(value, str) or not attrs.is_real(key):
            return value
        return self._real(scope.ctx, scope.env, key, value, span)

    def _real(self, ctx: SpecCtx, env: dict, key: str, value: str, span: Span | None) -> Any:
        """`value`, an arithmetic expression over the numeric params of `env`, as a float (GF130 if bad)."""
        numeric = {n: v for n, v in env.items() if param_kind(v) in ("int", "float")}
        try:
            result = number(value, numeric)
        except DimError as e:
            sp = span
            if span is not None and e.offset is not None:
                at = span.col + self._quote_shift(ctx, span) + e.offset
                sp = Span(span.file, span.line, at, at + 1)
            self.diags.append(Diagnostic("GF130", f"bad expression `{value}` for `{key}`: {e}", sp))
            return _BAD
        self.read |= set(_NAME.findall(value)) & set(numeric)
        if not math.isfinite(result):   # a literal `1e999`, or a param that is not finite
            self.diags.append(Diagnostic("GF130", f"`{value}` for `{key}` is {result}, not a finite number", span))
            return _BAD
        return result

    def _weight_map(self, name: str, decl: WeightMapDecl) -> WeightMap:
        """The IR's own copy of a weight map (backends never read the file's models); a rule's `scale` may be
        an expression over params (`head_dim ** -0.5`), evaluated here."""
        ctx, rules = self.prog.root, []
        for k, r in enumerate(decl.rules):
            scale, at = r.scale, ("weight_maps", name, "rules", k, "scale")   # its span only where read
            if isinstance(scale, str):
                scale = self._real(ctx, self.prog.params, "scale", scale, ctx.span(at))
                scale = None if scale is _BAD else scale
            split, heads = self._split_layout(ctx, ("weight_maps", name, "rules", k), r)
            if scale is not None and not MIN_SCALE <= abs(scale) <= MAX_SCALE:
                self.diags.append(Diagnostic(
                    "GF180", f"weight-map scale {scale:g} is out of range: a scale multiplies every weight the "
                    f"rule reads, so it must be finite with a magnitude from {MIN_SCALE:g} to {MAX_SCALE:g}", ctx.span(at),
                    help="a factor this large or small (or zero) destroys the weights; check the expression"))
                scale = None
            sources = [r.src] if isinstance(r.src, str) else list(r.src or [None])
            sources = [self._index_bounds(ctx, s, ("weight_maps", name, "rules", k, "from")) if s and "{i" in s else s
                       for s in sources]
            combine, axis = self._combine(ctx, ("weight_maps", name, "rules", k), r)
            stored = self._stored_shape(ctx, ("weight_maps", name, "rules", k), r)
            rules.append(WeightRule(sources[0], (r.dst,) if isinstance(r.dst, str) else tuple(r.dst), r.transpose,
                                    r.unstack, r.reshape, scale, r.zero, split, heads, tuple(sources[1:]),
                                    axis, combine, stored, ctx.span(("weight_maps", name, "rules", k))))
        prefixes = [decl.strip_prefix] if isinstance(decl.strip_prefix, str) else decl.strip_prefix
        return WeightMap(tuple(rules), tuple(p for p in prefixes if p), tuple(decl.ignore), decl.reference,
                         self._renames(ctx, name, decl, rules))

    def _stored_shape(self, ctx: SpecCtx, at: tuple, r) -> tuple[int, ...] | None:
        """A rule's `stored_shape` evaluated over the params; GF302 where it can't name one stored tensor's
        shape (a `zero` rule stores none, `from: [...]` several) or a size is not a positive integer. Whether
        it holds the parameters' elements is checked after inference (weights/maps.py `stored_shape_problems`)."""
        if r.stored_shape is None:
            return None
        where = ctx.span(at + ("stored_shape",), key=True)
        if r.zero or isinstance(r.src, list):
            why = "a `zero` rule reads no tensor" if r.zero else "`from: [...]` reads several tensors"
            self.diags.append(Diagnostic("GF302", f"`stored_shape` names the shape of the one tensor a rule reads: {why}",
                                         where, help="remove `stored_shape` from this rule"))
            return None
        sizes = []
        for j, d in enumerate(r.stored_shape):
            value = d if isinstance(d, int) else self._real(ctx, self.prog.params, "stored_shape", d,
                                                            ctx.span(at + ("stored_shape", j)))
            if value is _BAD:
                return None
            if isinstance(value, bool) or value != int(value) or not 0 <= value <= MAX_DIM:
                self.diags.append(Diagnostic("GF302", f"`stored_shape` size {j} is {value:g}: a size is an integer "
                                             f"from 0 to {MAX_DIM:,}", ctx.span(at + ("stored_shape", j))))
                return None
            sizes.append(int(value))
        if len(sizes) > 8:
            self.diags.append(Diagnostic("GF302", f"`stored_shape` has {len(sizes)} axes; a tensor has at most 8",
                                         where))
            return None
        return tuple(sizes)

    def _renames(self, ctx: SpecCtx, name: str, decl: WeightMapDecl, rules: list) -> tuple:
        """The map's `renames` as (stored, read) pairs: GF291 for one that can't be a rename, GF292 for a rule
        written in a name the renames take away (the two checks and the renaming itself: weights/maps.py)."""
        renames = tuple((r.src, r.dst) for r in decl.renames)
        sources = [(k, j, s) for k, r in enumerate(rules) for j, s in enumerate((r.src, *r.more)) if s]
        bad, unreachable = rename_problems(renames, [s for _, _, s in sources])
        for k, why in bad:
            self.diags.append(Diagnostic("GF291", f"weight-map rename: {why}",
                                         ctx.span(("weight_maps", name, "renames", k)),
                                         help="`{from: STORED, to: READ}`: dotted segments a checkpoint stores "
                                              "(`language_model.model`) and the name the rules read (`language_model`)"))
        for s, why in unreachable:
            k, j, _ = sources[s]
            at = ("weight_maps", name, "rules", k, "from") + ((j,) if isinstance(decl.rules[k].src, list) else ())
            self.diags.append(Diagnostic("GF292", f"weight-map rule: {why}",
                                         ctx.span(at), help="write the rule in the names the renames give "
                                                            "(their `to`), or drop the rename"))
        return () if bad else renames

    def _combine(self, ctx: SpecCtx, at: tuple, r) -> tuple[str, int]:
        """How a rule's `from: [...]` becomes one tensor, and along which axis; GF269 for a `weight_norm` or
        `multiply` rule that doesn't read exactly two tensors into one parameter, or names two ways."""
        given = {k: getattr(r, k) for k in ("concat", "weight_norm", "multiply") if getattr(r, k) is not None}
        if not given:
            return "concat", 0
        how, axis = next(iter(given.items()))
        if how != "concat" or len(given) > 1:
            sources = r.src if isinstance(r.src, list) else [r.src]
            problem = (f"names {len(given)} ways to combine its tensors ({', '.join(f'`{k}`' for k in given)})"
                       if len(given) > 1 else
                       f"reads {len(sources)} tensors; `{how}` builds one parameter from two" if len(sources) != 2
                       else "splits its result (a list in `to`) or unstacks it" if isinstance(r.dst, list) or r.unstack
                       else None)
            if problem:
                self.diags.append(Diagnostic(
                    "GF269", f"this weight-map rule {problem}", ctx.span(at),
                    help="`weight_norm: AXIS` reads `from: [G, V]` (magnitude, direction) into one weight; "
                         "`multiply: AXIS` reads `from: [W, S]` (a tensor, a per-channel scale) into one"))
        return how, axis

    def _index_bounds(self, ctx: SpecCtx, src: str, at: tuple) -> str:
        """`{i+K}`, `{i-K}`, `{i*K}`, `{i//K}`, `{i<K}` in a rule's `from` with a param K replaced by its value
        (GF244 unless it is a non-negative integer param), so the map in the IR holds numbers only; a factor
        or divisor of 0, or any K above MAX_INDEX_K, is GF258."""
        def value(m: re.Match) -> str:
            kind, k = m.group(1), m.group(2)
            v = int(k) if k.isdigit() else self.prog.params.get(k)
            if k.startswith("("):   # an expression of params: ALBERT's `{i//(layers // groups)}`
                try:
                    v = per_layer_value(k, dict(self.prog.params), None)
                except _ExprError as e:
                    self.diags.append(Diagnostic(e.code, f"the layer index `{m.group(0)}`: {e.message}",
                                                 ctx.span(at), help=e.help))
                    return m.group(0)
                if param_kind(v) != "int" or v < 0:
                    self.diags.append(Diagnostic("GF244", f"the layer offset `{k}` in `{m.group(0)}` is `{v}`, not a "
                                                 "non-negative integer", ctx.span(at),
                                                 help="an expression in a layer index must give an integer"))
                    return m.group(0)
                self.read |= set(_NAME.findall(k)) & set(self.prog.params)
            elif not k.isdigit():
                if param_kind(v) != "int" or v < 0:
                    what = "names no param" if k not in self.prog.params else f"is `{v}`, not a non-negative integer"
                    self.diags.append(Diagnostic("GF244", f"the layer offset `{k}` in `{m.group(0)}` {what}",
                                                 ctx.span(at), help="`{i+K}` and `{i<K}` take an integer or an "
                                                 "integer param, e.g. `{i+dense_layers}`"))
                    return m.group(0)
                self.read.add(k)
            if v > MAX_INDEX_K or (v == 0 and kind in ("*", "//")):
                self.diags.append(Diagnostic("GF258", f"the layer index `{m.group(0)}` has K = {v}: K must be "
                                             f"{'from 1' if kind in ('*', '//') else 'from 0'} to {MAX_INDEX_K:,}",
                                             ctx.span(at), help="`{i*K}` and `{i//K}` take K ≥ 1"))
                return m.group(0)
            return f"{{i{kind}{v}}}"
        return re.sub(r"\{i(\+|-|\*|//|<)(\d+|[A-Za-z_]\w*|\([^{}()]{1,100}\))\}", value, src)

    def _split_layout(self, ctx: SpecCtx, at: tuple, r) -> tuple[str, int | None]:
        """A rule's fused layout: a list in `to` must say how its parts lie along dim 0 (GF225), because
        both layouts load without a shape error and only one is right; `split` and `heads` only where
        they mean something (GF226); `split: heads` with a positive integer count of heads (GF227)."""
        fused = isinstance(r.dst, list) and not r.zero
        if fused and r.split is None:
            self.diags.append(Diagnostic(
                "GF225", "this rule splits a fused tensor but does not say how its parts are laid out",
                ctx.span(at + ("to",), key=True),
                help="add `split: blocks` when the parts follow one another ([q; k; v], GPT-2's c_attn) or "
                     "`split: heads, heads: N` when they alternate per head ([heads, 3, head_dim], GPT-NeoX, "
                     "BLOOM); both load without a shape error, and only one computes the reference's function"))
            return "blocks", None
        if r.split is not None and not fused:
            self.diags.append(Diagnostic("GF226", "`split` applies to a rule with a list in `to` (a fused tensor)",
                                         ctx.span(at + ("split",), key=True),
                                         help="remove `split`, or list the parameters the tensor holds"))
            return "blocks", None
        if r.heads is not None and r.split != "heads":
            self.diags.append(Diagnostic("GF226", "`heads` is read only with `split: heads`",
                                         ctx.span(at + ("heads",), key=True),
                                         help="remove `heads`, or set `split: heads` if the parts alternate per head"))
            return r.split or "blocks", None
        if r.split != "heads":
            return r.split or "blocks", None
        if r.heads is None:
            self.diags.append(Diagnostic("GF227", "`split: heads` needs the number of heads: add `heads: N`",
                                         ctx.span(at + ("split",)),
                                         help="e.g. `heads: heads`, the spec's param"))
            return "heads", None
        heads = r.heads if isinstance(r.heads, int) else self._real(ctx, self.prog.params, "heads", r.heads,
                                                                    ctx.span(at + ("heads",)))
        if heads is _BAD:
            return "heads", None
        if isinstance(heads, bool) or heads != int(heads) or heads < 1:
            self.diags.append(Diagnostic("GF227", f"`heads` of `split: heads` must be a positive integer, got "
                                         f"{heads:g}", ctx.span(at + ("heads",))))
            return "heads", None
        return "heads", int(heads)

    @staticmethod
    def _quote_shift(ctx: SpecCtx, span: Span) -> int:
        lines = ctx.loaded.text.splitlines()
        if 0 < span.line <= len(lines):
            line = lines[span.line - 1]
            if span.col - 1 < len(line) and line[span.col - 1] in "'\"":
                return 1
        return 0

    def _block_param(self, scope: Scope, value: Any, span: Span | None, what: str, default: Any = 1) -> Any:
        """A block param's value: a float or boolean as written, a typed param by name, else a dimension."""
        value, ref = self._param_ref(scope, value)
        if ref is not None or isinstance(value, (bool, float)):
            return value
        if isinstance(value, str) and _LOGIC.search(value):   # a per-layer expression: a value of any type
            v = self._expression(scope, value, span, what)
            return default if v is _BAD else v
        iv = self._int(scope, value, span, what)
        return iv if iv is not None else default

    def _expression(self, scope: Scope, text: str, span: Span | None, what: str) -> Any:
        """A per-layer expression's value (per_layer_value), or _BAD once reported at the offending part."""
        try:
            value = per_layer_value(text, scope.env, self.repeat_count)
        except _ExprError as e:
            sp = span
            if span is not None:
                at = span.col + self._quote_shift(scope.ctx, span) + e.offset
                sp = Span(span.file, span.line, at, at + 1)
            self.diags.append(Diagnostic(e.code, f"{e.message} in `{text}` for {what}", sp, help=e.help))
            return _BAD
        self.read |= set(_NAME.findall(text)) & set(self.prog.params)
        for block in set(re.findall(r"['\"](\w+)['\"]", text)) & set(self.prog.blocks):
            self._mark_read(block, {}, set())   # a block a per-layer `op` may call: what it reads is read
        return value

    def _shape_texts(self, scope: Scope, exprs: list, span: Span | None) -> tuple | None:
        """A shape attribute (`[B * T, n, d_model]`): each dim with params bound and symbols kept, as the
        text of its canonical Dim (ints stay ints); None after reporting a bad one."""
        dims = [self._dim(scope, e, span, allow_symbols=True) for e in exprs]
        if any(d is None for d in dims):
            return None
        unknown = sorted(set().union(*(d.symbols for d in dims)) - set(self.ir.dims))
        if unknown:   # neither a param nor a symbol of the inputs: a typo, most likely
            guess = self._hint(unknown[0], list(self.ir.dims) + list(scope.env))
            self.diags.append(Diagnostic("GF131", f"unknown name `{unknown[0]}` in a shape"
                                         + (f" — did you mean `{guess}`?" if guess else ""), span,
                                         help="a shape names params and the symbols of the spec's inputs"))
            return None
        return tuple(d.value if d.is_const else str(d) for d in dims)

    def _int(self, scope: Scope, expr: Any, span: Span | None, what: str) -> int | None:
        d = self._dim(scope, expr, span, allow_symbols=False, what=f" for {what}")
        if d is None:
            return None
        if not d.is_const:
            self.diags.append(Diagnostic("GF124", f"{what} must be a concrete number, got `{d}`", span))
            return None
        return d.value

    # ------------------------------------------------------------------ nodes
    def _nodes(self, scope: Scope, nodes: dict[str, NodeDecl]) -> None:
        prev = scope.first_input
        for name, decl in nodes.items():   # names are identifiers (load.data_diagnostics)
            if name in scope.names:
                self.diags.append(Diagnostic("GF105", f"`{name}` is already the name of an input",
                                             scope.span("nodes", name, key=True), help="rename the node"))
                continue
            on = self._when(scope, name, decl)
            if on is not True:
                slot = Slot(broken=True) if on is None else self._switch_off(scope, name, decl, on, prev)
                scope.define(name, slot)
                prev = slot
                continue
            decl, via = self._chosen_op(scope, decl)
            if decl.op in REGISTRY:
                slot = self._primitive(scope, name, decl, prev)
            elif decl.op in self.prog.blocks:
                slot = self._call(scope, name, decl, prev)
            else:
                guess = self._hint(decl.op, list(REGISTRY) + list(self.prog.blocks))
                self.diags.append(Diagnostic(
                    "GF100", f"unknown op `{decl.op}`" + (f" (the value of param `{via}`)" if via else "")
                    + (f" — did you mean `{guess}`?" if guess else ""),
                    scope.span("nodes", name, "op"),
                    help=None if guess else "run `graphformer schema` or see docs/ops.md for the list of ops"))
                slot = Slot(broken=True)
            scope.define(name, slot)
            prev = slot

    def _when(self, scope: Scope, name: str, decl: NodeDecl) -> bool | str | None:
        """True when the node is in; else why it is out (`pooler` is false); None if `when` is wrong."""
        if decl.when is None:
            return True
        text = decl.when.strip()
        negated = text.startswith("not ")
        param = text[4:].strip() if negated else text
        span = scope.span("nodes", name, "when")
        if param not in scope.env and not _NAME.fullmatch(param):   # a boolean expression: `layer > 0`
            value = self._expression(scope, text, span, "`when`")
            if value is _BAD:
                return None
            if not isinstance(value, bool):
                self.diags.append(Diagnostic("GF201", f"`when: {text}` is {_KIND[param_kind(value)]}, not true or "
                                             "false", span,
                                             help="compare it: `when: layer > 0`, `when: kind == 'sliding'`"))
                return None
            return True if value else f"`when: {text}` is false"
        if param not in scope.env:
            guess = self._hint(param, [k for k, v in scope.env.items() if param_kind(v) == "bool"])
            self.diags.append(Diagnostic("GF201", f"`when: {text}` names no param" + (
                f" — did you mean `{guess}`?" if guess else ""), span,
                help="`when` takes a boolean param, or `not` and one: `when: pooler`, `when: not pooler`"))
            return None
        self.read.add(param)
        value = scope.env[param]
        if param_kind(value) != "bool":
            self.diags.append(Diagnostic("GF201", f"`when: {text}` needs a boolean param; `{param}` is "
                                         f"{_KIND[param_kind(value)]} (`{value}`)", span,
                                         help="declare the switch with a `true` or `false` default"))
            return None
        if value != negated:
            return True
        return f"`when: {text}` and `{param}` is {str(value).lower()}"

    def _switch_off(self, scope: Scope, name: str, decl: NodeDecl, why: str, prev: Slot | None) -> Slot:
        """A node left out by its `when`. Where its output has its input's type — an op of _SAME_TYPE on one
        input, or a block call whose outputs are all carried inputs — it passes that input through
        (ModernBERT's first layer has no attention norm). Otherwise its name (and a block call's outputs)
        stand for an absent value that only outputs may name (they are dropped). The params its attributes
        name count as read."""
        path = scope.prefix + name
        self.ir.switched_off[path] = why
        self._mark_read(decl.op, decl.attrs, set())
        slot = Slot(broken=True, off=f"`{name}`, which is left out ({why})")
        decl, _ = self._chosen_op(scope, decl)
        if decl.op in self.prog.blocks:
            block = self.prog.blocks[decl.op][1]
            through = all(o in block.inputs for o in block.outputs)
            ins = self._resolve_in(scope, name, decl, prev, list(block.inputs), [], False) if through else None
            for out in block.outputs:
                scope.define(f"{name}.{out}", ins[out] if ins and out in ins else slot)
            return ins[next(iter(block.outputs))] if ins and len(block.outputs) == 1 and \
                next(iter(block.outputs)) in ins else slot
        if decl.op in _SAME_TYPE and not isinstance(decl.in_, list):
            if isinstance(decl.in_, dict):   # the data input only: a mask or a bias does not pass through
                decl = decl.model_copy(update={"in_": decl.in_.get("x")})
            ins = self._resolve_in(scope, name, decl, prev, ["x"], ["x"], False)
            if ins:
                return ins["x"]
        return slot

    def _mark_read(self, op: str, attrs: dict[str, Any], seen: set[str]) -> None:
        """Params that a left-out node (or the block it calls) names: setting them is not a no-op in general."""
        for v in attrs.values():
            if isinstance(v, str):
                self.read |= set(_NAME.findall(v)) & set(self.prog.params)
                if v in self.prog.blocks:   # a block an attribute names (a moe's `expert`) runs too
                    self._mark_read(v, {}, seen)
        if op in self.prog.blocks and op not in seen:
            seen.add(op)
            block = self.prog.blocks[op][1]
            self._mark_read("", dict(block.params), seen)
            for d in block.nodes.values():
                self._mark_read(d.op, {**d.attrs, "repeat": d.repeat, "when": d.when, "share": d.share}, seen)

    def _resolve_in(self, scope: Scope, name: str, decl: NodeDecl, prev: Slot | None,
                    ports: list[str], required: list[str], variadic: bool) -> dict[str, Slot] | None:
        """`in` → {port: slot}: a string, a list (positional) or a mapping (named); omitted = previous node."""
        ref, base = decl.in_, ("nodes", name, "in")
        if not ports:  # a block without inputs
            if ref is not None:
                self.diags.append(Diagnostic("GF106", f"`{name}` ({decl.op}) takes no inputs", scope.span(*base),
                                             help="remove `in`"))
                return None
            return {}
        if ref is None:
            if prev is None:
                self.diags.append(Diagnostic("GF110", f"node `{name}` has no input: there is no previous node",
                                             scope.span("nodes", name, key=True), help="add `in: <node>`"))
                return None
            out = {ports[0]: prev}
        elif isinstance(ref, str):
            out = {ports[0]: self._ref(scope, ref, base)}
        elif isinstance(ref, list):
            if variadic:
                if len(ref) < 2:
                    self.diags.append(Diagnostic("GF106", f"`in` of `{name}` needs at least two inputs", scope.span(*base)))
                    return None
                out = {f"{ports[0]}{i}": self._ref(scope, r, base + (i,)) for i, r in enumerate(ref)}
                return out
            if len(ref) > len(ports):
                self.diags.append(Diagnostic("GF106", f"`{name}` takes at most {len(ports)} inputs "
                                             f"({', '.join(ports)}), got {len(ref)}", scope.span(*base)))
                return None
            out = {p: self._ref(scope, r, base + (i,)) for i, (p, r) in enumerate(zip(ports, ref))}
        else:
            out = {}
            for p, r in ref.items():
                if p not in ports:
                    guess = self._hint(p, ports)
                    self.diags.append(Diagnostic(
                        "GF106", f"`{decl.op}` has no input `{p}`" + (f" — did you mean `{guess}`?" if guess else ""),
                        scope.span(*base, p, key=True), help="inputs: " + ", ".join(f"`{q}`" for q in ports)))
                    return None
                out[p] = self._ref(scope, r, base + (p,))
        if variadic and len(out) < 2:
            self.diags.append(Diagnostic("GF106", f"`{name}` ({decl.op}) needs at least two inputs: `in: [a, b]`",
                                         scope.span("nodes", name, key=True)))
            return None
        missing = [p for p in required if p not in out]
        if missing and not variadic:
            self.diags.append(Diagnostic("GF106", f"`{name}` is missing input `{missing[0]}`",
                                         scope.span(*base) or scope.span("nodes", name, key=True),
                                         help="name every input: `in: {" + ", ".join(f"{p}: ..." for p in required) + "}`"))
            return None
        return out

    def _ref(self, scope: Scope, ref: str, at: tuple) -> Slot:
        """`_lookup` of a reference written at `at` in the scope's YAML: the span, which only a reference to a
        name not defined yet keeps (for GF110), is looked up only then."""
        slot = scope.names.get(ref)
        return slot if slot is not None else self._lookup(scope, ref, scope.span(*at))

    def _chosen_op(self, scope: Scope, decl: NodeDecl) -> tuple[NodeDecl, str | None]:
        """`op: ffn` with a string param `ffn`: the op or block the param names, so that a preset can swap a
        block (T5's dense FFN for v1.1's gated one). Returns the declaration and the param read, if any."""
        if decl.op in REGISTRY or decl.op in self.prog.blocks:
            return decl, None
        value, ref = self._param_ref(scope, decl.op)
        if ref is None or not isinstance(value, str):
            return decl, None
        return decl.model_copy(update={"op": value}), ref

    def _primitive(self, scope: Scope, name: str, decl: NodeDecl, prev: Slot | None) -> Slot:
        op = REGISTRY[decl.op]
        path = scope.prefix + name
        again = scope.dims.get(("<node>", name))
        if again is not None:   # a later repetition with the same params: only its inputs differ
            return self._primitive_again(scope, name, decl, prev, op, again)
        reported_before = len(self.diags)
        node = IRNode(path, decl.op, None, {}, scope.span("nodes", name, key=True), scope.frames)
        self._add(node)
        if decl.repeat is not None:
            self.diags.append(Diagnostic("GF107", "`repeat` applies to block calls only",
                                         scope.span("nodes", name, "repeat", key=True),
                                         help=f"wrap `{name}` in a block and repeat the block call"))
        if decl.share is not None:
            self.diags.append(Diagnostic("GF270", "`share` applies to repeated block calls only",
                                         scope.span("nodes", name, "share", key=True),
                                         help=f"wrap `{name}` in a block, repeat the block call and share that"))
        raw = decl.attrs
        values: dict[str, Any] = {}
        ok = True
        spans = node.meta["attr_spans"] = {k: scope.span("nodes", name, k) for k in raw}
        refs: dict[str, list[str]] = {}
        reported: set[str] = set()   # attributes whose value is already an error
        if "tie" in raw and "tied" in raw and self._param_ref(scope, raw["tie"])[0] is False:
            raw = {k: v for k, v in raw.items() if k != "tied"}  # an untied head owns its weight
        env = scope.env
        for k, v in raw.items():
            if isinstance(v, str):
                refs[k] = sorted([n for n in _names(v) if n in env])
            if k in op.attrs.dim_fields and isinstance(v, str) and v in op.attrs.words(k):
                values[k] = v   # a word the attribute takes besides numbers (`padding: same`)
            elif k in op.attrs.dim_fields and isinstance(v, list):   # a pair `[h, w]`: each entry a dimension
                ivs = [self._int(scope, e, scope.span("nodes", name, k, i), f"`{k}`") for i, e in enumerate(v)]
                ok &= all(iv is not None for iv in ivs)
                values[k] = tuple(iv if iv is not None else 1 for iv in ivs)
            elif k in op.attrs.dim_fields and v is not None:
                words = " or ".join(f"`{w}`" for w in op.attrs.words(k)) if isinstance(v, str) else ""
                what = f"`{k}`" + (f" (a number or {words})" if words else "")
                iv = self._int(scope, v, spans[k], what)
                ok &= iv is not None
                values[k] = iv if iv is not None else 1
            elif k in op.attrs.shape_fields and isinstance(v, list):
                texts = self._shape_texts(scope, v, spans[k])
                ok &= texts is not None
                values[k] = texts if texts is not None else (-1,)   # reported: validate a placeholder
            elif k in op.attrs.block_fields and v is not None:
                values[k] = v  # a block name; expanded below once the attributes validate
            elif k in op.attrs.ref_fields and v is not None:
                if not isinstance(v, str):
                    values[k] = v  # let pydantic report the type
                    continue
                values[k] = v
                self.pending.append((node, f"attr:{k}", self._lookup(scope, v, spans[k])))
            else:
                values[k] = self._attr_value(scope, op.attrs, k, v, spans[k])
                if values[k] is _BAD:   # reported; validate the default so one mistake is one error
                    ok = False
                    reported.add(k)
                    del values[k]
        node.meta["param_refs"] = {k: r for k, r in refs.items() if r}
        node.meta["dim_text"] = {k: v for k, v in raw.items() if k in op.attrs.dim_fields}   # GF120's hint
        try:
            node.attrs = self._validated(decl.op, op.attrs, values, ok)
            if node.attrs is None:
                node.attrs = op.attrs.model_validate(values)
                if self._finite_attrs(scope, name, node.attrs):
                    self._remember(decl.op, op.attrs, values, node.attrs, ok)
                else:
                    ok = False
            for k in op.attrs.block_fields:
                if getattr(node.attrs, k, None) is not None:
                    body = self._body(scope, getattr(node.attrs, k), scope.span("nodes", name, k))
                    ok &= body is not None
                    node.attrs.__pydantic_private__["_body"] = body
        except ValidationError as e:
            diags = pydantic_diagnostics(e, scope.ctx.loaded, scope.base + ("nodes", name),
                                         op.attrs, what=f" of op `{decl.op}`", present=reported,
                                         example=op.example)
            used = sorted({p for r in refs.values() for p in r})
            for d in diags:
                for p in used:   # `kind: act` was rejected for act's value, not for the text `act`
                    if f"(got `{p}`)" in d.message:
                        d.message = d.message.replace(f"(got `{p}`)", f"(got `{scope.env[p]}` from param `{p}`)")
                d.notes = list(d.notes) + self._origin_notes(used)
            self.diags.extend(diags)
            ok = False
        if ok and len(self.diags) == reported_before and not op.attrs.block_fields:
            refs_read = tuple((k, v) for k, v in raw.items() if k in op.attrs.ref_fields and isinstance(v, str))
            scope.dims[("<node>", name)] = (node.attrs, node.meta["attr_spans"], node.meta["param_refs"], refs_read)
        return self._connect(scope, name, decl, prev, op, node, ok)

    def _primitive_again(self, scope: Scope, name: str, decl: NodeDecl, prev: Slot | None, op: Any,
                         again: tuple) -> Slot:
        """`_primitive` for a node whose attributes were read, without error, in a repetition with the same
        params: the same attrs, spans and param reads; only the references are looked up again."""
        attrs, attr_spans, param_refs, refs_read = again
        node = IRNode(scope.prefix + name, decl.op, attrs, {}, scope.span("nodes", name, key=True), scope.frames)
        self._add(node)
        node.meta["attr_spans"], node.meta["param_refs"] = attr_spans, param_refs
        node.meta["dim_text"] = {k: v for k, v in decl.attrs.items() if k in op.attrs.dim_fields}
        for k, v in refs_read:
            self.pending.append((node, f"attr:{k}", self._lookup(scope, v, scope.span("nodes", name, k))))
        return self._connect(scope, name, decl, prev, op, node, True)

    def _connect(self, scope: Scope, name: str, decl: NodeDecl, prev: Slot | None, op: Any, node: IRNode,
                 ok: bool) -> Slot:
        ins = self._resolve_in(scope, name, decl, prev, op.port_names, op.required_ports, op.variadic)
        if ins is None or not ok:
            node.meta["broken"] = True
        for port, slot in (ins or {}).items():
            self.pending.append((node, port, slot))
        return Slot(node.name)

    # Attrs are frozen models: nodes with the same op and values (every repetition of a block, mostly)
    # share one validated, finite instance. Not for block-valued attrs, which carry their expanded body.
    def _validated(self, op: str, attrs_cls: type, values: dict, ok: bool) -> Any:
        if not ok or attrs_cls.block_fields:
            return None
        try:
            return self.attrs_seen.get(_attrs_key(op, values))
        except TypeError:   # a list value
            return None

    def _remember(self, op: str, attrs_cls: type, values: dict, attrs: Any, ok: bool) -> None:
        if ok and not attrs_cls.block_fields:
            try:
                self.attrs_seen[_attrs_key(op, values)] = attrs
            except TypeError:
                pass

    def _finite_attrs(self, scope: Scope, name: str, attrs: Any) -> bool:
        """Every float attribute is finite (`eps: "nan"` passes pydantic as a string): the torch backend
        writes them into generated code as `repr`, and nan or inf there is not a number."""
        ok = True
        for k in type(attrs).model_fields:
            v = getattr(attrs, k)
            if isinstance(v, float) and not math.isfinite(v):
                self.diags.append(Diagnostic("GF102", f"`{k}` is {v}, not a finite number",
                                             scope.span("nodes", name, k)))
                ok = False
        return ok

    def _body(self, scope: Scope, block_name: str, span: Span | None) -> Body | None:
        """A block named by an attribute (MoE's expert), expanded once on its own into a small IR.

        Its first input's type comes from the node that uses it (`Body.at`); its params are the spec's
        and the block's defaults. Expanded once per block name and shared by every node naming it."""
        if block_name in self.bodies:
            return self.bodies[block_name]
        if block_name not in self.prog.blocks:
            guess = self._hint(block_name, list(self.prog.blocks))
            self.diags.append(Diagnostic("GF100", f"unknown block `{block_name}`" + (f" — did you mean `{guess}`?"
                                         if guess else ""), span,
                                         help="name a block defined under `blocks:` (or imported)"))
            return None
        bctx, block = self.prog.blocks[block_name]
        if len(block.inputs) != 1 or len(block.outputs) != 1:
            self.diags.append(Diagnostic("GF106", f"block `{block_name}` used as a sub-graph must have exactly one "
                                         f"input and one output (it has {len(block.inputs)} and "
                                         f"{len(block.outputs)})", span))
            return None
        sub = Expander(self.prog, self.compact)
        sub.ir = IRGraph(block_name, bctx.file, params=dict(self.prog.params))
        env = dict(self.prog.params)
        for k, v in block.params.items():
            env[k] = sub._block_param(Scope(bctx, ("blocks", block_name), "", env, ()), v,
                                      bctx.span(("blocks", block_name, "params", k)), f"`{k}`")
        inner = Scope(bctx, ("blocks", block_name), "", env, ())
        (in_name,) = block.inputs
        sub._add(IRNode(in_name, "input", None, {}, bctx.span(("blocks", block_name, "inputs", in_name), key=True)))
        sub.ir.inputs[in_name] = in_name
        inner.define(in_name, Slot(in_name))
        inner.first_input = inner.names[in_name]
        try:
            sub._nodes(inner, block.nodes)
            ((out, ref),) = block.outputs.items()
            span_out = bctx.span(("blocks", block_name, "outputs", out))
            sub.pending.append((IRNode(f"<output {out}>", "output", None, {}, span_out), out,
                                sub._lookup(inner, ref, span_out)))
            sub._close(inner)
            sub._resolve()
        except _Abort:
            pass
        self.diags += sub.diags
        self.read |= sub.read
        if any(d.is_error for d in sub.diags):
            self.bodies[block_name] = None
            return None
        sub.ir.connect()
        body = self.bodies[block_name] = Body(block_name, sub.ir)
        self.ir.bodies.append(body)
        return body

    def _call(self, scope: Scope, name: str, decl: NodeDecl, prev: Slot | None) -> Slot:
        bctx, block = self.prog.blocks[decl.op]
        call_span = scope.span("nodes", name, key=True)
        if any(f.block == decl.op for f in scope.frames):  # would unroll forever
            chain = " → ".join(f"`{b}`" for b in [f.block for f in scope.frames] + [decl.op])
            self.diags.append(Diagnostic("GF144", f"block `{decl.op}` calls itself: {chain}",
                                         scope.span("nodes", name, "op"),
                                         help="a block may call other blocks, but not itself (use `repeat`)"))
            return Slot(broken=True)
        if not block.outputs:  # reported once per block: run() drops repeats
            self.diags.append(Diagnostic("GF115", f"block `{decl.op}` has no `outputs`",
                                         bctx.span(("blocks", decl.op, "outputs"), key=True),
                                         help="name the values the block returns: `outputs: {x: node}`"))
            return Slot(broken=True)
        count = 1
        if decl.repeat is not None:
            count = self._int(scope, decl.repeat, scope.span("nodes", name, "repeat"), "`repeat`")
            if count is None:
                return Slot(broken=True)
            if not 1 <= count <= self.max_repeat:
                self.diags.append(Diagnostic("GF150", f"`repeat` is {count}; it must be between 1 and {self.max_repeat:,}",
                                             scope.span("nodes", name, "repeat"),
                                             help="raise the limit with the GRAPHFORMER_MAX_REPEAT environment variable, "
                                             f"e.g. GRAPHFORMER_MAX_REPEAT={count}" if count > self.max_repeat else None))
                return Slot(broken=True)
        owners = self._share(scope, name, decl, count) if decl.share is not None else None
        in_names = list(block.inputs)
        required = [k for k, v in block.inputs.items() if not (isinstance(v, BlockInputDecl) and v.optional)]
        ins = self._resolve_in(scope, name, decl, prev, in_names, required, False)
        if ins is None:
            return Slot(broken=True)
        for k in in_names:   # an optional input left out: the optional ports that read it are not fed
            ins.setdefault(k, Slot(broken=True, off=f"block input `{k}`, which the call `{name}` leaves out"))
        carried = [o for o in block.outputs if o in block.inputs]
        if decl.repeat is not None and count > 1 and self.compact:
            slot = self._compact_call(scope, name, decl, ins, carried, count, call_span, owners)
            if slot is not None:
                return slot
        outs: dict[str, Slot] = {}
        last_env, dims = None, {}
        for i in range(count):
            idx = i if decl.repeat is not None else None
            if last_env is None or decl.attrs:   # without call attributes every repetition sees the same params
                self.repeat_count = count if idx is not None else None
                seen = len(self.diags)
                env = self._call_env(scope, name, decl, idx)
                self.repeat_count = None
                if any(d.is_error for d in self.diags[seen:]):
                    # a param without a value: this body's shapes would only repeat that error. Carried
                    # streams pass through, so the repetitions after it are still checked on their own.
                    outs = {o: ins[o] if o in carried else Slot(broken=True) for o in block.outputs}
                    last_env = None
                    continue
            if env is not last_env and env != last_env:   # params differ (`repeat_index`): a memo of its own
                last_env, dims = env, {}
            prefix = f"{scope.prefix}{name}." + (f"{i}." if idx is not None else "")
            owner = owners[i] if owners is not None and owners[i] != i else None
            frame = Frame(f"{scope.prefix}{name}", decl.op, idx, count if idx is not None else None, call_span, owner,
                          None if owners is None else len(set(owners)))
            inner = Scope(bctx, ("blocks", decl.op), prefix, env, scope.frames + (frame,), spans=scope.spans, dims=dims)
            for k in in_names:
                inner.define(k, ins[k])
            inner.first_input = ins[in_names[0]] if in_names else None
            self._expect(inner, block, ins, call_span, decl.op, idx, carried)
            self._nodes(inner, block.nodes)
            outs = {o: self._lookup(inner, ref, inner.span("outputs", o)) for o, ref in block.outputs.items()}
            self._close(inner)
            ins = {**ins, **{k: outs[k] for k in carried}}
        return self._call_outputs(scope, name, outs)

    def _share(self, scope: Scope, name: str, decl: NodeDecl, count: int) -> list[int] | None:
        """`share`: the repetition whose parameters each repetition uses (ALBERT's groups: repetition i uses
        the first of its group, i // (count / groups)); None (reported, GF270) where `share` is misused."""
        span = scope.span("nodes", name, "share")
        if decl.repeat is None:
            self.diags.append(Diagnostic("GF270", f"`share` on the call `{name}`, which does not `repeat`",
                                         scope.span("nodes", name, "share", key=True),
                                         help="sharing is between the repetitions of a call: add `repeat: N`, "
                                              "or drop `share`"))
            return None
        if decl.share is False:
            return None
        groups = 1 if decl.share is True else self._int(scope, decl.share, span, "`share`")
        if groups is None:
            return None
        if not 1 <= groups <= count or count % groups:
            self.diags.append(Diagnostic(
                "GF270", f"`share` asks for {groups} groups of the {count} repetitions of `{name}`, "
                + ("which must be at least 1" if groups < 1 else "which they don't divide into"), span,
                help=f"give a number of groups that divides the `repeat` count ({count}): repetition i uses the "
                     f"parameters of the first repetition of its group, i // ({count} / groups); `true` is one group"))
            return None
        per = count // groups
        return [i - i % per for i in range(count)]

    @staticmethod
    def _call_outputs(scope: Scope, name: str, outs: dict[str, Slot]) -> Slot:
        for o, slot in outs.items():
            scope.define(f"{name}.{o}", slot)
        if len(outs) == 1:
            return next(iter(outs.values()))
        problem = (f"`{name}`, which has several outputs ({', '.join(outs)}): name one, e.g. `in: {name}.{next(iter(outs))}`")
        return Slot(broken=True, problem=problem)

    # ------------------------------------------------------------------ compact repetitions
    def _compact_call(self, scope: Scope, name: str, decl: NodeDecl, ins: dict[str, Slot], carried: list[str],
                      count: int, call_span: Span | None, owners: list[int] | None = None) -> Slot | None:
        """A repeated call as an `ir.Repeat`: its body expanded once per distinct instantiation. None (and
        nothing recorded) where that would not be exactly the full unrolling; the caller then unrolls."""
        feeds = {}
        for k, slot in ins.items():
            s = slot.resolve()
            if s.target is None or s.broken or s.off is not None:   # defined later, or already wrong
                return None
            feeds[k] = s.target
        snap = (len(self.diags), set(self.read), self.hints_left, dict(self.bodies), self.total,
                dict(self.ir.switched_off))
        saved = (self.ir, self.pending, self.expectations)
        rep = None
        try:
            rep = self._instantiations(scope, name, decl, feeds, carried, count, call_span)
            if rep is not None:
                rep.owners = owners
        finally:
            outer = self.ir = saved[0]
            self.pending, self.expectations = saved[1], saved[2]
        extra = 0 if rep is None else rep.size - sum(b._size() for b in rep.bodies)
        if rep is None or len(self.diags) != snap[0] or self.total + extra > self.max_nodes:
            self.diags[snap[0]:] = []
            self.read, self.hints_left, self.bodies, self.total = snap[1], snap[2], snap[3], snap[4]
            outer.switched_off = snap[5]
            return None
        self.total += extra
        outer.add_repeat(rep)
        self.expectations.append(rep)   # its block-input checks, in the order of a full expansion
        for body in rep.bodies:
            outer.bodies += body.bodies
        for i in range(count):
            k = rep.which[i]
            first = rep.prefix(rep.firsts[k])
            for path, why in rep.bodies[k].switched_off.items():
                outer.switched_off[rep.prefix(i) + path[len(first):]] = why
        _, block = self.prog.blocks[decl.op]
        return self._call_outputs(scope, name, {o: Slot(rep.output(o)) for o in block.outputs})

    def _instantiations(self, scope: Scope, name: str, decl: NodeDecl, feeds: dict[str, str],
                        carried: list[str], count: int, call_span: Span | None) -> Repeat | None:
        keys: dict[tuple, int] = {}
        which, firsts, envs = [], [], []
        env = None
        for i in range(count):
            if env is None or decl.attrs:
                self.repeat_count = count
                env = self._call_env(scope, name, decl, i)
                self.repeat_count = None
            try:
                key = tuple([(k, type(v), tuple(v) if isinstance(v, list) else v) for k, v in env.items()])
                k = keys.setdefault(key, len(keys))
            except TypeError:
                return None
            if k == len(firsts):
                firsts.append(i)
                envs.append(env)
            which.append(k)
        bodies, check = [], None
        for env, first in zip(envs, firsts):
            body = self._instantiation(scope, name, decl, env, first, count, call_span, carried)
            if body is None:
                return None
            g, check = body
            bodies.append(g)
        check = replace(check, sources={k: check.sources[k] for k in feeds})
        return Repeat(f"{scope.prefix}{name}", count, len(scope.frames), bodies, firsts, which, feeds,
                      tuple(carried), check)

    def _instantiation(self, scope: Scope, name: str, decl: NodeDecl, env: dict, first: int, count: int,
                       call_span: Span | None, carried: list[str]) -> tuple[IRGraph, Any] | None:
        """Repetition `first` expanded into a graph of its own, block inputs as placeholders."""
        bctx, block = self.prog.blocks[decl.op]
        g = self.ir = IRGraph(decl.op, bctx.file)
        self.pending, self.expectations = [], []
        prefix = f"{scope.prefix}{name}.{first}."
        frame = Frame(f"{scope.prefix}{name}", decl.op, first, count, call_span)
        inner = Scope(bctx, ("blocks", decl.op), prefix, env, scope.frames + (frame,), spans=scope.spans, dims={})
        slots = {}
        for k in block.inputs:
            g.add(IRNode(f"<{k}>", "input", None, {}, None))
            g.inputs[k] = f"<{k}>"
            slots[k] = Slot(f"<{k}>")
            inner.define(k, slots[k])
        inner.first_input = next(iter(slots.values()), None)
        self._expect(inner, block, slots, call_span, decl.op, first, carried)
        own = self.expectations.pop() if self.expectations else None
        self._nodes(inner, block.nodes)
        outs = {o: self._lookup(inner, ref, inner.span("outputs", o)) for o, ref in block.outputs.items()}
        self._close(inner)
        if own is None or any(port.startswith("attr:") for _, port, _ in self.pending):
            return None
        self._resolve()
        for o, slot in outs.items():
            s = slot.resolve()
            if s.target is None or s.broken or s.off is not None or not s.target.startswith(prefix):
                return None
            g.outputs[o] = s.target
        check = BlockInputCheck(own.block, own.call_span, own.patterns, {k: f"<{k}>" for k in own.slots},
                                own.spans, None, own.carried)
        return g, check

    def _call_env(self, scope: Scope, name: str, decl: NodeDecl, index: int | None) -> dict[str, Any]:
        """The params a block call's body sees: the model's, the block's defaults, the call's overrides
        (which see `repeat_index` in a repeated call). Errors repeat per repetition; run() keeps one."""
        bctx, block = self.prog.blocks[decl.op]
        env = dict(self.prog.params)
        for k, v in block.params.items():
            env[k] = self._block_param(Scope(bctx, ("blocks", decl.op), "", env, ()), v,
                                       bctx.span(("blocks", decl.op, "params", k)), f"`{k}`")
        caller = scope if index is None or not decl.attrs else replace(scope, env={**scope.env, REPEAT_INDEX: index}, dims={})
        for k, v in decl.attrs.items():
            if k not in block.params:
                guess = self._hint(k, list(block.params))
                self.diags.append(Diagnostic(
                    "GF101", f"unknown field `{k}` for block `{decl.op}`" + (f" — did you mean `{guess}`?" if guess else ""),
                    scope.span("nodes", name, k, key=True),
                    help=("block params: " + ", ".join(f"`{p}`" for p in block.params)) if block.params and not guess
                    else (None if guess else f"block `{decl.op}` takes no params; declare them under its `params:`")))
                continue
            env[k] = self._block_param(caller, v, scope.span("nodes", name, k), f"`{k}`", default=env[k])
        return env

    def _expect(self, inner: Scope, block: Any, ins: dict[str, Slot], call_span: Span | None, bname: str,
                index: int | None, carried: list[str]) -> None:
        memo = inner.dims.get(("<expect>", bname))
        if memo is not None:
            self.expectations.append(Expectation(dict(ins), memo[0], memo[1], call_span, bname, index, tuple(carried)))
            return
        patterns, spans = {}, {}
        for k, decl in block.inputs.items():
            shape, below = block_input_shape(decl)
            dims = [self._dim(inner, e, inner.span("inputs", k, *below, j), allow_symbols=True)
                    for j, e in enumerate(shape)]
            if any(d is None for d in dims):
                return
            patterns[k], spans[k] = tuple(dims), inner.span("inputs", k)
        inner.dims[("<expect>", bname)] = (patterns, spans)
        self.expectations.append(Expectation(dict(ins), patterns, spans, call_span, bname, index, tuple(carried)))

    # ------------------------------------------------------------------ references
    def _lookup(self, scope: Scope, ref: str, span: Span | None) -> Slot:
        if ref in scope.names:
            return scope.names[ref]
        placeholder = Slot()
        scope.forward.setdefault(ref, []).append((placeholder, span))
        return placeholder

    def _close(self, scope: Scope) -> None:
        """Report references to names never defined in this scope."""
        known = list(scope.names) if scope.forward else []
        for ref, uses in scope.forward.items():
            guess = self._hint(ref, known)
            for slot, span in uses:
                self.diags.append(Diagnostic(
                    "GF110", f"unknown name `{ref}`" + (f" — did you mean `{guess}`?" if guess else ""), span,
                    help=None if guess else ("names here: " + ", ".join(f"`{k}`" for k in known[:12])) if known else None))
                slot.broken = True
        scope.forward.clear()

    def _add(self, node: IRNode) -> None:
        if self.total >= self.max_nodes:
            self.diags.append(Diagnostic("GF150", f"the expanded graph has more than {self.max_nodes:,} nodes", node.span,
                                         help="lower the `repeat` counts, or raise the limit with the "
                                              "GRAPHFORMER_MAX_NODES environment variable"))
            raise _Abort()
        self.total += 1
        self.ir.add(node)

    def _resolve(self) -> None:
        reported: set = set()
        for node, port, slot in self.pending:
            s = slot.resolve()
            if s.off is not None:
                # an output of a left-out node is left out too; an optional port of an op is not fed
                optional = node.op in REGISTRY and not REGISTRY[node.op].variadic and \
                    port not in REGISTRY[node.op].required_ports and not port.startswith("attr:")
                if node.op != "output" and not optional:
                    who = f"`{node.short}`" + (f" (`{port[5:]}`)" if port.startswith("attr:") else "")
                    self.diags.append(Diagnostic("GF200", f"{who} reads {s.off}", node.span, node=node.name,
                                                 help="give the reader the same `when`, or read another node"))
                    node.meta["broken"] = True
                continue
            if s.broken or s.target is None:
                if s.problem is not None and node.span not in reported:
                    reported.add(node.span)
                    who = f"output `{port}`" if node.op == "output" else f"`{node.short}`"
                    self.diags.append(Diagnostic("GF114", f"{who} takes its input from {s.problem}", node.span,
                                                 node=None if node.op == "output" else node.name))
                node.meta["broken"] = True
                continue
            if node.op == "output":
                self.ir.outputs[port] = s.target
            elif port.startswith("attr:"):
                node.attrs = node.attrs.model_copy(update={port[5:]: s.target}) if node.attrs else None
            else:
                node.inputs[port] = s.target
        for e in self.expectations:
            if isinstance(e, Repeat):
                self.ir.block_checks.append(e)
                continue
            sources = {k: s.target for k, slot in e.slots.items()
                       if (s := slot.resolve()).target is not None and not s.broken}
            self.ir.block_checks.append(BlockInputCheck(e.block, e.call_span, e.patterns, sources, e.spans,
                                                        e.index, e.carried))


class _SizeEstimate:
    """How many IR nodes a node declaration expands to, from the repeat tree alone (memoised per block and
    param values, so the work is one visit per distinct call). A repeat count that can't be evaluated
    here counts as 1: the estimate never exceeds the real size, so it never refuses a spec that fits."""

    MAX_ENTRIES = 10_000  # distinct (block, params) pairs; past that, give up and let the expander count

    def __init__(self, prog: Program, max_repeat: int):
        self.prog, self.max_repeat = prog, max_repeat
        self.memo: dict[tuple, int] = {}
        self.open: set[str] = set()

    def node(self, decl: NodeDecl, env: dict[str, int]) -> int:
        if decl.op not in self.prog.blocks:
            return 1
        count = self._value(decl.repeat, env) if decl.repeat is not None else 1
        if count is None or not 1 <= count <= self.max_repeat:
            count = 1  # reported by the expander
        return count * self._block(decl, env)

    def _block(self, decl: NodeDecl, caller: dict[str, int]) -> int:
        name = decl.op
        _, block = self.prog.blocks[name]
        env = dict(self.prog.params)
        for k, v in block.params.items():
            value = self._value(v, env)
            env[k] = v if value is None else value  # a float or string param: never a repeat count
        for k, v in decl.attrs.items():
            if k in block.params:
                value = self._value(v, caller)
                env[k] = v if value is None else value
        key = (name, tuple(sorted((k, repr(v)) for k, v in env.items())))
        if key in self.memo:
            return self.memo[key]
        if name in self.open or len(self.memo) >= self.MAX_ENTRIES:
            return 0  # a self-call (reported by the expander), or too many to count cheaply
        self.open.add(name)
        try:
            size = sum(self.node(d, env) for d in block.nodes.values())
        finally:
            self.open.discard(name)
        self.memo[key] = size
        return size

    @staticmethod
    def _value(expr: Any, env: dict[str, int]) -> int | None:
        if isinstance(expr, bool) or not isinstance(expr, (int, str)):
            return None
        try:
            d = parse(expr, _ints(expr, env)) if isinstance(expr, str) else Dim.const(expr)
        except DimError:
            return None
        return d.value if d.is_const else None


def expand(prog: Program, compact: bool = True) -> tuple[IRGraph, list[Diagnostic]]:
    """The IR of `prog` (its block-input shape checks in `ir.block_checks`) and the problems found.
    `compact=False`: every repetition expanded (what compact repeats must unroll to)."""
    return Expander(prog, compact).run()
