"""Composition: blocks of another spec, a bundled model or a file, with their params bound from this one's.

`imports: [{from: llama, blocks: {text_layer: layer}, params: {d_model: text_width, ...}}]` makes llama's
`layer` callable here as `text_layer`. Imported blocks are closed: each param of llama that they read
must be passed (GF237), and becomes a block param of the imported copy whose default is the value passed
(an expression over this spec's params, evaluated by the expander like any block param). The blocks they
call come along, renamed `text_layer.mlp`, so two imports from one spec with different params never meet.
Nothing of the other spec's params or nodes leaks in.

A bundled name resolves only to the package's own specs directory; a path stays inside the importing
spec's directory tree (the same rule as `imports: [file.yaml]`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..base.diagnostics import Diagnostic, Span, SpecError, did_you_mean
from ..ops import REGISTRY
from . import bundled
from .format import BlockDecl, ImportDecl, NodeDecl, block_input_shape
from .load import Program, SpecCtx, _Tree, _add_block, _import_target, _program

MAX_DEPTH = 16   # spec → imported spec → ...: deeper chains are refused (GF150), not recursed into
_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BUNDLED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass
class ImportedCtx(SpecCtx):
    """An imported file seen through its local block names: spans under `blocks.<local>` are looked up
    under the block's own name, and a bound param's span is the importing spec's `params:` entry."""

    names: dict[str, str] = field(default_factory=dict)              # local block name -> its own name
    bound: dict[tuple[str, str], Span | None] = field(default_factory=dict)   # (local, param) -> span

    def span(self, path: tuple, key: bool = False) -> Span | None:
        if len(path) >= 2 and path[0] == "blocks" and path[1] in self.names:
            if len(path) >= 4 and path[2] == "params" and (path[1], path[3]) in self.bound:
                return self.bound[(path[1], path[3])]
            path = ("blocks", self.names[path[1]]) + tuple(path[2:])
        return self.loaded.span(path, key)


def is_path(src: str) -> bool:
    """`lib/blocks.yaml` is a file; `llama` a bundled model."""
    return "/" in src or os.sep in src or src.endswith((".yaml", ".yml"))


def import_blocks(ctx: SpecCtx, i: int, decl: ImportDecl, prog: Program, tree: _Tree,
                  chain: tuple[str, ...], diags: list[Diagnostic]) -> None:
    """Add the blocks import `i` of `ctx` names (and the blocks they call) to `prog`, params bound."""
    at = ("imports", i)
    target, sub_tree = _target(ctx, decl.src, tree, ctx.span(at + ("from",)), diags)
    if target is None:
        return
    if target in chain:
        cycle = " → ".join(os.path.basename(p) for p in chain[chain.index(target):] + (target,))
        diags.append(Diagnostic("GF140", f"import cycle: {cycle}", ctx.span(at + ("from",)),
                                help="move the shared blocks into a file that imports neither"))
        return
    if len(chain) >= MAX_DEPTH:
        diags.append(Diagnostic("GF150", f"imports nest more than {MAX_DEPTH} specs deep", ctx.span(at + ("from",)),
                                help="import the blocks from the spec that defines them"))
        return
    try:
        sub = _program(target, None, {}, sub_tree, chain)
    except SpecError as e:
        diags.append(Diagnostic("GF143", f"imported spec `{decl.src}` has errors", ctx.span(at + ("from",))))
        diags.extend(e.diagnostics)
        return
    wanted = dict(zip(decl.blocks, decl.blocks)) if isinstance(decl.blocks, list) else dict(decl.blocks)
    for j, (local, theirs) in enumerate(wanted.items()):
        if theirs not in sub.blocks:
            where = at + ("blocks", j) if isinstance(decl.blocks, list) else at + ("blocks", local)
            guess = did_you_mean(theirs, sub.blocks)
            diags.append(Diagnostic(
                "GF236", f"spec `{decl.src}` has no block `{theirs}`" + (f" — did you mean `{guess}`?" if guess else ""),
                ctx.span(where), help=None if guess else "its blocks: " + (", ".join(f"`{b}`" for b in sub.blocks) or "none")))
    wanted = {k: v for k, v in wanted.items() if v in sub.blocks}
    local_of = _local_names(wanted, sub)
    passed = decl.params
    for k in passed:
        if k not in sub.params:
            guess = did_you_mean(k, sub.params)
            diags.append(Diagnostic("GF238", f"the import passes `{k}`, which is not a param of `{decl.src}`"
                                    + (f" — did you mean `{guess}`?" if guess else ""),
                                    ctx.span(at + ("params", k), key=True),
                                    help=None if guess else "pass only params the imported blocks read"))
    for theirs, local in local_of.items():
        bctx, block = sub.blocks[theirs]
        reads = _reads(block, sub.params)
        for k in sorted(reads - passed.keys()):
            diags.append(Diagnostic(
                "GF237", f"block `{theirs}` of `{decl.src}` reads param `{k}`, which the import does not pass",
                ctx.span(at + ("params",), key=True) or ctx.span(at + ("from",)),
                help=f"add `{k}: VALUE` under this import's `params:` (a param of this spec, an expression "
                     f"over them, or a number); `{decl.src}` declares `{k}: {sub.params[k]}`"))
        own = {k: passed[k] for k in sorted(reads & passed.keys())}
        copy = block.model_copy(update={
            "params": {**own, **block.params}, "nodes": {n: _renamed(d, local_of) for n, d in block.nodes.items()}})
        # spans: the block's own file under its own name; a param passed here, at this import's entry
        inner = getattr(bctx, "bound", {})
        bound = {(local, k): s for (b, k), s in inner.items() if b == theirs}
        bound.update({(local, k): ctx.span(at + ("params", k)) for k in own})
        view = ImportedCtx(bctx.file, bctx.loaded, bctx.spec, bound=bound,
                           names={local: getattr(bctx, "names", {}).get(theirs, theirs)})
        _add_block(prog, local, view, copy, diags)


