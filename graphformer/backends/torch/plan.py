"""Execution plans: the IR split into scopes (one per block call or repetition) and compiled to Python.

Each scope becomes a `Block` module whose forward is straight-line generated code, one line per node:

    def run(mods, in0, in1):
        ln1 = mods['ln1'](in0)                      # blocks.3.ln1
        attn = mods['attn'](ln1, in1)               # blocks.3.attn
        ...
        return (res2,)

Generated code has no per-call dict churn or interpreter loop, so small models pay only for the module
calls. Modules are looked up in `_modules` at call time, so a block replaced in its ModuleList (by an
activation-checkpointing or FSDP wrapper) is the one that runs. Each line ends with the node's full path,
and the source is registered with `linecache`, so a traceback shows which node of which layer failed.

A spec is data, and this is the one place where it meets `exec`: the front end admits only identifiers
as names, and this generator still trusts none of it. Locals are rebuilt from ASCII letters, digits and
`_`; a comment holds a path only if it is dotted identifiers (`_comment`); module keys are `repr`s; and
`check_source` parses what was generated and refuses, before it is compiled, any construct outside the
small set the generator writes (no import, no name it did not bind, no `__attribute__`, no string it
could run, no number that is not finite).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import keyword
import linecache
import types
import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...base import graphs
from ...ir import Frame, IRGraph, IRNode
from ...ops import REGISTRY
from .core import prepare_key_mask


@dataclass(eq=False)
class Scope:
    """A block call (or one repetition of it) in the IR; the root scope is the whole graph."""

    path: str                                   # '' (root), 'blocks.3', 'enc'
    keys: tuple[str, ...] = ()                  # `_modules` keys from the parent Block to this one
    repeated: bool = False
    items: list = field(default_factory=list)                   # direct nodes and children, first-use order
    children: dict[str, "Scope"] = field(default_factory=dict)  # by path, first-appearance order
    members: set[str] = field(default_factory=set)              # every node inside, recursively
    owner: dict[str, "Scope"] = field(default_factory=dict)     # member not direct -> child holding it
    units: list = field(default_factory=list)                   # IRNode | Scope, execution order
    inputs: list[str] = field(default_factory=list)             # values produced outside, consumed inside
    outputs: list[str] = field(default_factory=list)            # values produced inside, needed outside

    def prefix(self) -> str:
        return self.path + "." if self.path else ""

    def rel(self, name: str) -> str:
        p = self.prefix()
        assert name.startswith(p), f"{name} is not inside scope {self.path}"
        return name[len(p):]


def _scope_path(f: Frame) -> str:
    return f"{f.path}.{f.index}" if f.index is not None else f.path


def scopes(ir: IRGraph, order: list[IRNode] | None = None) -> Scope:
    """The scope tree of `ir`, with every scope's units ordered and its inputs and outputs known.

    `order` is `ir.nodes()` if the caller has it already (a topological sort of a big graph is not free).
    """
    root = Scope("")
    order = [n for n in (order or ir.nodes()) if n.op != "input"]
    for n in order:
        s = root
        s.members.add(n.name)
        for f in n.scope:
            path = _scope_path(f)
            child = s.children.get(path)
            if child is None:
                call = s.rel(f.path)
                keys = (call, str(f.index)) if f.index is not None else (call,)
                child = s.children[path] = Scope(path, keys, f.index is not None)
                s.items.append(child)
            s.owner[n.name] = child
            s = child
            s.members.add(n.name)
        s.items.append(n)
    _finish(root, ir, order, set(ir.outputs.values()))
    return root


def _finish(s: Scope, ir: IRGraph, mine: list[IRNode], graph_outputs: set[str]) -> None:
    """Inputs, outputs and unit order of `s`, whose member nodes are `mine` (topological order)."""
    seen_in: dict[str, None] = {}
    for n in mine:
        for src in n.inputs.values():
            if src not in s.members:
                seen_in.setdefault(src)
    s.inputs = list(seen_in)
    s.outputs = [n.name for n in mine if n.name in graph_outputs
                 or any(c.name not in s.members for c, _ in ir.consumers(n.name))]
    for c in s.children.values():
        _finish(c, ir, [n for n in mine if n.name in c.members], graph_outputs)
    s.units = _order_units(s, ir, mine)


def _unit_of(s: Scope, name: str, flat: set[str]):
    """The unit of scope `s` that computes `name`: the node itself or the (non-flattened) child scope."""
    c = s.owner.get(name)
    if c is None:
        return name
    return _unit_of(c, name, flat) if c.path in flat else c


def _order_units(s: Scope, ir: IRGraph, mine: list[IRNode]) -> list:
    """Direct nodes and child scopes in an order where each unit runs after everything it reads.

    A child scope runs as one call only if that order exists; otherwise (a block output feeds, outside
    the block, a value that the same block reads later) its nodes are inlined into this scope.
    """
    flat: set[str] = set()
    while True:
        first: dict = {}            # unit key -> (first-appearance position, unit)
        edges = []
        for n in mine:
            u = _unit_of(s, n.name, flat)
            key = u.path if isinstance(u, Scope) else u
            first.setdefault(key, (len(first), u))
            for src in n.inputs.values():
                if src in s.members:
                    v = _unit_of(s, src, flat)
                    vk = v.path if isinstance(v, Scope) else v
                    if vk != key:
                        edges.append((vk, key))
        if all(first[a][0] < first[b][0] for a, b in edges):   # the usual case: already in order
            keys = list(first)
        else:
            succ: dict = {k: [] for k in first}
            for a, b in edges:
                succ[a].append(b)
            try:
                keys = graphs.topological_order(list(first), succ.__getitem__)
            except graphs.CycleError as e:
                flat |= {k for k in e.cycle if k in _all_scope_paths(s)}
                continue
        units = []
        for k in keys:
            u = first[k][1]
            units.append(u if isinstance(u, Scope) else ir.node(u))
        return units


def _all_scope_paths(s: Scope) -> set[str]:
    out = set()
    for c in s.children.values():
        out.add(c.path)
        out |= _all_scope_paths(c)
    return out


# ---------------------------------------------------------------- code generation

GLOBALS = ("torch", "F", "prepare_key_mask")   # what generated code may read besides its own locals
_PATH = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


class CodegenError(Exception):
    """Generated code that is not of the shape this generator writes: a bug or a hostile IR, never run."""


class _Names:
    """Local variable names for values: readable, unique ASCII identifiers, never a keyword, a dunder or
    a name the generated code reads (`mods`, `torch`, ...)."""

    def __init__(self):
        self.taken = {"mods", *GLOBALS}
        self.of: dict[str, str] = {}

    def new(self, value: str, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", hint) or "v"   # ASCII: `x²` and `x2` must not meet as one local
        if base[0].isdigit() or keyword.iskeyword(base) or base.startswith("__"):
            base = "v_" + base
        name, i = base, 1
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        self.of[value] = name
        return name


def _access(s: Scope, target_keys: tuple[str, ...]) -> str:
    expr = "mods"
    for i, k in enumerate(target_keys):
        expr += f"[{k!r}]" if i == 0 else f"._modules[{k!r}]"
    return expr


def _keys_to_node(s: Scope, name: str) -> tuple[str, ...]:
    """`_modules` keys from scope `s`'s Block down to the module of node `name`."""
    c = s.owner.get(name)
    return (s.rel(name),) if c is None else c.keys + _keys_to_node(c, name)


