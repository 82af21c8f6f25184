"""The Python API's front-end half: `load()` a spec into a checked `Spec` (no torch needed)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .diagnostics import Diagnostic, SpecError
from .frontend import check_file
from .ir import IRGraph
from .ops.base import TensorType


@dataclass
class Spec:
    """A checked spec: the IR with every shape inferred, plus convenient views of its interface."""

    ir: IRGraph
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def params(self) -> dict[str, int]:
        return dict(self.ir.params)

    @property
    def inputs(self) -> dict[str, TensorType]:
        return {k: self.ir.node(v).shape for k, v in self.ir.inputs.items()}

    @property
    def outputs(self) -> dict[str, TensorType]:
        return {k: self.ir.node(v).shape for k, v in self.ir.outputs.items()}

    @property
    def dims(self) -> dict[str, int]:
        """Symbolic dims and their example sizes (`{"B": 2, "n": 8}`)."""
        return dict(self.ir.dims)

    def __repr__(self) -> str:
        ins = ", ".join(f"{k}: {v}" for k, v in self.inputs.items())
        outs = ", ".join(f"{k}: {v}" for k, v in self.outputs.items())
        return f"<Spec {self.name} ({ins}) -> ({outs})>"


def as_spec(spec_or_path) -> Spec:
    """A `Spec` as is; a spec file path loaded (the facade's convenience: backends take a `Spec` only)."""
    if isinstance(spec_or_path, (str, os.PathLike)):
        return load(os.fspath(spec_or_path))
    return spec_or_path


def load(path: str, preset: str | None = None, overrides: dict[str, int] | None = None) -> Spec:
    """Load and check a spec file. Raises `SpecError` (with `.diagnostics`) if it has errors."""
    result = check_file(str(path), preset, overrides)
    if not result.ok:
        raise SpecError(result.diagnostics)
    return Spec(result.ir, [d for d in result.diagnostics if not d.is_error])
