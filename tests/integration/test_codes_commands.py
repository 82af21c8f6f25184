"""The examples of codes that another command than `check` reports (`export --with-past` needs ONNX):
each shows its own code. tests/unit/test_codes.py checks the rest of the catalogue."""
from __future__ import annotations

import pytest

from graphformer.base.codes import CODES
from graphformer.commands.explain_page import first_code


@pytest.mark.parametrize("code", sorted(c for c, e in CODES.items() if e.command))
def test_each_command_example_shows_its_own_code(code):
    assert first_code(CODES[code]) == code
