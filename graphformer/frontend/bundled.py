"""The models that ship with graphformer (graphformer/specs/, `specs/` in a checkout), found by name.

Every command and `graphformer.load` take a path or a bundled model's name: `gpt2` (or `gpt2.yaml`) means
the bundled spec only when no such path exists, so a file of yours always wins.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..base.diagnostics import did_you_mean
from ..base.errors import UsageError

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"
SCHEMA = SPEC_DIR / "spec.schema.json"


def names() -> list[str]:
    """The bundled models, by name (the file name without `.yaml`)."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def is_bundled(name: str) -> bool:
    """Whether `name` names a bundled spec file: no separator, and a file of that name in SPEC_DIR (a name
    too long for the file system is none: os.stat would raise)."""
    if os.sep in name or "/" in name or len(name) > 200:
        return False
    try:
        return (SPEC_DIR / f"{name}.yaml").is_file()
    except OSError:
        return False


def resolve(path: str) -> str:
    """`path` if it exists, else the bundled spec it names; a bare name that is neither is a usage error
    with the bundled names (anything else is left to the loader, which says the file does not exist)."""
    if os.path.exists(path):
        return path
    name = path.removesuffix(".yaml")
    if is_bundled(name):
        return str(SPEC_DIR / f"{name}.yaml")
    if os.sep in path or "/" in path or path.endswith((".yaml", ".yml")):
        return path
    hint = did_you_mean(name, names())
    raise UsageError(f"`{path}` is neither a file nor a bundled model"
                     + (f" (did you mean `{hint}`?)" if hint else "")
                     + "; `graphformer list` shows the bundled models")