def _target(ctx: SpecCtx, src: str, tree: _Tree, span: Span | None,
            diags: list[Diagnostic]) -> tuple[str | None, _Tree]:
    """The file an import's `from` names and the tree its own file imports stay in."""
    if is_path(src):
        return _import_target(ctx, src, tree, span, diags), tree
    top = bundled.SPEC_DIR
    path = top / f"{src}.yaml"
    if not _BUNDLED_NAME.fullmatch(src) or not bundled.is_bundled(src) or \
            os.path.dirname(os.path.realpath(path)) != os.path.realpath(top):
        guess = did_you_mean(src, bundled.names())
        diags.append(Diagnostic("GF235", f"`{src}` is not a bundled model" + (f" — did you mean `{guess}`?" if guess else ""),
                                span, help="bundled models: `graphformer list`; a file of yours is written as a "
                                           "path ending in `.yaml` (`from: lib/blocks.yaml`)"))
        return None, tree
    return str(path), _Tree(str(top))


def _local_names(wanted: dict[str, str], sub: Program) -> dict[str, str]:
    """Their name -> local name for the wanted blocks and every block they call, transitively; a called
    block not asked for is named after the first wanted block that reaches it (`text_layer.mlp`)."""
    local_of = {theirs: local for local, theirs in wanted.items()}
    for local, theirs in wanted.items():
        todo = [theirs]
        while todo:
            _, block = sub.blocks[todo.pop()]
            for called in _calls(block, sub):
                if called not in local_of:
                    local_of[called] = f"{local}.{called}"
                    todo.append(called)
    return local_of


def _calls(block: BlockDecl, sub: Program) -> list[str]:
    out = []
    for d in block.nodes.values():
        if d.op in sub.blocks and d.op not in REGISTRY:
            out.append(d.op)
        op = REGISTRY.get(d.op)
        for f in (op.attrs.block_fields if op else ()):
            if isinstance(d.attrs.get(f), str) and d.attrs[f] in sub.blocks:
                out.append(d.attrs[f])
    return out


def _renamed(d: NodeDecl, local_of: dict[str, str]) -> NodeDecl:
    """A node of an imported block, calling the imported copies of the blocks it names."""
    update: dict[str, Any] = {}
    op = REGISTRY.get(d.op)
    if op is None and d.op in local_of:
        update["op"] = local_of[d.op]
    for f in (op.attrs.block_fields if op else ()):
        if isinstance(d.attrs.get(f), str) and d.attrs[f] in local_of:
            update[f] = local_of[d.attrs[f]]
    if not update:
        return d
    data = d.model_dump(by_alias=True, exclude_unset=True)
    return NodeDecl.model_validate({**data, **update})


def _reads(block: BlockDecl, params: dict[str, Any]) -> set[str]:
    """The params of the imported spec that a block's text names: in shapes, attributes, `repeat`, `when`
    and its own params' defaults (minus those own params, which it defines)."""
    words: set[str] = set()

    def scan(value: Any) -> None:
        if isinstance(value, str):
            words.update(_NAMES.findall(value))
        elif isinstance(value, (list, tuple)):
            for v in value:
                scan(v)
        elif isinstance(value, dict):
            for v in value.values():
                scan(v)

    for decl in block.inputs.values():
        scan(block_input_shape(decl)[0])
    scan(list(block.params.values()))
    for d in block.nodes.values():
        scan([d.repeat, d.when, list(d.attrs.values())])
    return (words & params.keys()) - block.params.keys()