def _keys_to_scope(s: Scope, t: Scope) -> tuple[str, ...]:
    """`_modules` keys from scope `s`'s Block down to the Block of its descendant scope `t`."""
    for c in s.children.values():
        if c is t:
            return c.keys
        if t.path.startswith(c.prefix()):
            return c.keys + _keys_to_scope(c, t)
    raise AssertionError(f"scope {t.path} is not inside {s.path}")


def generate(s: Scope, training: bool, module_of, root_outputs: dict[str, str] | None = None,
             root_inputs: list[str] | None = None, mask_values: set[str] | None = None) -> str:
    """Python source of `run(mods, *inputs)` for scope `s` (the root returns a dict of outputs).

    A node's module is called, unless it offers `inline(args, training)`: a Python expression over
    the argument names, `torch` and `F` (parameter-free ops), or just an argument's name (dropout in
    eval mode), which makes the output an alias of that argument.
    """
    names = _Names()
    params = root_inputs if root_inputs is not None else s.inputs
    args = [names.new(v, v if root_inputs is not None else f"in{i}") for i, v in enumerate(params)]
    stmts: list[tuple[str, list[str], list[str]]] = []      # (code, variables read, variables written)
    masks = mask_values if mask_values is not None else set()
    if root_inputs is not None:
        stmts += [_prepare(names.of[v]) for v in root_inputs if v in masks]
    for u in s.units:
        if isinstance(u, Scope):
            ins = [names.of[v] for v in u.inputs]
            outs = [names.new(v, s.rel(v)) for v in u.outputs]
            stmts.append((f"{', '.join(outs)}, = {_access(s, _keys_to_scope(s, u))}({', '.join(ins)})"
                          + _comment(u.path), ins, outs))
            continue
        srcs = [names.of[v] for v in u.inputs.values()]
        inline = getattr(module_of(u.name), "inline", None)
        expr = inline(srcs, training) if inline is not None else None
        if expr in srcs:
            names.of[u.name] = expr
            continue
        out = names.new(u.name, s.rel(u.name))
        call = expr or f"{_access(s, _keys_to_node(s, u.name))}({_call_args(u, srcs)})"
        absent = [v for p, v in zip(u.inputs, srcs) if p in u.meta.get("optional_ports", ())]
        if absent:  # computed from an optional input: absent (None) when that input is
            call = f"None if {' is None or '.join(absent)} is None else {call}"
        stmts.append((f"{out} = {call}" + _comment(u.name), srcs, [out]))
        if u.name in masks:
            stmts.append(_prepare(out))
    if root_outputs is not None:
        returned = [names.of[v] for v in root_outputs.values()]
        ret = "{" + ", ".join(f"{k!r}: {names.of[v]}" for k, v in root_outputs.items()) + "}"
    else:
        returned = [names.of[v] for v in s.outputs]
        ret = "(" + "".join(r + ", " for r in returned) + ")"
    lines = [f"def run(mods, {', '.join(args)}):" if args else "def run(mods):"]
    lines += _with_frees(stmts, set(returned))
    lines.append(f"    return {ret}")
    return "\n".join(lines) + "\n"


