"""Hostile input, class by class (docs/robustness.md): outputs, ONNX pairs, imports, reading, bounds before
work, weights, streams and formats, the API. Every bad input gets a clear error (exit 1: the spec is
wrong; exit 2: usage or environment) — never a traceback, a hang or unbounded memory; nothing is
half-written; nothing is read or written that the user did not point at. Work is bounded by counts
(calls, bytes read, nodes added), never by the wall clock."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cli
import graphformer as gf
from graphformer.base import diagnostics, fileio
from graphformer.analysis import memory
from graphformer.base.diagnostics import Diagnostic, SourceCache, Span, render
from graphformer.ir import IRGraph

ROOT = Path(__file__).resolve().parents[2]
GPT2 = str(ROOT / "specs" / "gpt2.yaml")

TINY = """\
graphformer: 1
name: tiny
inputs:
  x: {shape: [2, 4]}
nodes:
  n: {op: norm}
outputs: {y: n}
"""


MAPPED = """\
graphformer: 1
name: mapped
inputs:
  x: {shape: [2, 4]}
nodes:
  up: {op: linear, out: 8}
  ln: {op: norm}
outputs: {y: ln}
weight_maps:
  ref:
    rules:
      - {from: enc.proj.w, to: up.weight}
      - {from: enc.proj.b, to: up.bias}
      - {from: enc.norm.g, to: ln.weight}
      - {from: enc.norm.b, to: ln.bias}
"""


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def run_sub(*argv, code: str | None = None, env: dict | None = None, timeout: float = 120, **kw):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "cli"]
    r = subprocess.run(cmd + [str(a) for a in argv], cwd=ROOT, env={**os.environ, **(env or {})},
                       capture_output=True, text=True, timeout=timeout, **kw)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def spec_file(directory: Path, text: str = TINY, name: str = "spec.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def codes(capsys, path) -> list[str]:
    rc, out, _ = run(capsys, "check", path, "--format", "json")
    return [d["code"] for d in json.loads(out)]


# ---------------------------------------------------------------- 1. outputs

@pytest.mark.parametrize("target", ["/dev/null", "-", "/dev/stdout"])
def test_output_that_is_not_a_regular_file_is_refused(capsys, target):
    before = os.stat("/dev/null").st_mode
    rc, _, err = run(capsys, "schema", "-o", target)
    assert rc == 2 and "cannot write" in err
    assert os.stat("/dev/null").st_mode == before and stat.S_ISCHR(before)


def test_output_onto_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "pipe.dot"
    os.mkfifo(fifo)
    rc, _, err = run(capsys, "draw", GPT2, "-o", fifo)
    assert rc == 2 and "not a regular file" in err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_symlinked_output_is_written_through(tmp_path, capsys):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert run(capsys, "schema", "-o", link)[0] == 0
    assert link.is_symlink() and json.loads(target.read_text())["title"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_new_files_follow_the_umask_and_overwritten_ones_keep_their_mode(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert run(capsys, "schema", "-o", tmp_path / "new.json")[0] == 0
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o604)
        assert run(capsys, "schema", "-o", kept)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o604 and kept.read_text() != "old"


def test_sigterm_removes_the_temporary_file(tmp_path):
    out = tmp_path / "big.bin"
    code = textwrap.dedent(f"""
        import sys, time
        from graphformer.base.fileio import atomic_output
        with atomic_output({str(out)!r}) as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"writing\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(fileio.TMP_PREFIX)]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []  # neither the temp nor a half-written output


