"""The code catalogue (graphformer/base/codes.py) is the one list of diagnostic codes: every `"GFnnn"` the package
uses is registered, every registered code is used and documented, each example shows its own code, and
`graphformer explain` prints any of them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from graphformer import cli
from graphformer.base.codes import CODES, lookup
from graphformer.commands.explain_page import first_code

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "graphformer"


def codes_in_source() -> dict[str, list[str]]:
    """Every `"GFnnn"` literal in the package outside the catalogue, with the files that use it."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "codes.py":
            continue
        for code in set(re.findall(r"[\"'](GF\d{3})[\"']", path.read_text(encoding="utf-8"))):
            found.setdefault(code, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_code_used_is_registered_and_every_registered_code_is_used():
    used = codes_in_source()
    unregistered = {c: files for c, files in used.items() if c not in CODES}
    assert not unregistered, f"register these in graphformer/base/codes.py: {unregistered}"
    unused = sorted(set(CODES) - set(used))
    assert not unused, f"graphformer/base/codes.py registers codes nothing reports: {unused}"


def test_every_registered_code_is_documented():
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for code, entry in CODES.items():
        assert f"\n## {code}\n" in text and entry.title in text, code
        assert entry.explanation and entry.fix and entry.example, code


@pytest.mark.parametrize("code", sorted(c for c, e in CODES.items() if not e.command))
def test_each_example_shows_its_own_code(code):
    """`check`'s codes; those of another command (`export --with-past`) are in tests/integration/test_codes_commands.py."""
    assert first_code(CODES[code]) == code


def test_lookup_accepts_the_usual_spellings():
    assert lookup("GF120") is lookup("gf120") is lookup("120") is CODES["GF120"]
    assert lookup("GF999") is None and lookup("hello") is None


def test_explain_prints_the_page(capsys):
    assert cli.main(["explain", "gf120"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# GF120\n") and CODES["GF120"].title in out and "error[GF120]" in out


def test_explain_without_a_code_lists_them_all(capsys):
    assert cli.main(["explain"]) == 0
    out = capsys.readouterr().out
    assert all(code in out for code in CODES)


def test_explain_unknown_code_exits_2_with_a_suggestion(capsys):
    assert cli.main(["explain", "GF12"]) == 2
    err = capsys.readouterr().err
    assert "no diagnostic code `GF12`" in err and "did you mean `GF1" in err and "Traceback" not in err