def _comment(path: str) -> str:
    """`  # blocks.3.attn`: the node's path, which only ever holds identifiers and indices."""
    if not _PATH.fullmatch(path):
        raise CodegenError(f"refusing to write node path {path!a} into generated code: not dotted identifiers")
    return f"  # {path}"


def split_args(node: IRNode, values: list) -> tuple[list, dict]:
    """A node's inputs as a module call takes them: required ones positionally, optional ones (`mask`,
    `positions`) by name, so that any subset of the optional inputs may be given."""
    optional = {p.strip("?") for p in REGISTRY[node.op].ports if p.endswith("?")}
    args = [v for p, v in zip(node.inputs, values) if p not in optional]
    return args, {p: v for p, v in zip(node.inputs, values) if p in optional}


def _call_args(node: IRNode, srcs: list[str]) -> str:
    args, kwargs = split_args(node, srcs)
    return ", ".join(args + [f"{k}={v}" for k, v in kwargs.items()])


def _prepare(var: str) -> tuple[str, list[str], list[str]]:
    return f"{var} = prepare_key_mask({var})  # once for every attention that reads it", [var], [var]


def mask_values(ir: IRGraph, order: list[IRNode], module_of) -> set[str]:
    """Values read only as attention masks (and not graph outputs): prepared once where produced."""
    out = set()
    outputs = set(ir.outputs.values())
    for n in order:
        uses = ir.consumers(n.name)
        if uses and n.name not in outputs and all(
                port == "mask" and getattr(module_of(c.name), "takes_prepared_mask", False) for c, port in uses):
            out.add(n.name)
    return out


def _with_frees(stmts, keep: set[str]) -> list[str]:
    """The statements, each followed by `del` of the values it read or wrote for the last time.

    Locals live until a function returns: without this, every activation of a block (the 4·d-wide
    feed-forward ones included) would stay allocated until the block ends, tripling peak memory.
    """
    last: dict[str, int] = {}
    for i, (_, reads, writes) in enumerate(stmts):
        for v in writes + reads:
            last[v] = i
    out = []
    for i, (code, reads, writes) in enumerate(stmts):
        out.append("    " + code)
        dead = [v for v in dict.fromkeys(reads + writes) if last[v] == i and v not in keep]
        if dead:
            out.append(f"    del {', '.join(dead)}")
    return out


