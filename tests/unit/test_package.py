"""graphformer as an installed package: the CLI inside it (`python -m graphformer`, `--version`, completion,
colour), the bundled models found by name from anywhere, `graphformer list`, a torch-free `check`, and a
wheel that holds the specs and the schema but no top-level `cli` module."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import graphformer
from graphformer.frontend import bundled
from graphformer import cli

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, whatever the cwd

# as if the torch and onnx extras were never installed; fails if a command imports them anyway
BLOCK_EXTRAS = textwrap.dedent("""\
    import importlib.abc, sys
    BLOCKED = {"torch", "onnx", "onnxruntime", "onnxscript", "safetensors", "numpy"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Blocker())
    from graphformer.cli import main
    rc = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    sys.exit(rc)
""")


def sub(*argv: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "graphformer"]
    r = subprocess.run(cmd + list(argv), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def test_python_m_graphformer_and_version(tmp_path):
    r = sub("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"graphformer {graphformer.__version__}"


def test_load_by_name_from_another_directory(tmp_path):
    code = "import graphformer; s = graphformer.load('gpt2', preset='tiny'); print(s.name, s.params['d_model'])"
    r = sub(cwd=tmp_path, code=code)
    assert r.returncode == 0 and r.stdout.split() == ["gpt2", "32"], r.stderr


def test_commands_take_a_bundled_name_without_torch(tmp_path):
    for argv in (["check", "gpt2", "bert-base.yaml"], ["summary", "vit-b16"], ["draw", "gpt2", "--format", "dot"],
                 ["list"], ["explain", "GF120"]):
        r = sub(*argv, cwd=tmp_path, code=BLOCK_EXTRAS)
        assert r.returncode == 0, (argv, r.stderr)


def test_a_path_always_wins_over_a_bundled_name(tmp_path, monkeypatch):
    mine = (bundled.SPEC_DIR / "encoder-block.yaml").read_text().replace("name: encoder-block", "name: mine")
    (tmp_path / "gpt2.yaml").write_text(mine)
    monkeypatch.chdir(tmp_path)
    assert graphformer.load("gpt2.yaml").name == "mine"  # the file here
    assert graphformer.load("gpt2").name == "gpt2"        # no file `gpt2`: the bundled model


def test_an_unknown_name_is_a_usage_error_with_a_suggestion(capsys):
    assert cli.main(["check", "gtp2"]) == 2
    err = capsys.readouterr().err
    assert "neither a file nor a bundled model" in err and "did you mean `gpt2`?" in err
    assert cli.main(["check", "nowhere/gpt2.yaml"]) == 2  # a path is never taken for a name
    assert "no such file" in capsys.readouterr().err


def test_list_shows_every_bundled_model_with_its_parameter_count(capsys):
    assert cli.main(["list", "--format", "json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert sorted(models) == bundled.names() and len(models) >= 14
    assert models["gpt2"]["params"] == 124_439_808 and models["gpt2"]["about"].startswith("GPT-2 small")
    assert cli.main(["list"]) == 0
    assert any(line.split()[:2] == ["bert-base", "109,482,240"] for line in capsys.readouterr().out.splitlines())


def test_bundled_modelines_point_at_the_schema_beside_them():
    assert bundled.SCHEMA.is_file()
    for name in bundled.names():
        first = (bundled.SPEC_DIR / f"{name}.yaml").read_text().splitlines()[0]
        assert first == f"# yaml-language-server: $schema={bundled.SCHEMA.name}", name


def test_checkout_specs_dir_is_the_bundled_one():
    assert (ROOT / "specs").resolve() == bundled.SPEC_DIR


# ---------------------------------------------------------------- colour

def _bad_spec(tmp_path) -> str:
    text = (bundled.SPEC_DIR / "gpt2.yaml").read_text().replace("heads: 12", "heads: 5")
    (tmp_path / "bad.yaml").write_text(text)
    return str(tmp_path / "bad.yaml")


@pytest.mark.parametrize("env, coloured", [({}, False), ({"FORCE_COLOR": "1"}, True),
                                           ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False)])
def test_colour_follows_force_color_and_no_color(tmp_path, capsys, monkeypatch, env, coloured):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bad = _bad_spec(tmp_path)
    for command in ("check", "summary"):
        assert cli.main([command, bad]) == 1
        err = capsys.readouterr().err
        assert ("\x1b[1;31merror[GF123]\x1b[0m" in err) == coloured and ("\x1b[" in err) == coloured
        assert ("\x1b[1;31m^" in err) == coloured  # the carets too
    assert cli.main(["check", bad, "--format", "json"]) == 1
    assert "\x1b[" not in capsys.readouterr().out  # machine formats never


# ---------------------------------------------------------------- completion, draw

@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_names_every_command(shell, capsys):
    pytest.importorskip("shtab")
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert all(c in script for c in [*cli.COMMANDS, "--preset", "--shapes"])


def test_draw_says_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "gpt2.dot"
    assert cli.main(["draw", "gpt2", "-o", str(out)]) == 0
    assert capsys.readouterr().err.startswith(f"wrote {out} (dot, ")


# ---------------------------------------------------------------- the wheel

@pytest.mark.slow
def test_wheel_holds_the_models_and_the_schema_but_no_top_level_cli(tmp_path):
    pytest.importorskip("setuptools")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("graphformer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"graphformer/specs/{n}.yaml" for n in bundled.names()} <= names
    assert "graphformer/specs/spec.schema.json" in names and "graphformer/__main__.py" in names
    assert not [n for n in names if "/" not in n], "nothing at the top level (no `cli` module)"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "graphformer = graphformer.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_a_name_too_long_for_the_file_system_is_no_bundled_model(tmp_path, capsys):
    """os.stat raises ENAMETOOLONG on such a name: a usage error (exit 2) or GF235, never a traceback."""
    assert cli.main(["check", "x" * 400]) == 2
    assert "neither a file nor a bundled model" in capsys.readouterr().err
    spec = tmp_path / "s.yaml"
    spec.write_text(f"graphformer: 1\nname: s\nimports:\n  - {{from: {'y' * 400}, blocks: [mlp]}}\nnodes: {{}}\n"
                    "outputs: {}\n")
    assert cli.main(["check", str(spec)]) == 1
    assert "GF235" in capsys.readouterr().err