def test_the_cli_exits_143_on_sigterm_while_writing(tmp_path, monkeypatch, capsys):
    class Killed:  # the file object of a write interrupted by SIGTERM (the handler raises Terminated)
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise fileio.Terminated()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Killed(real(fd, mode)))
    rc, _, err = run(capsys, "schema", "-o", tmp_path / "s.json")
    assert rc == 143 and "terminated" in err
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_files_of_dead_processes_are_cleaned(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{fileio.TMP_PREFIX}{dead_pid}-0badc0de-schema.json"
    live = tmp_path / f"{fileio.TMP_PREFIX}{os.getppid()}-0badc0de-schema.json"  # a live process's
    other = tmp_path / f"{fileio.TMP_PREFIX}{dead_pid}-0badc0de-other.json"    # another output's
    for p in (stale, live, other):
        p.write_text("partial")
    assert run(capsys, "schema", "-o", tmp_path / "schema.json")[0] == 0
    assert not stale.exists() and live.exists() and other.exists()


# ---------------------------------------------------------------- 2. ONNX with external data

def test_onnx_external_data_is_replaced_as_a_pair(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("torch")
    from onnx import numpy_helper
    from graphformer.backends.onnx import export_onnx
    spec = gf.load(spec_file(tmp_path, MAPPED))
    path = tmp_path / "m.onnx"

    def weights():
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    first = export_onnx(spec, None, path, seed=1, external_data_threshold=0)
    before = weights()
    # terminated after the new data file is in place but before the model file's switch
    real, renames = os.replace, []

    def replace(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise fileio.Terminated()
        real(src, dst)
    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(fileio.Terminated):
        export_onnx(spec, None, path, seed=2, external_data_threshold=0)
    monkeypatch.setattr(fileio.os, "replace", real)
    after_kill = weights()
    assert all((before[k] == after_kill[k]).all() for k in before)  # the old model, the old weights
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", os.path.basename(first.data_path),
                                                                 "spec.yaml"])  # the new data file went
    second = export_onnx(spec, None, path, seed=2, external_data_threshold=0)
    assert second.data_path != first.data_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", os.path.basename(second.data_path),
                                                                 "spec.yaml"])
    assert any((before[k] != v).any() for k, v in weights().items())


# ---------------------------------------------------------------- 3. imports

def importing(tmp_path: Path, *targets: str) -> Path:
    body = TINY.replace("inputs:", "imports: [" + ", ".join(json.dumps(t) for t in targets) + "]\ninputs:")
    return spec_file(tmp_path, body)


def test_an_absolute_import_is_refused_and_its_content_never_shown(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GF_CANARY", "canary-in-the-environment")
    path = importing(tmp_path, "/proc/self/environ")
    rc, out, err = run(capsys, "check", path)
    assert rc == 1 and "GF145" in err and "canary" not in out + err


def test_imports_may_not_leave_the_spec_tree(tmp_path, capsys):
    (tmp_path / "outside.yaml").write_text(TINY.replace("name: tiny", "name: outside"))
    inner = tmp_path / "project"
    inner.mkdir()
    (inner / "lib").mkdir()
    (inner / "lib" / "escape.yaml").symlink_to(tmp_path / "outside.yaml")
    path = importing(inner, "../outside.yaml", "lib/escape.yaml", "lib/../../outside.yaml")
    assert codes(capsys, path) == ["GF145"] * 3


def test_dotdot_inside_the_tree_is_fine(tmp_path, capsys):
    (tmp_path / "lib").mkdir()
    (tmp_path / "shared.yaml").write_text("graphformer: 1\nname: shared\n")
    (tmp_path / "lib" / "a.yaml").write_text("graphformer: 1\nname: a\nimports: [../shared.yaml]\n")
    assert codes(capsys, importing(tmp_path, "lib/a.yaml")) == []


def test_an_import_that_is_not_a_spec_is_never_echoed(tmp_path, capsys):
    (tmp_path / ".env").write_text("API_TOKEN=hunter2\n")
    (tmp_path / "notes.yaml").write_text("secret: hunter2\n")
    (tmp_path / "broken.yaml").write_text("password: [hunter2\n")
    rc, out, err = run(capsys, "check", importing(tmp_path, ".env", "notes.yaml", "broken.yaml"))
    assert rc == 1 and err.count("GF146") == 3 and "hunter2" not in out + err


def test_a_fifo_import_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")
    r = run_sub("check", importing(tmp_path, "pipe.yaml"), timeout=60)
    assert r.returncode == 1 and "GF142" in r.stderr


@pytest.mark.slow
def test_a_long_import_chain_is_walked_without_recursion(tmp_path, capsys):
    n = 1200  # past Python's recursion limit
    for i in range(n):
        nxt = f"imports: [c{i + 1}.yaml]\n" if i + 1 < n else ""
        (tmp_path / f"c{i}.yaml").write_text(f"graphformer: 1\nname: c{i}\n{nxt}")
    assert codes(capsys, importing(tmp_path, "c0.yaml")) == []


# ---------------------------------------------------------------- 4. reading

@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_is_not_read(capsys, special):
    rc, _, err = run(capsys, "check", special)
    assert rc == 2 and "not a regular file" in err


def test_a_fifo_spec_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")
    r = run_sub("check", tmp_path / "pipe.yaml", timeout=60)
    assert r.returncode == 2 and "not a regular file" in r.stderr


def test_the_renderer_rereads_only_a_bounded_regular_file(tmp_path, monkeypatch):
    big = tmp_path / "grew.yaml"
    with open(big, "wb") as fh:
        fh.write(b"graphformer: 1\n" + b"x" * 50)
        fh.truncate(1_000_000_000)  # sparse: a spec that grew to 1 GB after it was checked
    read = []
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read.append(n) or real(fd, n))
    text = render([Diagnostic("GF001", "m", Span(str(big), 1, 1))], "text", SourceCache())
    assert "x" * 50 not in text and read == []
    assert SourceCache().line("/dev/zero", 1) is None