# The constructs generated code is made of (the plan's statements and the ops' `inline` expressions).
_ALLOWED = (ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Assign, ast.Delete, ast.Return,
            ast.Call, ast.keyword, ast.Attribute, ast.Subscript, ast.Slice, ast.Name, ast.Constant, ast.Tuple,
            ast.Dict, ast.IfExp, ast.BoolOp, ast.Or, ast.Compare, ast.Is, ast.Eq, ast.BinOp, ast.Add, ast.Sub,
            ast.Mult, ast.Div, ast.UnaryOp, ast.USub, ast.Load, ast.Store, ast.Del)


def check_source(src: str) -> None:
    """Refuse generated source that is anything but `def run(mods, ...)` over its own locals, the modules,
    `torch` and `F`, in the constructs of `_ALLOWED`, with finite numbers (CodegenError).

    The repetitions of a block differ only in their path comments, so the check runs once per text
    without them (`_check_body`, cached): a 96-layer model pays it once, not 192 times."""
    _check_body(_PATH_COMMENT.sub("", src))


# `  # blocks.3.attn` at a line's end (what `_comment` writes): no quote, bracket or line break in it, so
# taking it out changes no statement; at most the text of a string literal, which the check allows anyway.
_PATH_COMMENT = re.compile(r"  # [A-Za-z0-9_.]+$", re.M)


@functools.lru_cache(maxsize=1024)
def _check_body(src: str) -> None:
    try:
        tree = ast.parse(src)
    except SyntaxError as e:
        raise CodegenError(f"generated code does not parse: {e.msg} (line {e.lineno})") from None
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], ast.FunctionDef) or body[0].name != "run" or body[0].decorator_list:
        raise CodegenError("generated code must be exactly one plain `def run(...)`")
    fn, a = body[0], body[0].args
    if (not a.args or a.args[0].arg != "mods" or a.defaults or a.kw_defaults or a.vararg or a.kwarg
            or a.kwonlyargs or a.posonlyargs or fn.returns is not None):
        raise CodegenError("generated code must be `def run(mods, *inputs)` with no defaults or annotations")
    bound, read = {x.arg for x in a.args}, set()
    for node in ast.walk(fn):
        kind = type(node)
        if kind is ast.Name:
            (bound if type(node.ctx) is ast.Store else read).add(node.id)
        elif kind is ast.Attribute:
            if node.attr.startswith("_") and node.attr != "_modules":
                raise CodegenError(f"generated code reads attribute `{node.attr}`")
        elif kind is ast.Constant:
            v = node.value
            if not (v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))):
                raise CodegenError(f"generated code holds the constant {v!r}")
        elif kind is ast.arg:
            if node.annotation is not None:
                raise CodegenError("generated code annotates an argument")
        elif kind is ast.Call:
            if type(node.func) is ast.Name and node.func.id not in GLOBALS:
                raise CodegenError(f"generated code calls `{node.func.id}`")
        elif not isinstance(node, _ALLOWED):
            raise CodegenError(f"generated code holds a `{kind.__name__}` (line {getattr(node, 'lineno', '?')})")
    unknown = read - bound - set(GLOBALS)
    if unknown:
        raise CodegenError(f"generated code reads `{sorted(unknown)[0]}`, which it neither binds nor may use")


def compile_run(src: str):
    """Check generated source (`check_source`), compile it (a fraction of a millisecond), and register it
    so tracebacks show the line."""
    check_source(src)
    filename = f"<graphformer-plan-{hashlib.sha1(src.encode()).hexdigest()[:12]}>"
    linecache.cache.setdefault(filename, (len(src), None, src.splitlines(True), filename))
    ns: dict = {"torch": torch, "F": F, "prepare_key_mask": prepare_key_mask}
    code = _named(_compiled(_PATH_COMMENT.sub("", src)), filename)
    exec(code, ns)  # noqa: S102 — generated, checked above: names and finite numbers only
    return ns["run"]


@functools.lru_cache(maxsize=1024)
def _compiled(body: str) -> types.CodeType:
    """The repetitions of a block compile once: their texts differ only in path comments, which leave every
    line where it was, so one code object serves all (renamed per repetition by `_named`)."""
    return compile(body, "<graphformer-plan>", "exec")


def _named(code: types.CodeType, filename: str) -> types.CodeType:
    """`code` (and the function inside it) as if compiled from `filename`: a traceback then shows the
    lines of this repetition's source, path comments included (registered with `linecache`)."""
    consts = tuple(_named(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)
