"""The invalid-spec corpus: every file in tests/invalid/ names the diagnostic it must produce.

Each case starts with `# expect: GF120 at 12:5` (or `at lib/other.yaml:4:11` when the first diagnostic
is in an imported file). The checker runs through the real CLI in all three formats; the first
diagnostic's code, file, line and column must match, and the three formats must agree on them.
Files under tests/invalid/lib/ are helpers imported by the cases, not cases.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import cli

INVALID = Path(__file__).resolve().parents[1] / "invalid"
CASES = sorted(INVALID.glob("*.yaml"))
EXPECT = re.compile(rb"# expect: (GF\d{3}) at (?:(\S+):)?(\d+):(\d+)\n")


def expectation(case: Path) -> tuple[str, Path, int, int]:
    m = EXPECT.match(case.read_bytes())
    assert m, f"{case.name} must start with `# expect: GFnnn at LINE:COL`"
    code, file, line, col = (g.decode() if g else None for g in m.groups())
    return code, (INVALID / file if file else case).resolve(), int(line), int(col)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def same_file(reported: str, expected: Path) -> bool:
    return Path(os.path.abspath(reported)) == expected


def test_corpus_is_large_and_covers_the_kinds_of_mistake():
    assert len(CASES) >= 35
    codes = {expectation(c)[0] for c in CASES}
    # shape, dtype, divisibility, structure, names, expressions, YAML, imports, limits, presets, ...
    required = {"GF001", "GF002", "GF003", "GF004", "GF005", "GF006", "GF100", "GF101", "GF102", "GF103",
                "GF106", "GF110", "GF111", "GF112", "GF114", "GF115", "GF120", "GF121", "GF122", "GF123",
                "GF124", "GF125", "GF126", "GF130", "GF131", "GF140", "GF142", "GF143", "GF150", "GF160"}
    assert required <= codes, f"no case for {sorted(required - codes)}"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_invalid_spec_reports_expected_diagnostic(case, capsys):
    code, file, line, col = expectation(case)
    rc, out, _ = run(capsys, "check", str(case), "--format", "json")
    diags = json.loads(out)
    assert diags, f"{case.name}: no diagnostic"
    first = diags[0]
    got = (first["code"], first["line"], first["col"])
    assert got == (code, line, col), f"{case.name}: first diagnostic {first}"
    assert same_file(first["file"], file), first["file"]
    assert first["message"] and first["severity"] in ("error", "warning")
    assert rc == (1 if any(d["severity"] == "error" for d in diags) else 0)

    # the text and GitHub renderings carry the same position and code
    rc_text, _, err = run(capsys, "check", str(case))
    assert rc_text == rc
    head = err.splitlines()[0]
    assert head.startswith(f"{first['file']}:{line}:{col}: {first['severity']}[{code}]: "), head
    rc_gh, out, _ = run(capsys, "check", str(case), "--format", "github")
    assert rc_gh == rc
    kind = "error" if first["severity"] == "error" else "warning"
    assert out.splitlines()[0].startswith(f"::{kind} file={first['file']},line={line},col={col}::[{code}]")


def test_helpers_are_not_cases():
    # tests/invalid/lib holds imported files; they are valid YAML specs on their own or broken on purpose
    helpers = sorted((INVALID / "lib").glob("*.yaml"))
    assert helpers and all(h.read_text().startswith("# helper for ") for h in helpers)
