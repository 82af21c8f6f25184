"""Generated docs are current: docs/ops.md, docs/errors.md and graphformer/specs/spec.schema.json equal what
scripts/gen_docs.py renders now (the code catalogue itself is tested in test_codes.py)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graphformer.base.diagnostics import Diagnostic, Label, Span
from graphformer.ops import REGISTRY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("doc", ["docs/ops.md", "docs/errors.md", "graphformer/specs/spec.schema.json"])
def test_generated_doc_is_current(doc, gen_docs):
    fresh = gen_docs.OUTPUTS[doc]()
    committed = (ROOT / doc).read_text(encoding="utf-8")
    assert committed == fresh, f"{doc} is out of date: run `python scripts/gen_docs.py`"


def test_every_op_is_documented_with_an_evaluated_example(gen_docs, tmp_path):
    text = (ROOT / "docs" / "ops.md").read_text(encoding="utf-8")
    for name, op in REGISTRY.items():
        assert f"### `{name}`" in text
        assert op.example, f"op `{name}` has no example= for docs/ops.md"
    # the core ops' examples must check: the doc then shows their real output shape, params and FLOPs
    for op in REGISTRY.values():
        if op.family in ("core", "activation", "structural"):
            assert gen_docs.evaluate_example(op, tmp_path) is not None, op.name


def test_ci_doc_lists_exactly_the_json_fields():
    d = Diagnostic("GF120", "m", Span("f", 1, 2), labels=[Label(Span("f", 1, 1), "l")])
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    table = text.split("## The JSON format", 1)[1].split("For example", 1)[0]
    documented = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert documented == list(d.to_json())
    assert "labels" in text and all(f"`{k}`" in table for k in d.to_json()["labels"][0])


def test_precommit_hook_runs_the_checker_on_specs_only():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "graphformer-check")
    assert {"id", "name", "entry", "language"} <= set(hook) and hook["language"] == "python"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'{hook["entry"].split()[0]} = "graphformer.cli:main"' in pyproject  # the console script pip installs
    files = re.compile(hook["files"])
    for path in ("specs/gpt2.yaml", "models/specs/bert.yml", "specs/lib/blocks.yaml"):
        assert files.search(path), path
    for path in (".github/workflows/ci.yml", ".pre-commit-config.yaml", "tests/invalid/cycle.yaml"):
        assert not files.search(path), path
    # pre-commit runs `entry` followed by the matching file names
    specs = [rel for rel in (str(p.relative_to(ROOT)) for p in sorted((ROOT / "specs").glob("*.yaml")))
             if files.search(rel)]
    assert specs
    argv = hook["entry"].split()[1:] + hook.get("args", []) + specs
    r = subprocess.run([sys.executable, "-m", "graphformer", *argv], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
