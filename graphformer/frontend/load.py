"""Front end, part 1: YAML files → validated `SpecFile`s, imports resolved, params and presets applied.

Everything a user can get wrong here becomes a `Diagnostic` with a span; only a file that can't be
read at all (missing, a directory) or a bad command-line override raises `UsageError` (exit 2).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from ..base.diagnostics import Diagnostic, Label, Span, SpecError, did_you_mean
from ..base.errors import UsageError
from ..base.dims import DimError, parse
from .format import FORMAT_VERSION, DerivedParam, ImportDecl, SpecFile, label_problem, name_problem
from .yamlload import FileProblem, Loaded, load_yaml_file

MAX_PARAM = 10**12


@dataclass
class SpecCtx:
    """One parsed spec file with the source positions of everything in it."""

    file: str
    loaded: Loaded
    spec: SpecFile

    def span(self, path: tuple, key: bool = False) -> Span | None:
        return self.loaded.span(path, key)


@dataclass
class Program:
    """The root spec plus everything reachable from it, ready for expansion."""

    root: SpecCtx
    blocks: dict[str, tuple[SpecCtx, Any]] = field(default_factory=dict)  # name -> (file, BlockDecl)
    params: dict[str, Any] = field(default_factory=dict)
    files: list[SpecCtx] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)   # param -> "--set" / "preset `tiny`" when not the default


def pydantic_diagnostics(err: ValidationError, loaded: Loaded, base: tuple = (),
                         model: type[BaseModel] | None = None, what: str = "",
                         present: set[str] = frozenset(), example: str | None = None) -> list[Diagnostic]:
    """Map pydantic errors (each with a `loc` path) back onto source spans. `present`: fields that were
    written but left out because their value is already reported (not "missing": one error per cause).
    `example`: a line that uses the model (an op's example), shown with a missing field's description."""
    out = []
    # `haeds` → "did you mean `heads`?" already explains the missing `heads`: one error per cause.
    guessed = {(tuple(e["loc"][:-1]), did_you_mean(str(e["loc"][-1]), _fields_at(model, e["loc"][:-1])))
               for e in err.errors() if e["type"] == "extra_forbidden" and e["loc"]}
    for e in err.errors():
        loc = tuple(base) + tuple(e["loc"])
        # Union branches add names like 'int' / 'str' to loc; keep the part that exists in the data.
        data_path = _existing_prefix(loaded.data, loc)
        field_name = str(e["loc"][-1]) if e["loc"] else what
        if e["type"] == "extra_forbidden":
            choices = list(_fields_at(model, e["loc"][:-1]))
            guess = did_you_mean(field_name, choices)
            out.append(Diagnostic(
                "GF101", f"unknown field `{field_name}`" + (f" — did you mean `{guess}`?" if guess else ""),
                loaded.span(loc, key=True),
                help=None if guess else (f"known fields{what}: " + ", ".join(f"`{c}`" for c in choices) if choices else None)))
        elif e["type"] == "missing":
            if (tuple(e["loc"][:-1]), field_name) in guessed or tuple(e["loc"]) in {(p,) for p in present}:
                continue
            out.append(Diagnostic("GF103", f"missing required field `{field_name}`{what}",
                                  loaded.span(data_path, key=True), help=_missing_help(model, e["loc"], example)))
        elif loc == ("graphformer",) and e["type"] == "literal_error":
            out.append(Diagnostic("GF102", f"unsupported format version `{_get(loaded.data, loc)}`: this graphformer "
                                  f"reads format {FORMAT_VERSION}", loaded.span(loc),
                                  help=f"write `graphformer: {FORMAT_VERSION}`, or upgrade graphformer"))
        else:
            name = ".".join(str(p) for p in e["loc"] if not str(p) in ("int", "str", "list[str]", "dict[str,str]"))
            value = _get(loaded.data, data_path)
            shown = f" (got `{value}`)" if isinstance(value, (str, int, float, bool)) else ""
            out.append(Diagnostic("GF102", f"invalid value for `{name or field_name}`{what}: {e['msg'].lower()}{shown}",
                                  loaded.span(data_path)))
    return _dedupe(out)


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diags:
        key = (d.code, d.span)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _missing_help(model: type[BaseModel] | None, loc: tuple, example: str | None) -> str | None:
    """GF103's help: what the field is for (its description) and an example of it written."""
    for part in loc[:-1]:
        field_ = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None) if model else None
        model = _model_in(field_.annotation) if field_ is not None else model
    field_ = next((f for n, f in model.model_fields.items() if loc[-1] in (n, f.alias)), None) if model else None
    parts = [f"`{loc[-1]}`: {field_.description}"] if field_ is not None and field_.description else []
    if example:
        parts.append(f"for example `{example}`")
    return " — ".join(parts) or None


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the (sub)model at `loc`, for typo suggestions."""
    for part in loc:
        if model is None:
            return []
        field_ = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field_ is not None:
            model = _model_in(field_.annotation)
        # otherwise `part` is a dict key or list index inside a container field: same model
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def _model_in(ann) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _model_in(arg)
        if m is not None:
            return m
    return None


def _get(data: Any, path: tuple) -> Any:
    for p in path:
        data = data[p]
    return data


def _existing_prefix(data: Any, loc: tuple) -> tuple:
    out = []
    for p in loc:
        if isinstance(data, dict) and p in data:
            data = data[p]
        elif isinstance(data, list) and isinstance(p, int) and 0 <= p < len(data):
            data = data[p]
        else:
            break
        out.append(p)
    return tuple(out)


def parse_file(path: str) -> SpecCtx:
    """Load and validate one spec file. Raises SpecError (spec problems) or UsageError (unreadable)."""
    try:
        loaded = load_yaml_file(path)
    except FileProblem as e:
        if os.path.isfile(os.path.join(path, "config.json")):   # a transformers save_pretrained directory
            raise UsageError(f"`{path}` is a transformers checkpoint directory, not a spec: "
                             f"graphformer import hf {path} -o spec.yaml, then --weights {path}") from None
        raise UsageError(str(e)) from None
    hf_type = None
    if isinstance(loaded.data, dict) and "model_type" in loaded.data:   # hf.py is big: only for what may be a config
        from .hf import looks_like_hf_config
        hf_type = looks_like_hf_config(loaded.data)
    if hf_type is not None:   # one diagnostic, not one per foreign key
        raise SpecError([Diagnostic(
            "GF170", f"`{os.path.basename(path)}` is a transformers config (model_type `{hf_type}`), not a spec",
            loaded.span(("model_type",), key=True),
            help=f"import it: graphformer import hf {path} -o {hf_type}.yaml")])
    try:
        spec = SpecFile.model_validate(loaded.data)
    except ValidationError as e:
        raise SpecError(pydantic_diagnostics(e, loaded, (), SpecFile)) from None
    return SpecCtx(path, loaded, spec)


def load_program(path: str, preset: str | None = None, overrides: dict[str, Any] | None = None,
                 via: str = "--set") -> Program:
    """`via` names where the overrides came from in messages: `--set` (CLI) or `overrides=` (API)."""
    return _program(path, preset, overrides or {}, None, (), via)


def _program(path: str, preset: str | None, overrides: dict[str, Any], tree: "_Tree | None",
             chain: tuple[str, ...], via: str = "--set") -> Program:
    """A spec and everything it imports. `tree` confines file imports (the top-level spec's directory
    tree, or the bundled specs for a bundled model); `chain` is the files importing this one, by blocks."""
    root = parse_file(path)
    prog = Program(root)
    diags: list[Diagnostic] = []
    tree = tree or _Tree(os.path.dirname(os.path.abspath(root.file)))
    _load_imports(root, prog, diags, tree)
    prog.files.insert(0, root)
    for ctx in prog.files:
        diags += data_diagnostics(ctx)
    if any(d.is_error for d in diags):   # nothing downstream sees a name that isn't an identifier
        raise SpecError(diags)
    for name, block in root.spec.blocks.items():
        _add_block(prog, name, root, block, diags)
    prog.params = _resolve_params(prog, preset, overrides, diags, via)
    if not any(d.is_error for d in diags):   # bindings are expressions over the params resolved above
        for ctx in prog.files:
            for i, decl in enumerate(ctx.spec.imports):
                if isinstance(decl, ImportDecl):
                    compose.import_blocks(ctx, i, decl, prog, tree, chain + (os.path.abspath(root.file),), diags)
    if any(d.is_error for d in diags):
        raise SpecError(diags)
    return prog


# Where names are, by YAML path: (path of the mapping whose keys are names, what a key names).
def _named(spec: SpecFile) -> list[tuple[tuple, Any, str]]:
    out: list[tuple[tuple, Any, str]] = [
        (("params",), spec.params, "param"), (("dims",), spec.dims, "dim"), (("inputs",), spec.inputs, "input"),
        (("blocks",), spec.blocks, "block"), (("nodes",), spec.nodes, "node"), (("outputs",), spec.outputs, "output"),
        (("weight_maps",), spec.weight_maps, "weight map")]
    for b, block in spec.blocks.items():
        out += [(("blocks", b, "params"), block.params, "block param"), (("blocks", b, "inputs"), block.inputs, "input"),
                (("blocks", b, "nodes"), block.nodes, "node"), (("blocks", b, "outputs"), block.outputs, "output")]
    return out


def data_diagnostics(ctx: SpecCtx) -> list[Diagnostic]:
    """Names and numbers are data: every name is an identifier (GF104; labels for the spec's and presets'
    names), every number is finite (GF102). What passes can be written into generated code and output
    formats as it is."""
    out = []

    def bad(what: str, name: str, why: str, span: Span | None) -> None:
        shown = name if len(name) <= 60 else name[:57] + "…"
        out.append(Diagnostic("GF104", f"{what} name `{shown}` {why}" if name else f"a {what} name {why}", span,
                              help="names are identifiers (`ln_1`, `attn2`) so that they can be written into "
                                   "generated code, state-dict keys and diagrams as they are"))

    why = label_problem(ctx.spec.name)
    if why:
        bad("spec", ctx.spec.name, why, ctx.span(("name",)))
    for p in ctx.spec.presets:
        why = label_problem(p)
        if why:
            bad("preset", p, why, ctx.span(("presets", p), key=True))
    for path, mapping, what in _named(ctx.spec):
        for name in mapping:
            why = name_problem(name)
            if why:
                bad(what, name, why, ctx.span(path + (name,), key=True))
    for path, value in reversed(ctx.loaded.nonfinite):   # in the order a walk from the end finds them
        out.append(Diagnostic("GF102", f"`{value}` is not a finite number", ctx.span(path),
                              help="numbers in a spec are finite: write a large finite value, or leave the "
                                   "attribute at its default"))
    return out


def _add_block(prog: Program, name: str, ctx: SpecCtx, block: Any, diags: list[Diagnostic]) -> None:
    if name in prog.blocks:
        other = prog.blocks[name][0]
        diags.append(Diagnostic(
            "GF141", f"block `{name}` is defined twice", ctx.span(("blocks", name), key=True),
            labels=[Label(other.span(("blocks", name), key=True), "also defined here")] if other.span(("blocks", name), key=True) else [],
            help="rename one of the blocks"))
        return
    prog.blocks[name] = (ctx, block)


def _load_imports(root: SpecCtx, prog: Program, diags: list[Diagnostic], tree: "_Tree") -> None:
    """Every file reachable through `imports:` written as paths, depth first, walked with an explicit stack
    (a chain of thousands of files must not exhaust Python's). Imports stay inside `tree`. Imports of
    chosen blocks (`{from: ...}`) are followed afterwards, by `_import_blocks`."""
    # a frame: (file, its imports still to visit, chain of absolute paths from the root to it)
    frames = [(root, iter(enumerate(root.spec.imports)), [os.path.abspath(root.file)])]
    while frames:
        ctx, pending, chain = frames[-1]
        step = next(pending, None)
        if step is None:
            frames.pop()
            if ctx is not root:
                for name, block in ctx.spec.blocks.items():
                    _add_block(prog, name, ctx, block, diags)
            continue
        i, rel = step
        if isinstance(rel, ImportDecl):
            continue
        span = ctx.span(("imports", i))
        target = _import_target(ctx, rel, tree, span, diags)
        if target is None:
            continue
        if target in chain:
            cycle = " → ".join(os.path.basename(p) for p in chain[chain.index(target):] + [target])
            diags.append(Diagnostic("GF140", f"import cycle: {cycle}", span,
                                    help="move the shared blocks into a file that imports neither"))
            continue
        if any(os.path.abspath(f.file) == target for f in prog.files):
            continue  # already imported through another path
        sub = _parse_import(target, rel, span, diags)
        if sub is None:
            continue
        prog.files.append(sub)
        frames.append((sub, iter(enumerate(sub.spec.imports)), chain + [target]))


@dataclass
class _Tree:
    """The directory tree imports must stay in: as written (for `..`) and with symlinks resolved."""

    top: str

    def holds(self, path: str) -> bool:
        real_top = os.path.realpath(self.top)
        return _inside(path, self.top) and _inside(os.path.realpath(path), real_top)


def _inside(path: str, top: str) -> bool:
    return os.path.commonpath([path, top]) == top


def _import_target(ctx: SpecCtx, rel: str, tree: _Tree, span: Span | None,
                   diags: list[Diagnostic]) -> str | None:
    """The absolute path an import names, or None (with a diagnostic) when it may not be read."""
    where = f"the directory of the top-level spec (`{_shown(tree.top)}`) and below"
    if "\0" in rel or not rel.strip():
        diags.append(Diagnostic("GF142", "an import must be a file path", span))
        return None
    if os.path.isabs(rel) or rel.startswith("~"):
        diags.append(Diagnostic("GF145", f"import `{rel}` is an absolute path", span,
                                help=f"imports are relative to the importing file and stay inside {where}"))
        return None
    target = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(ctx.file)), rel))
    if not tree.holds(target):
        how = "through a symbolic link" if _inside(target, tree.top) else "with `..`"
        diags.append(Diagnostic("GF145", f"import `{rel}` leaves the spec's directory tree {how}", span,
                                help=f"imports may only read files in {where}"))
        return None
    if not os.path.isfile(target):
        diags.append(Diagnostic("GF142", f"imported file `{rel}` not found (looked for `{_shown(target)}`)",
                                span))
        return None
    return target


def _shown(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _parse_import(target: str, rel: str, span: Span | None, diags: list[Diagnostic]) -> SpecCtx | None:
    """Parse an imported file. One that isn't a spec at all (not YAML, or no `graphformer:` key) gets one
    diagnostic that shows none of its content: it may be any file a spec author pointed at."""
    shown = _shown(target)

    def not_a_spec(why: str) -> None:
        diags.append(Diagnostic("GF146", f"imported file `{rel}` is not a graphformer spec ({why})", span,
                                help="an import must be a YAML spec file starting with `graphformer: 1`"))

    try:
        loaded = load_yaml_file(shown)
    except FileProblem as e:
        diags.append(Diagnostic("GF142", f"cannot import `{rel}`: {e}", span))
        return None
    except SpecError as e:  # where, but not what: the message or excerpt could quote the file
        first = e.diagnostics[0]
        at = f" at line {first.span.line}, column {first.span.col}" if first.span else ""
        not_a_spec(f"{first.code}{at}; run `graphformer check {shown}` to see it")
        return None
    if "graphformer" not in loaded.data:
        not_a_spec("no `graphformer:` key")
        return None
    try:
        return SpecCtx(shown, loaded, SpecFile.model_validate(loaded.data))
    except ValidationError as e:
        diags.append(Diagnostic("GF143", f"imported file `{rel}` has errors", span))
        diags.extend(pydantic_diagnostics(e, loaded, (), SpecFile))
        return None


def param_kind(value: Any) -> str:
    """`int`, `float`, `bool`, `str` or `list` (per-layer): a param's type is the type of its declared default."""
    if isinstance(value, DerivedParam):
        return "int"
    return "bool" if isinstance(value, bool) else type(value).__name__


def _coerce_list(declared: list, value: Any) -> list:
    """A per-layer list: a list, or comma-separated text from the command line, each entry of the declared
    entries' type (the first entry's)."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected a non-empty list, got {_KIND_WORDS[param_kind(value)]} `{value}`")
    return [coerce_param(declared[0], v) for v in items]


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def coerce_param(declared: Any, value: Any) -> Any:
    """`value` (a native value, or text from the command line) as the declared param's type.

    An int is a fine float (`rope_theta=500000`); nothing else converts silently. Raises ValueError with
    what was expected."""
    kind = param_kind(declared)
    if kind == "list":
        return _coerce_list(declared, value)
    if isinstance(value, str) and kind != "str":
        text = value.strip().replace("_", "") if kind in ("int", "float") else value.strip().lower()
        try:
            if kind == "int":
                value = int(text)
            elif kind == "float":
                value = float(text)
            elif text in _TRUE or text in _FALSE:
                value = text in _TRUE
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"expected {_KIND_WORDS[kind]}, got `{value}`") from None
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if param_kind(value) != kind:
        raise ValueError(f"expected {_KIND_WORDS[kind]}, got {_KIND_WORDS[param_kind(value)]} `{value}`")
    if kind == "float" and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got `{value}`")
    return value


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "a boolean (true or false)", "str": "a string",
               "list": "a per-layer list"}


def _resolve_params(prog: Program, preset: str | None, overrides: dict[str, Any],
                    diags: list[Diagnostic], via: str = "--set") -> dict[str, Any]:
    root = prog.root
    params: dict[str, Any] = dict(root.spec.params)
    for sub in prog.files[1:]:
        for k, v in sub.spec.params.items():
            params.setdefault(k, v)
    for pname, values in root.spec.presets.items():
        for k, v in values.items():
            if k not in params:
                guess = did_you_mean(k, params)
                diags.append(Diagnostic("GF160", f"preset `{pname}` sets unknown param `{k}`"
                                        + (f" — did you mean `{guess}`?" if guess else ""),
                                        root.span(("presets", pname, k), key=True)))
                continue
            try:
                coerce_param(params[k], v)
            except ValueError as e:
                diags.append(Diagnostic("GF161", f"preset `{pname}` sets `{k}` to the wrong type: {e}",
                                        root.span(("presets", pname, k)),
                                        labels=[Label(root.span(("params", k)), f"`{k}` is declared here as "
                                                      f"{_KIND_WORDS[param_kind(params[k])]}")]
                                        if root.span(("params", k)) else []))
    if preset is not None:
        if preset not in root.spec.presets:
            known = ", ".join(f"`{p}`" for p in root.spec.presets) or "none"
            guess = did_you_mean(preset, root.spec.presets)
            raise UsageError(f"unknown preset `{preset}` for {root.file}"
                             + (f" — did you mean `{guess}`?" if guess else f" (presets: {known})"))
        for k, v in root.spec.presets[preset].items():
            if k in params:
                try:
                    params[k] = coerce_param(params[k], v)
                except ValueError:
                    continue  # reported above
                prog.origin[k] = f"preset `{preset}`"
    for k, v in overrides.items():
        if k not in params:
            guess = did_you_mean(k, params)
            raise UsageError(f"{via}: `{k}` is not a param of {root.file}"
                             + (f" — did you mean `{guess}`?" if guess else
                                f" (params: {', '.join(params) or 'none'})"))
        try:
            params[k] = coerce_param(params[k], v)
        except ValueError as e:
            raise UsageError(f"{via} {k}: {e} (`{k}` is {_KIND_WORDS[param_kind(params[k])]} param)") from None
        if param_kind(params[k]) == "int" and abs(params[k]) > MAX_PARAM:
            raise UsageError(f"{via} {k}: {params[k]} is larger than the limit 10^12")
        prog.origin[k] = via
    _derive(root, params, diags)
    for k, v in params.items():
        if param_kind(v) == "int" and abs(v) > MAX_PARAM:
            diags.append(Diagnostic("GF150", f"param `{k}` = {v} is larger than the limit {MAX_PARAM:,}",
                                    root.span(("params", k)),
                                    help="sizes are capped at 10^12 so that parameter and FLOP counts stay exact "
                                         "integers; the cap is fixed"))
    return params


def _derive(root: SpecCtx, params: dict[str, Any], diags: list[Diagnostic]) -> None:
    """Compute the `{expr: ...}` params that no preset or --set replaced, each after the params it reads;
    a cycle among them is GF202. A param that can't be computed keeps 1, so checking goes on quietly."""
    derived = {k: v for k, v in params.items() if isinstance(v, DerivedParam)}
    names = {k: (set(_NAMES.findall(v.expr)) if isinstance(v.expr, str) else set()) for k, v in derived.items()}
    done: set[str] = set()

    def visit(k: str, chain: list[str]) -> None:
        if k in done:
            return
        if k in chain:
            cycle = chain[chain.index(k):] + [k]
            diags.append(Diagnostic("GF202", "params compute each other: " + " → ".join(f"`{c}`" for c in cycle),
                                    root.span(("params", k), key=True),
                                    help="give one of them a number (or an expression over other params)"))
            for c in cycle:
                params[c] = 1
                done.add(c)
            return
        for dep in sorted(names[k] & derived.keys()):
            visit(dep, chain + [k])
        if k not in done:
            params[k] = _evaluate(root, k, derived[k], params, diags)
            done.add(k)

    for k in derived:
        visit(k, [])


def _evaluate(root: SpecCtx, k: str, decl: DerivedParam, params: dict[str, Any], diags: list[Diagnostic]) -> int:
    span = root.span(("params", k, "expr"))
    if isinstance(decl.expr, int):
        return decl.expr
    for name in sorted(set(_NAMES.findall(decl.expr)) & params.keys()):
        if param_kind(params[name]) != "int" or isinstance(params[name], DerivedParam):
            diags.append(Diagnostic("GF132", f"param `{k}` is computed from `{name}`, which is "
                                    f"{_KIND_WORDS[param_kind(params[name])].replace('a number', 'a float')} "
                                    f"(`{params[name]}`); only integer params can", span))
            return 1
    ints = {n: v for n, v in params.items() if param_kind(v) == "int" and not isinstance(v, DerivedParam)}
    try:
        d = parse(decl.expr, ints)
    except DimError as e:
        diags.append(Diagnostic("GF130", f"bad expression for param `{k}`: `{decl.expr}`: {e}", span))
        return 1
    if not d.is_const:
        unknown = sorted(d.symbols)[0]
        guess = did_you_mean(unknown, params)
        diags.append(Diagnostic("GF131", f"param `{k}` is computed from `{unknown}`, which is not a param"
                                + (f" — did you mean `{guess}`?" if guess else ""), span))
        return 1
    return d.value


_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


from . import compose  # noqa: E402  (it builds on this module: imported last, used at run time)
