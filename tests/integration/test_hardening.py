"""Bad input of every kind gets a clear message and exit code 1 (the spec) or 2 (usage/environment) —
never a traceback — and output files are never left half-written. Everything goes through the real
CLI: in-process (`cli.main`) where that is enough, in a subprocess where the environment must differ
(a blocked torch, no `dot` on PATH, limits set through environment variables)."""
from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import cli
from graphformer.base import diagnostics
from graphformer.frontend.check import check_file
from graphformer.ir import IRGraph

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
GPT2 = str(ROOT / "specs" / "gpt2.yaml")

SMALL = """\
graphformer: 1
name: small
params: {d: 16, heads: 2, layers: 2}
inputs:
  x: {shape: [B, n, d]}
blocks:
  layer:
    inputs: {x: [B, n, d]}
    nodes:
      attn: {op: attention, heads: heads}
      res: {op: residual, in: [x, attn]}
    outputs: {x: res}
nodes:
  stack: {op: layer, repeat: layers}
  up: {op: linear, out: OUT}
outputs: {y: up}
"""


def small(tmp_path: Path, out: str = "d", **repl: str) -> str:
    text = SMALL.replace("OUT", out)
    for old, new in repl.items():
        text = text.replace(old, new)
    path = tmp_path / "small.yaml"
    path.write_text(text)
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def run_sub(*argv: str, env: dict | None = None, code: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter (`python -m cli ...`, or `python -c CODE ...`)."""
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cli"]
    r = subprocess.run(cmd + [str(a) for a in argv], cwd=ROOT, env=full_env, capture_output=True, text=True,
                       timeout=timeout)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def first_code(capsys, path) -> tuple[int, dict]:
    rc, out, _ = run(capsys, "check", path, "--format", "json")
    return rc, json.loads(out)[0]


# ---------------------------------------------------------------- hostile YAML

def test_alias_bomb_is_refused(tmp_path, capsys):
    # its work is bounded by counts in tests/unit/test_yamlload.py (no value is converted)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]  # 10^9 values
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    rc, d = first_code(capsys, path)
    assert (rc, d["code"]) == (1, "GF003") and "200,000" in d["message"]


def test_recursive_alias_is_refused(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text("graphformer: 1\nname: &n [*n]\n")
    rc, d = first_code(capsys, path)
    assert rc == 1 and d["code"] in ("GF001", "GF003")


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("graphformer: 1\nname: " + "[" * 20000 + "]" * 20000 + "\n")
    r = run_sub("check", path, "--format", "json")  # a subprocess: the recursion limit is process-wide
    assert r.returncode == 1
    assert json.loads(r.stdout)[0]["code"] == "GF003"


def test_huge_file_is_refused_without_reading_it(tmp_path, capsys, monkeypatch):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as fh:
        fh.write(b"graphformer: 1\nname: huge\n# " + b"x" * 100 + b"\n")
        fh.truncate(50_000_000)  # sparse: 50 MB that cost nothing to write
    read = []
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real(fd, n))
    rc, d = first_code(capsys, path)
    assert (rc, d["code"]) == (1, "GF003") and "50.0 MB" in d["message"] and "limit is 2 MB" in d["message"]
    rc, _, err = run(capsys, "check", path)  # the text renderer doesn't re-read it for an excerpt either
    assert rc == 1 and "x" * 100 not in err
    assert read == []


def test_duplicate_keys_point_at_both(tmp_path, capsys):
    path = small(tmp_path, **{"  up: {op: linear, out: d}": "  up: {op: linear, out: d}\n  up: {op: norm}"})
    rc, d = first_code(capsys, path)
    assert (rc, d["code"], d["line"]) == (1, "GF002", 16)
    assert d["labels"][0]["line"] == 15 and "first defined here" in d["labels"][0]["message"]


@pytest.mark.parametrize("payload", [
    "graphformer: 1\nname: caf\xe9\n".encode("latin-1"),
    "graphformer: 1\nname: x\n".encode("utf-16"),  # NUL bytes
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"graphformer: 1\nname: a\x1bb\n",  # a control character
], ids=["latin-1", "utf-16", "png", "control-char"])
def test_non_utf8_and_binary_files_are_refused(tmp_path, capsys, payload):
    path = tmp_path / "bad.yaml"
    path.write_bytes(payload)
    rc, d = first_code(capsys, path)
    assert (rc, d["code"]) == (1, "GF005")


def test_random_binary_garbage_never_crashes(tmp_path, capsys):
    rng = random.Random(7)
    path = tmp_path / "garbage.yaml"
    for size in (1, 10, 100, 1000, 10_000, 100_000):
        path.write_bytes(bytes(rng.randrange(256) for _ in range(size)))
        rc, _, err = run(capsys, "check", path)
        assert rc == 1 and "error[GF00" in err


def test_utf8_bom_is_accepted(tmp_path, capsys):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + SMALL.replace("OUT", "d").encode())
    assert run(capsys, "check", path)[0] == 0


# ---------------------------------------------------------------- hostile dimension expressions

HOSTILE = [
    ("__import__('os').system('touch {canary}')", "reserved"),
    ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
    ("open('{canary}', 'w')", "function calls are not allowed"),
    ("exec('import os')", "function calls are not allowed"),
    ("d.real", "attribute access is not allowed"),
    ("d.__class__", "attribute access is not allowed"),
    ("2**99999", "`**` is not allowed"),
    ("9**9**9", "`**` is not allowed"),
    ("99999999999999999999999999999999", "too large"),
    ("1000000 * 1000000 * 1000000 * 1000000", "too large"),
    ("lambda: 1", "not allowed"),
    ("[1, 2]", "not allowed"),
    ("d if d else 1", "expected an operator"),
    ("d; import os", "not allowed"),
    ("'a' * 99999999", "strings are not allowed"),
    ("\u0661\u0662", "not allowed"),  # Arabic-Indic digits: int() would accept them
    ("d" + " + d" * 100, "too long"),
    ("(" * 40 + "d" + ")" * 40, "nested too deeply"),
    ("d // (heads - 2)", "division by zero"),
    ("d / 3", "not exact"),
]


@pytest.mark.parametrize("expr, why", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_expression_is_rejected_without_evaluation(tmp_path, capsys, expr, why):
    canary = tmp_path / "canary"
    expr = expr.format(canary=canary)
    path = small(tmp_path, out=json.dumps(expr))  # a quoted YAML string
    rc, d = first_code(capsys, path)
    assert (rc, d["code"]) == (1, "GF130"), d
    assert why in d["message"], d["message"]
    assert d["line"] == 15
    assert not canary.exists()


def test_no_python_evaluation_happens_anywhere(tmp_path, capsys, monkeypatch):
    import builtins
    import importlib
    from graphformer.ops import MODULES

    for family in MODULES:   # our own op modules load on first use (exec of their code): load them first
        importlib.import_module(f"graphformer.ops.{family}")

    def refuse(*a, **k):
        raise AssertionError("eval/exec called while checking a spec")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    for spec in SPECS:
        assert check_file(str(spec)).ok
    assert first_code(capsys, small(tmp_path, out='"__import__(\'os\')"'))[1]["code"] == "GF130"


def test_long_names_do_not_make_suggestions_quadratic(tmp_path, capsys, monkeypatch):
    # 40 nodes with 1000-character names, each reading a near miss: "did you mean" must not compare
    # every pair character by character (that took minutes before names over 64 chars were skipped)
    names = ["n" * 1000 + str(i) for i in range(40)]
    nodes = "".join(f"  {n}: {{op: norm, in: {n[:-1]}z}}\n" for n in names)
    path = tmp_path / "long.yaml"
    path.write_text(f"graphformer: 1\nname: t\ninputs:\n  x: {{shape: [2, 3, 4]}}\nnodes:\n{nodes}outputs: {{y: x}}\n")
    compared = []
    real = diagnostics._levenshtein
    monkeypatch.setattr(diagnostics, "_levenshtein", lambda *a: compared.append(a) or real(*a))
    rc, _, err = run(capsys, "check", path)
    assert rc == 1 and "40 errors" in err
    assert not any(len(a) > 64 for a, *_ in compared)


def test_an_error_inside_a_repeated_block_is_reported_once(tmp_path, capsys):
    path = small(tmp_path, **{"in: [x, attn]": "in: [x, atn]", "layers: 2": "layers: 50"})
    rc, out, _ = run(capsys, "check", path, "--format", "json")
    diags = json.loads(out)
    assert rc == 1 and [d["code"] for d in diags] == ["GF110"] and "did you mean `attn`?" in diags[0]["message"]


def test_a_library_of_blocks_checks_clean(capsys):
    # a file with `blocks:` and no `nodes:` is imported by others: the pre-commit hook passes it too
    rc, _, err = run(capsys, "check", ROOT / "tests" / "invalid" / "lib" / "blocks.yaml")
    assert rc == 0 and err.strip().endswith(": ok")


# ---------------------------------------------------------------- limits

def test_repeat_limit_names_the_variable_and_can_be_raised(tmp_path):
    path = small(tmp_path, **{"layers: 2": "layers: 20000"})
    r = run_sub("check", path)
    assert r.returncode == 1
    assert "`repeat` is 20000; it must be between 1 and 10,000" in r.stderr
    assert "GRAPHFORMER_MAX_REPEAT=20000" in r.stderr
    r = run_sub("check", path, "--set", "layers=3", env={"GRAPHFORMER_MAX_REPEAT": "2"})
    assert r.returncode == 1 and "between 1 and 2" in r.stderr
    r = run_sub("check", path, "--set", "layers=3", env={"GRAPHFORMER_MAX_REPEAT": "3"})
    assert r.returncode == 0, r.stderr


def test_node_limit_names_the_variable(tmp_path):
    r = run_sub("check", GPT2, env={"GRAPHFORMER_MAX_NODES": "40"})
    assert r.returncode == 1
    assert "more than 40 nodes" in r.stderr and "GRAPHFORMER_MAX_NODES" in r.stderr
    assert run_sub("check", GPT2, env={"GRAPHFORMER_MAX_NODES": "100000"}).returncode == 0


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1e6", "\u00b2"])
def test_bad_limit_variable_is_a_usage_error(value):
    r = run_sub("check", GPT2, env={"GRAPHFORMER_MAX_REPEAT": value})
    assert r.returncode == 2 and "GRAPHFORMER_MAX_REPEAT must be a positive integer" in r.stderr


def test_repeat_at_the_limit_stays_bounded(tmp_path, capsys, monkeypatch):
    path = small(tmp_path, **{"layers: 2": "layers: 100000000"})
    added = []
    real = IRGraph.add
    monkeypatch.setattr(IRGraph, "add", lambda self, node: added.append(node) or real(self, node))
    rc, d = first_code(capsys, path)
    assert (rc, d["code"]) == (1, "GF150")
    assert len(added) < 10  # refused from the count, not after unrolling


def test_dimension_size_limits(tmp_path, capsys):
    rc, d = first_code(capsys, small(tmp_path, **{"d: 16": "d: 10000000000000"}))
    assert (rc, d["code"]) == (1, "GF150") and "1,000,000,000,000" in d["message"]
    rc, _, err = run(capsys, "check", GPT2, "--set", "d_model=10000000000000")
    assert rc == 2 and "limit 10^12" in err
    rc, d = first_code(capsys, small(tmp_path, out="1000000000 * 1000000000 * 10"))
    assert (rc, d["code"]) == (1, "GF130") and "limit 10^18" in d["message"]
    rc, d = first_code(capsys, small(tmp_path, **{"[B, n, d]}\nblocks": "[B, 0, d]}\nblocks"}))
    assert (rc, d["code"]) == (1, "GF102") and "at least 1" in d["message"]


def test_summary_at_absurd_sizes_is_an_error_not_a_crash(capsys):
    rc, _, err = run(capsys, "summary", GPT2, "--set", "d_model=999999999996", "heads=4", "d_ff=4")
    assert rc == 1 and "cannot count FLOPs" in err and "10^18" in err
    rc, _, err = run(capsys, "summary", GPT2, "--dims", "B=1000000000000", "n=1000000000000")
    assert rc == 1 and "cannot count FLOPs" in err


# ---------------------------------------------------------------- every CLI path: usage and environment

@pytest.mark.parametrize("argv, message", [
    (["check", "specs/no-such.yaml"], "no such file"),
    (["check", "specs"], "is a directory"),
    (["check", GPT2, "--set", "layers"], "--set expects NAME=VALUE, got `layers`"),
    (["check", GPT2, "--set", "layers=two"], "expected an integer, got `two`"),
    (["check", GPT2, "--set", "=3"], "--set expects NAME=VALUE"),
    (["check", GPT2, "--set", "layrs=3"], "did you mean `layers`?"),
    (["check", GPT2, "--set", "zzz=3"], "is not a param of"),
    (["check", GPT2, "--preset", "tinny"], "unknown preset `tinny`"),
    (["check", GPT2, "--preset", "huge"], "unknown preset `huge`"),
    (["check", GPT2, "--format", "xml"], "invalid choice"),
    (["summary", GPT2, "--dims", "Q=3"], "`Q` is not a symbolic dim"),
    (["summary", GPT2, "--dims", "B=0"], "at least 1"),
    (["summary", GPT2, "--dims", "B"], "--dims expects NAME=INT"),
    (["frobnicate"], "invalid choice"),
    ([], ""),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_usage_errors_exit_2_with_a_message(capsys, monkeypatch, argv, message):
    monkeypatch.chdir(ROOT)  # relative paths in the table
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own errors (cli keeps its exit code 2)
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in out + err
    assert message in err
    if message:
        assert err.strip().splitlines()[-1].startswith("graphformer: error: ")


def test_unreadable_file_exits_2(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading the file")
    path = Path(small(tmp_path))
    path.chmod(0)
    try:
        rc, _, err = run(capsys, "check", path)
    finally:
        path.chmod(0o644)
    assert rc == 2 and "permission denied" in err


BLOCK_EXTRAS = textwrap.dedent("""\
    import importlib.abc, sys
    BLOCKED = {"torch", "onnx", "onnxruntime", "onnxscript", "safetensors"}

    class Blocker(importlib.abc.MetaPathFinder):  # as if the extras were never installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    import cli
    rc = cli.main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    sys.exit(rc)
""")


def test_check_summary_schema_draw_work_without_torch_or_onnx():
    for argv in (["check", *SPECS], ["summary", GPT2], ["schema"], ["draw", GPT2, "--format", "dot"]):
        r = run_sub(*argv, code=BLOCK_EXTRAS)
        assert r.returncode == 0, (argv, r.stderr)


def test_check_and_summary_import_no_torch_or_onnx():
    probe = ("import sys, cli; cli.main(['check', *sys.argv[1:]]); cli.main(['summary', sys.argv[1]]); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime')))")
    r = run_sub(*SPECS, code=probe)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "[]", r.stdout[-500:]


@pytest.mark.parametrize("argv", [["build", GPT2, "--preset", "tiny"],
                                  ["generate", GPT2, "--preset", "tiny", "--prompt-ids", "1,2", "--max-new-tokens", "2"]])
def test_build_and_generate_without_torch_exit_2(argv):
    r = run_sub(*argv, code=BLOCK_EXTRAS)
    assert r.returncode == 2 and "torch extra is not installed" in r.stderr and "pip install" in r.stderr


def test_export_without_onnx_exits_2(tmp_path):
    target = tmp_path / "model.onnx"
    r = run_sub("export", GPT2, "--preset", "tiny", "-o", target, code=BLOCK_EXTRAS)
    assert r.returncode == 2 and "extra is not installed" in r.stderr and "pip install" in r.stderr
    assert not target.exists()


def test_missing_dot_exits_2_and_leaves_the_old_file_alone(tmp_path):
    target = tmp_path / "gpt2.svg"
    target.write_text("<svg>the previous drawing</svg>")
    r = run_sub("draw", GPT2, "-o", target, env={"PATH": str(tmp_path / "empty")})
    assert r.returncode == 2 and "dot" in r.stderr and "Graphviz" in r.stderr
    assert target.read_text() == "<svg>the previous drawing</svg>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2.svg"]  # no temp file left


def test_unknown_weight_map_exits_2(tmp_path, capsys):
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    weights = tmp_path / "w.safetensors"
    save_file({"wte.weight": torch.zeros(2, 2)}, str(weights))
    for argv in (["build", GPT2, "--preset", "tiny"], ["export", GPT2, "--preset", "tiny", "-o", tmp_path / "m.onnx"]):
        rc, _, err = run(capsys, *argv, "--weights", weights, "--weights-map", "nope")
        assert rc == 2, (argv, err)
        assert "no weight map `nope`" in err and "`hf`" in err
    assert not (tmp_path / "m.onnx").exists()


def test_output_into_missing_directory_exits_2(tmp_path, capsys):
    for argv in (["schema", "-o"], ["draw", GPT2, "-o"]):
        rc, _, err = run(capsys, *argv, tmp_path / "no" / "such" / "dir" / "out.dot")
        assert rc == 2 and "does not exist" in err
    assert list(tmp_path.iterdir()) == []


class FullDisk:
    """A file whose writes stop half-way with ENOSPC, as on a full disk."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, capsys):
    target = tmp_path / "schema.json"
    target.write_text("old")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    rc, _, err = run(capsys, "schema", "-o", target)
    monkeypatch.undo()
    assert rc == 2 and "cannot write" in err and "no space left on device" in err
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schema.json"]


def test_output_onto_a_directory_exits_2(tmp_path, capsys):
    rc, _, err = run(capsys, "schema", "-o", tmp_path)
    assert rc == 2 and "is a directory" in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- speed

def test_checking_every_bundled_spec_is_fast(capsys):
    # speed is measured in bench/, not asserted here: a loaded machine would make this flaky
    check_file(str(SPECS[0]))  # warm imports
    t = time.perf_counter()
    for spec in SPECS:
        assert check_file(str(spec)).ok, spec
    print(f"checked {len(SPECS)} bundled specs in {(time.perf_counter() - t) * 1e3:.0f} ms")
