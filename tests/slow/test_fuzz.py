"""Fuzzing the checker: mutants of the bundled specs never crash it.

Each mutant is a bundled spec with a few random edits — keys deleted or renamed, values swapped for
hostile ones (huge and negative integers, `__import__` strings, nested lists, null, booleans, very long
strings), references renamed, nodes duplicated (also as duplicate YAML keys), lines dropped — dumped
back to YAML and run through the real CLI in-process. Whatever the mutant, `check` (and `summary`) must
exit 0, 1 or 2 with no exception and no traceback. GRAPHFORMER_FUZZ_EXAMPLES scales the run.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import cli
from graphformer.frontend.yamlload import load_yaml_file

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
EXAMPLES = int(os.environ.get("GRAPHFORMER_FUZZ_EXAMPLES", "1800"))  # + a third as many for summary


def tiny(doc: dict) -> dict:
    """The spec at its `tiny` sizes (2 layers instead of 12): the same structure, checked 5x faster."""
    preset = (doc.get("presets") or {}).get("tiny") or {}
    doc.setdefault("params", {}).update({k: v for k, v in preset.items() if k in doc["params"]})
    return doc


DOCS = {p.name: tiny(load_yaml_file(str(p)).data) for p in SPECS}

HOSTILE_TEXT = ["__import__('os').system('true')", "d_model.__class__", "eval(1)", "max(d_model, 2)",
                "2**99999", "9**9**9", "d_model // 0", "d_model / 7", "heads - heads", "-d_model", "(", ")",
                "1e-5", "n", "B", "tok", "blocks.x", "x.y.z", "", " ", "\t", "in", "op", "nodes", "*",
                "99999999999999999999 * d_model", "1000000000 * 1000000000 * 1000000000", "0x10", "'a'",
                "d_model" + " * d_model" * 12, "((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))"]
scalars = st.one_of(
    st.integers(min_value=-10**40, max_value=10**40),
    st.sampled_from([0, -1, 1, 3, 10**12, 10**12 + 1, 10**15, 2**63, 10**18, 10**19]),
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=20),
    st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(1000, 6000).map(lambda k: "x" * k),
)
hostile = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def paths(doc, prefix=()):
    """Every path to a value in the document (the root excluded)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from paths(v, prefix + (k,))


def parent_of(doc, path):
    for k in path[:-1]:
        doc = doc[k]
    return doc


def keys(section) -> list[str]:
    return [k for k in section if isinstance(k, str)] if isinstance(section, dict) else []


def names_in(doc) -> list[str]:
    """Node, input and block names (the strings a reference could name), in a possibly mangled doc."""
    out = [k for section in ("inputs", "nodes", "blocks") for k in keys(doc.get(section))]
    blocks = doc.get("blocks")
    for block in blocks.values() if isinstance(blocks, dict) else []:
        if isinstance(block, dict):
            out += keys(block.get("nodes")) + keys(block.get("inputs"))
    return out or ["x"]


def mutate(draw, doc):
    all_paths = list(paths(doc))
    if not all_paths:
        return
    path = draw(st.sampled_from(all_paths))
    parent, key = parent_of(doc, path), path[-1]
    kind = draw(st.sampled_from(["delete", "hostile", "hostile", "rename_key", "reference", "duplicate", "wrap"]))
    if kind == "delete":
        del parent[key]
    elif kind == "hostile":
        parent[key] = draw(hostile)
    elif kind == "rename_key" and isinstance(parent, dict):
        new = draw(st.one_of(st.sampled_from(names_in(doc) + ["op", "in", "haeds", "nodse", "a.b", ""]),
                             st.text(max_size=8)))
        parent[new] = parent.pop(key)
    elif kind == "reference":  # point a string somewhere else: another node, a typo, itself
        parent[key] = draw(st.sampled_from(names_in(doc))) + draw(st.sampled_from(["", "", "x", ".x"]))
    elif kind == "duplicate" and isinstance(parent, dict):
        parent[f"{key}_copy" if draw(st.booleans()) else f"{key}"] = copy.deepcopy(parent[key])
    elif kind == "wrap":
        parent[key] = [parent[key]] if draw(st.booleans()) else {"op": parent[key]}


@st.composite
def mutants(draw) -> str:
    name = draw(st.sampled_from(sorted(DOCS)))
    doc = copy.deepcopy(DOCS[name])
    for _ in range(draw(st.integers(1, 4))):
        mutate(draw, doc)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
    lines = text.splitlines()
    if lines and draw(st.integers(0, 9)) == 0:  # a textual edit: duplicate keys, broken indentation
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["dup", "drop", "indent"]))
        lines = (lines[:i + 1] + [lines[i]] + lines[i + 1:] if edit == "dup" else
                 lines[:i] + lines[i + 1:] if edit == "drop" else lines[:i] + ["   " + lines[i]] + lines[i + 1:])
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def workdir():
    # a copy of specs/, so that a mutant's `imports: [transformer.yaml]` still resolves
    with tempfile.TemporaryDirectory() as tmp:
        for p in SPECS:
            shutil.copy(p, tmp)
        yield Path(tmp)


def run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue() + err.getvalue()


FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(text=mutants(), fmt=st.sampled_from(["text", "json", "github"]))
def test_check_survives_mutants(workdir, text, fmt):
    path = workdir / "mutant.yaml"
    path.write_text(text, encoding="utf-8")
    rc, output = run_cli(["check", str(path), "--format", fmt])
    assert rc in (0, 1, 2), output
    assert "Traceback" not in output


@settings(FUZZ, max_examples=max(1, EXAMPLES // 3))
@given(text=mutants())
def test_summary_survives_mutants(workdir, text):
    path = workdir / "mutant.yaml"
    path.write_text(text, encoding="utf-8")
    rc, output = run_cli(["summary", str(path), "--format", "json"])
    assert rc in (0, 1, 2), output
    assert "Traceback" not in output
