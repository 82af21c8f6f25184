"""`Spec`: a checked spec — the IR with every shape inferred, and its warnings. What every backend takes;
the front end makes one (`graphformer.frontend.load`), nothing here reads a file."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..base.diagnostics import Diagnostic
from ..ops.base import TensorType
from . import IRGraph


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
        return {k: self.ir.value(v).shape for k, v in self.ir.inputs.items()}

    @property
    def outputs(self) -> dict[str, TensorType]:
        return {k: self.ir.value(v).shape for k, v in self.ir.outputs.items()}

    @property
    def dims(self) -> dict[str, int]:
        """Symbolic dims and their example sizes (`{"B": 2, "n": 8}`)."""
        return dict(self.ir.dims)

    @classmethod
    def checked(cls, ir: IRGraph, diagnostics: list[Diagnostic]) -> "Spec":
        """The Spec of a check that passed: its warnings kept, its (absent) errors dropped."""
        return cls(ir, [d for d in diagnostics if not d.is_error])

    def __repr__(self) -> str:
        ins = ", ".join(f"{k}: {v}" for k, v in self.inputs.items())
        outs = ", ".join(f"{k}: {v}" for k, v in self.outputs.items())
        return f"<Spec {self.name} ({ins}) -> ({outs})>"
