"""Shared by the table-driven shape tests: build symbolic tensor types, run one op's rule on a case."""
from __future__ import annotations

import pytest

from graphformer.base.dims import Dim, parse
from graphformer.ops import REGISTRY
from graphformer.ops.base import ShapeError, TensorType


def T(*dims, dtype="float32") -> TensorType:
    """`T("B", "n", 8)` → the TensorType [B, n, 8]."""
    return TensorType(tuple(parse(d) if isinstance(d, str) else Dim.const(d) for d in dims), dtype)


def check_case(op: str, attrs: dict, ins: dict, expected) -> None:
    """`expected` is the output shape (a tuple of dim strings) or the error code the rule must raise."""
    opdef = REGISTRY[op]
    a = opdef.attrs.model_validate(attrs)
    if isinstance(expected, str):
        with pytest.raises(ShapeError) as err:
            opdef.shape(a, ins)
        assert err.value.code == expected, err.value.message
    else:
        assert opdef.shape(a, ins).shape == tuple(parse(d) for d in expected)