def test_a_long_source_line_is_cut_in_the_excerpt(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("name: " + "y" * 100_000 + "\n")
    text = render([Diagnostic("GF001", "m", Span(str(path), 1, 1))], "text", SourceCache())
    assert len(max(text.splitlines(), key=len)) < 400


# ---------------------------------------------------------------- 5. bounds before work

NESTED = """\
graphformer: 1
name: nested
inputs: {x: {shape: [2, 4]}}
blocks:
  a:
    inputs: {x: [2, 4]}
    nodes: {n: {op: norm}}
    outputs: {x: n}
  b:
    inputs: {x: [2, 4]}
    nodes: {s: {op: a, repeat: 10000}}
    outputs: {x: s}
  c:
    inputs: {x: [2, 4]}
    nodes: {s: {op: b, repeat: 10000}}
    outputs: {x: s}
nodes:
  top: {op: c, repeat: 10000}
outputs: {y: top}
"""


def test_nested_repeats_are_refused_before_expansion(tmp_path, capsys, monkeypatch):
    added = []
    real = IRGraph.add
    monkeypatch.setattr(IRGraph, "add", lambda self, node: added.append(node) or real(self, node))
    rc, out, _ = run(capsys, "check", spec_file(tmp_path, NESTED), "--format", "json")
    d = json.loads(out)[0]
    assert rc == 1 and d["code"] == "GF150" and "1,000,000,000,000" in d["message"]
    assert added == []


def test_the_estimate_never_refuses_a_spec_that_fits(tmp_path, capsys):
    path = spec_file(tmp_path, NESTED.replace("10000", "10"))  # 1,000 norms + 1 input
    r = run_sub("check", path, env={"GRAPHFORMER_MAX_NODES": "1001"})
    assert r.returncode == 0, r.stderr
    r = run_sub("check", path, env={"GRAPHFORMER_MAX_NODES": "1000"})
    assert r.returncode == 1 and "GF150" in r.stderr


def test_thousands_of_unknown_names_get_a_bounded_number_of_hints(tmp_path, capsys, monkeypatch):
    n = 2000
    nodes = "".join(f"  node{i}: {{op: norm, in: missing{i}}}\n" for i in range(n))
    path = spec_file(tmp_path, f"graphformer: 1\nname: t\ninputs:\n  x: {{shape: [2, 4]}}\nnodes:\n{nodes}"
                               "outputs: {y: node0}\n")
    calls = []
    real = diagnostics.did_you_mean
    monkeypatch.setattr("graphformer.frontend.expand.did_you_mean", lambda *a, **k: calls.append(1) or real(*a, **k))
    rc, out, _ = run(capsys, "check", path, "--format", "json")
    assert rc == 1 and len(json.loads(out)) == n
    from graphformer.frontend.expand import MAX_HINTS
    assert len(calls) <= MAX_HINTS


def test_did_you_mean_compares_only_plausible_lengths(monkeypatch):
    compared = []
    real = diagnostics._levenshtein
    monkeypatch.setattr(diagnostics, "_levenshtein", lambda *a: compared.append(a) or real(*a))
    choices = [f"name_{i:06d}" for i in range(1500)] + ["x" * k for k in range(1, 40)]
    assert diagnostics.did_you_mean("x" * 20 + "y", choices) == "x" * 20
    assert len(compared) <= 5


def test_a_model_that_cannot_fit_is_exit_2_naming_the_bytes(capsys, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1_000_000)
    rc, _, err = run(capsys, "build", GPT2)
    assert rc == 2 and "needs at least" in err and "1,000,000" in err
    with pytest.raises(gf.UsageError, match="needs at least"):
        gf.build(gf.load(GPT2))
    with pytest.raises(gf.UsageError, match="example inputs"):
        gf.example_inputs(gf.load(GPT2, "tiny"), dims={"B": 100_000, "n": 32})


def test_export_refuses_weights_that_cannot_fit(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1_000_000)
    rc, _, err = run(capsys, "export", GPT2, "-o", tmp_path / "m.onnx")
    assert rc == 2 and "needs at least" in err
    assert list(tmp_path.iterdir()) == []


def test_a_batch_that_cannot_fit_is_refused_before_building(capsys, monkeypatch):
    pytest.importorskip("torch")
    import graphformer.backends.torch as backend
    built = []
    monkeypatch.setattr(backend, "build", lambda *a, **k: built.append(1))
    rc, _, err = run(capsys, "build", GPT2, "--preset", "tiny", "--dims", "B=1000000000", "n=16")
    assert rc == 2 and "needs at least" in err and built == []


def test_out_of_memory_in_the_forward_is_exit_2(capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    from graphformer.backends.torch.module import GraphModule

    def oom(self, **inputs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(GraphModule, "trace_shapes", oom)
    rc, _, err = run(capsys, "build", GPT2, "--preset", "tiny")
    assert rc == 2 and "out of memory" in err and "internal error" not in err


def test_dot_runs_with_a_timeout(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "GRAPHFORMER_DOT_TIMEOUT": "0.5"}
    r = run_sub("draw", GPT2, "-o", tmp_path / "g.svg", env=env, timeout=120)
    assert r.returncode == 2 and "did not finish within 0.5 s" in r.stderr
    assert not (tmp_path / "g.svg").exists()
    r = run_sub("draw", GPT2, "-o", tmp_path / "g.svg", env={**env, "GRAPHFORMER_DOT_TIMEOUT": "soon"})
    assert r.returncode == 2 and "GRAPHFORMER_DOT_TIMEOUT" in r.stderr


# ---------------------------------------------------------------- 6. weights

def test_ignore_globs_do_not_backtrack():
    from graphformer.weights.maps import _Glob
    # a regex of 14 `.*` against 3,000 characters never finishes; the segment matcher is linear
    assert not _Glob("*a" * 14 + "*b").fullmatch("a" * 3000)
    assert _Glob("*a" * 14 + "*").fullmatch("a" * 3000)
    assert _Glob("h.{i}.*.{i}.x").fullmatch("h.12.attn.12.x")
    assert not _Glob("h.{i}.*.{i}.x").fullmatch("h.12.attn.13.x")


def _reference(tmp_path, dtype, **override):
    """A reference checkpoint for MAPPED, under the reference's own names, in `dtype`."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(0)
    sd = {"enc.proj.w": torch.randn(8, 4, generator=gen), "enc.proj.b": torch.randn(8, generator=gen),
          "enc.norm.g": torch.ones(8), "enc.norm.b": torch.zeros(8)}
    sd = {k: v.to(dtype) for k, v in sd.items()}
    sd.update(override)
    path = tmp_path / f"ref-{str(dtype).removeprefix('torch.')}.safetensors"
    save_file(sd, str(path))
    return path


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_checkpoints_export_through_a_weight_map(tmp_path, capsys, dtype):
    onnx = pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    weights = _reference(tmp_path, getattr(torch, dtype))
    rc, _, err = run(capsys, "export", spec_file(tmp_path, MAPPED), "--weights", weights, "--weights-map", "ref",
                     "-o", tmp_path / "m.onnx")
    assert rc == 0, err
    from onnx import numpy_helper
    got = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    from safetensors.torch import load_file
    want = load_file(str(weights))["enc.proj.w"].float().numpy()
    assert (got["up.weight"] == want).all()


@pytest.mark.parametrize("bad", ["int64", "complex64"])
def test_integer_or_complex_weights_are_not_cast_silently(tmp_path, capsys, bad):
    torch = pytest.importorskip("torch")
    path = spec_file(tmp_path, MAPPED)
    weights = _reference(tmp_path, torch.float32, **{"enc.proj.b": torch.arange(8).to(getattr(torch, bad))})
    for command in ("build", "export"):
        rc, _, err = run(capsys, command, path, "--weights", weights, "--weights-map", "ref", "-o", tmp_path / "m.x")
        assert rc == 1 and "floating-point" in err and bad in err, err
    from graphformer.backends.onnx.weights import to_numpy
    with pytest.raises(gf.UsageError, match="floating-point"):
        to_numpy("w", torch.zeros(3, dtype=getattr(torch, bad)))


# ---------------------------------------------------------------- 7. streams and formats

def test_a_full_stdout_is_exit_2_with_one_line():
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "cli", "check", "--shapes", GPT2], cwd=ROOT, stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "graphformer: error: cannot write to stdout: no space left on device"
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr


def test_a_closed_stdout_is_exit_2_with_one_line():
    r = subprocess.run(f"{sys.executable} -m cli schema >&-", shell=True, cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr == "graphformer: error: cannot write to stdout: it is closed\n"


def test_check_goes_on_past_unreadable_files(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.yaml")
    bad = spec_file(tmp_path, TINY.replace("op: norm", "op: nrm"), "bad.yaml")
    rc, out, err = run(capsys, "check", tmp_path / "missing.yaml", tmp_path / "pipe.yaml", "/dev/zero", bad,
                       GPT2, "--format", "json")
    assert rc == 2
    assert [d["code"] for d in json.loads(out)] == ["GF100"]
    assert err.count("graphformer: error: cannot read") == 3


def test_github_annotation_properties_are_escaped(tmp_path, capsys):
    weird = tmp_path / "a,line=1,title=forged:x%.yaml"
    weird.write_text(TINY.replace("op: norm", "op: nrm"))
    rc, out, _ = run(capsys, "check", weird, "--format", "github")
    line = out.strip()
    assert rc == 1 and line.count("\n") == 0
    props = line.split("::")[1]
    assert props.count(",") == 2 and ",title=" not in props and "%2C" in props and "%3A" in props and "%25" in props
    d = Diagnostic("GF001", "two\r\nlines 100%", Span("f", 1, 1))
    assert diagnostics.render_github([d]).strip().endswith("two%0D%0Alines 100%25")


def test_control_characters_in_names_are_escaped(tmp_path, capsys):
    path = spec_file(tmp_path, 'graphformer: 1\nname: "t\\e]0;pwned\\a"\ninputs: {x: {shape: [2, 4]}}\n'
                               'nodes:\n  "n\\e[2J": {op: norm}\n  m: {op: norm, in: "n\\e[2K"}\noutputs: {y: m}\n')
    rc, out, err = run(capsys, "check", path, "--shapes")
    assert rc == 1 and "\x1b" not in out + err and "\x07" not in out + err and "\\x1b" in err
    # such a name is refused (GF104: names are identifiers); the message quoting it is escaped
    named = spec_file(tmp_path, 'graphformer: 1\nname: t\ninputs: {x: {shape: [2, 4]}}\n'
                                'nodes:\n  "n\\e[2J": {op: norm}\noutputs: {y: "n\\e[2J"}\n', "named.yaml")
    for argv in (["check", named, "--shapes"], ["summary", named]):
        rc, out, err = run(capsys, *argv)
        assert rc == 1 and "GF104" in err and "\x1b" not in out + err and "\\x1b" in err


# ---------------------------------------------------------------- 8. API and semantics

@pytest.mark.parametrize("path, problem", [(None, "not NoneType"), (b"specs/gpt2.yaml", "bytes"), (3, "not int"),
                                           ("", "empty"), ("specs/gpt2.yaml\0x", "NUL")])
def test_load_names_what_is_wrong_with_the_path(path, problem):
    with pytest.raises(gf.UsageError, match=problem):
        gf.load(path)


@pytest.mark.parametrize("kw", [{"preset": 3}, {"overrides": [("d_model", 8)]}, {"overrides": {"d_model": None}},
                                {"overrides": {"d_model": [8]}}, {"overrides": {"d_model": 10**13}},
                                {"overrides": {"d_model": "wide"}}, {"overrides": {3: 8}}])
def test_load_checks_its_other_arguments(kw):
    with pytest.raises(gf.UsageError):
        gf.load(GPT2, **kw)


def test_tied_to_a_graph_input_is_a_check_error(tmp_path, capsys):
    path = spec_file(tmp_path, TINY.replace("n: {op: norm}", "n: {op: linear, out: 4, tied: x}"))
    rc, out, _ = run(capsys, "check", path, "--format", "json")
    d = json.loads(out)[0]
    assert rc == 1 and d["code"] == "GF125" and "graph input" in d["message"]


@pytest.mark.parametrize("seed", ["-1", str(2**64), "1e3", "lots"])
def test_seed_outside_its_range_is_a_usage_error(capsys, seed):
    for command in ("build", "export"):
        with pytest.raises(SystemExit) as e:
            cli.main([command, GPT2, "--seed", seed, "-o", "/nonexistent/x"])
        assert e.value.code == 2 and "--seed" in capsys.readouterr().err


def test_an_empty_node_name_gets_an_accurate_message(tmp_path, capsys):
    path = spec_file(tmp_path, TINY.replace("  n: {op: norm}", '  "": {op: norm}\n  n: {op: norm}'))
    rc, out, _ = run(capsys, "check", path, "--format", "json")
    msgs = [d["message"] for d in json.loads(out)]
    assert rc == 1 and "a node name may not be empty" in msgs and not any("`.`" in m for m in msgs)
