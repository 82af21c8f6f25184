"""ARCHITECTURE.md stays true: every module path it names exists, and every folder of the package (a layer)
is in its layer map and in tests/unit/test_layers.py's LAYERS."""
from __future__ import annotations

import re
from pathlib import Path

from test_layers import LAYERS

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "graphformer"
TEXT = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _named_paths() -> set[str]:
    """`a/b.py`, `a/b/` style names in backticks (package-relative unless they start at the root)."""
    found = set()
    for m in re.finditer(r"`([A-Za-z_][\w/.-]*(?:\.py|/))`", TEXT):
        name = m.group(1)
        if "/" in name or name.endswith(".py"):
            found.add(name)
    return found


def test_every_path_the_map_names_exists():
    missing = []
    for name in sorted(_named_paths()):
        candidates = [PKG / name, ROOT / name, PKG / "backends" / name, PKG / "backends" / "torch" / name,
                      PKG / "backends" / "onnx" / name]
        if not any(c.exists() for c in candidates):
            missing.append(name)
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_layer_folder_is_on_the_map():
    folders = sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    tree = TEXT[TEXT.index("## The layers"):TEXT.index("## Where each concept lives")]
    for f in folders:
        assert re.search(rf"^\s+{f}/", tree, re.M), f"folder graphformer/{f}/ is not in ARCHITECTURE.md's layer map"
        assert any(p == f"graphformer.{f}.*" for _, pats in LAYERS for p in pats), \
            f"folder graphformer/{f}/ has no layer in tests/unit/test_layers.py"
