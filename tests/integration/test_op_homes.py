"""One home per op in every layer: the op declared in graphformer/ops/X.py is lowered in
graphformer/backends/torch/X.py and graphformer/backends/onnx/X.py, so a reader (and a new op) finds
each layer's part of an op by the same file name."""
from __future__ import annotations

import importlib
import os

import pytest

from graphformer.ops import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKENDS = ("torch", "onnx")


def family_file(op: str) -> str:
    """The ops/ module that declares `op` (where its shape rule is defined)."""
    return REGISTRY[op].shape.__module__.rsplit(".", 1)[-1]


FAMILIES = sorted({family_file(op) for op in REGISTRY})


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_family_file_has_a_lowering_file(family, backend):
    path = os.path.join("graphformer", "backends", backend, f"{family}.py")
    assert os.path.isfile(os.path.join(ROOT, path)), (
        f"graphformer/ops/{family}.py declares ops but {path} is missing: its {backend} lowerings go there")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_op_is_lowered_in_its_family_file(backend):
    pytest.importorskip(backend)
    table = importlib.import_module(f"graphformer.backends.{backend}").LOWERINGS
    wrong = []
    for op in REGISTRY:
        want = f"graphformer.backends.{backend}.{family_file(op)}"
        got = table[op].__module__ if op in table else None
        if got != want:
            where = f"is lowered in {got.replace('.', '/')}.py" if got else "has no lowering"
            wrong.append(f"op `{op}` (graphformer/ops/{family_file(op)}.py) {where}: "
                         f"lower it in {want.replace('.', '/')}.py")
    assert not wrong, "\n".join(wrong)
