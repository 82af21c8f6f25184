"""The layers of ARCHITECTURE.md, enforced from the import graph: no module imports one of a higher layer.

Every `import` and `from ... import` counts, including those inside functions (a lazy import is still a
dependency). A module outside every layer fails too: place it in LAYERS below, and in ARCHITECTURE.md.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Lowest first. A module may import modules of its own layer and of lower layers only.
# `x.*` is the package x and everything in it; a plain name is that module alone.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("graphformer.base.*",)),
    ("ops", ("graphformer.ops.*",)),
    ("ir", ("graphformer.ir.*",)),
    ("analysis", ("graphformer.analysis.*",)),
    ("weights", ("graphformer.weights.*",)),
    ("frontend", ("graphformer.frontend.*",)),
    ("backends", ("graphformer.backends.*",)),
    ("render", ("graphformer.render.*",)),
    ("facade", ("graphformer",)),
    ("commands", ("graphformer.commands.*",)),
    ("cli", ("cli", "graphformer.cli", "graphformer.__main__")),
]
# Backends and renderers take a Spec or the IR, never a file: they are above the front end in the order (they may be
# handed a `Spec`) but must not import it.
FORBIDDEN = {"backends": {"frontend"}, "render": {"frontend", "backends"}}
# Known violations being removed elsewhere; each says who removes it.
KNOWN: set[tuple[str, str]] = set()
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str | None:
    for name, patterns in LAYERS:
        for p in patterns:
            package = p.removesuffix(".*")
            if module == package or (p.endswith(".*") and module.startswith(package + ".")):
                return name
    return None


def _modules() -> dict[str, str]:
    """Module name → file path, for the package and the top-level cli.py."""
    out = {}
    for base, _, files in os.walk(os.path.join(ROOT, "graphformer")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(base, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(base, f)
    if os.path.exists(os.path.join(ROOT, "cli.py")):
        out["cli"] = os.path.join(ROOT, "cli.py")
    return out


MODULES = _modules()


def imports(module: str, path: str) -> list[tuple[int, str, str]]:
    """(line, imported graphformer module, the statement) for every import in the file."""
    with open(path, encoding="utf-8") as fh:
        src = fh.read()
    tree = ast.parse(src, path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from . import core` imports a submodule; `from .ir import IRGraph` a name of `.ir`
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            if t == "graphformer" or t.startswith("graphformer.") or t == "cli":
                out.append((node.lineno, t, ast.get_source_segment(src, node) or ""))
    return out


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"modules in no layer: {missing} — add them to LAYERS in tests/unit/test_layers.py and to ARCHITECTURE.md"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_reaches_up(module):
    mine = layer_of(module)
    problems = []
    for line, target, stmt in imports(module, MODULES[module]):
        theirs = layer_of(target)
        if theirs is None or (module, target) in KNOWN:
            continue
        if RANK[theirs] > RANK[mine] or theirs in FORBIDDEN.get(mine, ()):
            rel = os.path.relpath(MODULES[module], ROOT)
            problems.append(f"{rel}:{line}: `{stmt.splitlines()[0]}` — the {mine} layer may not import "
                            f"`{target}` ({theirs} layer)")
    assert not problems, "\n".join(problems)


def test_the_test_sees_a_reaching_import(tmp_path):
    """The checker itself: an import from a backend into the front end is caught; a new module has no layer."""
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from ...frontend.load import parse_file\n")
    found = imports("graphformer.backends.torch.bad", str(path))
    assert found == [(2, "graphformer.frontend.load", "from ...frontend.load import parse_file")]
    assert layer_of("graphformer.frontend.load") in FORBIDDEN["backends"]
    assert layer_of("graphformer.new_module") is None and layer_of("graphformer.backends.torch.new") == "backends"
