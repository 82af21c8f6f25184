"""The Python API's front-end half: `load()` a spec file into a checked `Spec` (no torch needed)."""
from __future__ import annotations

import os

from ..base.diagnostics import Diagnostic, SpecError
from .check import check_file
from ..ir import IRGraph
from ..base.errors import UsageError
from ..ir.spec import Spec


def as_spec(spec_or_path) -> Spec:
    """A `Spec` as is; anything else loaded as a spec file path (the facade's convenience: backends take a
    `Spec` only), so `None` or a number is a UsageError naming the problem."""
    if isinstance(spec_or_path, Spec):
        return spec_or_path
    return load(spec_or_path)


def spec_path(path: object) -> str:
    """`path` as a str, or UsageError naming what is wrong with it (`None` must not read `./None`)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        raise UsageError("a spec path must be a str or os.PathLike, not bytes (decode it first)")
    if not isinstance(path, str):
        raise UsageError(f"a spec path must be a str or os.PathLike, not {type(path).__name__}")
    if not path:
        raise UsageError("the spec path is empty")
    if "\0" in path:
        raise UsageError(f"the spec path {path!r} contains a NUL character")
    return path


def load(path: str, preset: str | None = None, overrides: dict[str, int] | None = None) -> Spec:
    """Load and check a spec file. Raises `SpecError` (with `.diagnostics`) if it has errors, and
    `UsageError` if `path` is not a usable path or the file can't be read."""
    if preset is not None and not isinstance(preset, str):
        raise UsageError(f"preset must be a str or None, not {type(preset).__name__}")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise UsageError(f"overrides must be a dict of param names to values, not {type(overrides).__name__}")
        for k, v in overrides.items():  # the loader converts each value to its param's type and bounds it
            scalar = (int, float, str)
            if not isinstance(k, str) or not (isinstance(v, scalar) or (
                    isinstance(v, list) and all(isinstance(e, scalar) for e in v))):
                raise UsageError(f"overrides: `{k!r}: {v!r}` is not a param name and a number, boolean, string "
                                 "or per-layer list of those")
    result = check_file(spec_path(path), preset, overrides, via="overrides=")
    if not result.ok:
        raise SpecError(result.diagnostics)
    return Spec.checked(result.ir, result.diagnostics)
