"""The docs run as shown: every ```sh, ```console and ```python block in README.md and docs/*.md runs here,
in a scratch directory (a copy of specs/, its own $HOME, `graphformer` on $PATH), or is marked illustrative
with a reason: `<!-- illustrative: needs a GPU -->` on the line before the block.

- sh blocks run as one bash script (`set -e`); console blocks run each `$ ` command and compare the lines
  shown after it (`...` alone skips any number of lines, `...` inside a line matches anything);
- python blocks run in a subprocess after the page's earlier python blocks; `print(x)  # shown` compares
  the printed text with the comment when the comment is output rather than prose (a trailing
  `: explanation` may follow the output);
- the blocks of one page share their scratch directory, in page order (a file one block writes, the next
  reads); SUBSTITUTIONS swap a default size for `--preset tiny` where the page's size would be slow, and
  SETUP makes the files a page assumes exist (a save_pretrained directory, a reference checkpoint).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {"docs/ops.md", "docs/errors.md"}  # rendered by scripts/gen_docs.py, tested in test_docs_current
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")
                               if f"docs/{p.name}" not in GENERATED)
RUN_KINDS = {"sh", "console", "python"}
ILLUSTRATIVE = re.compile(r"^<!--\s*illustrative:\s*(\S.*?)\s*-->$")
SLOW_PAGES = {"docs/huggingface.md", "docs/new-model.md", "docs/weight-maps.md", "docs/onnx.md", "docs/generation.md", "docs/python-api.md"}

# page -> [(text in a block, what runs instead)]: a default-size model where the page's point holds at tiny
SUBSTITUTIONS: dict[str, list[tuple[str, str]]] = {
    "README.md": [("draw specs/bert-base.yaml -o bert.svg", "draw specs/bert-base.yaml --preset tiny -o bert.svg")],
    "docs/drawing.md": [("draw specs/bert-base.yaml -o bert.png --dims B=1 n=128",
                         "draw specs/bert-base.yaml --preset tiny -o bert.png --dims B=1 n=16")],
    "docs/onnx.md": [("export specs/gpt2.yaml -o gpt2.onnx", "export specs/gpt2.yaml --preset tiny -o gpt2.onnx"),
                     ("build specs/bert-base.yaml -o", "build specs/bert-base.yaml --preset tiny -o"),
                     ("export specs/bert-base.yaml --weights", "export specs/bert-base.yaml --preset tiny --weights"),
                     ("export specs/gpt2.yaml --weights model.safetensors",
                      "export specs/gpt2.yaml --preset tiny --weights model.safetensors")],
    "docs/weight-maps.md": [
        ('BertModel.from_pretrained("bert-base-uncased")',
         'BertModel(__import__("transformers").BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, '
         'num_attention_heads=4, intermediate_size=64, max_position_embeddings=32))'),
        ('graphformer.load("specs/bert-base.yaml")', 'graphformer.load("specs/bert-base.yaml", preset="tiny")'),
        ("build specs/gpt2.yaml --weights", "build specs/gpt2.yaml --preset tiny --weights"),
        ("export specs/gpt2.yaml --weights", "export specs/gpt2.yaml --preset tiny --weights")],
    "docs/python-api.md": [
        ("build specs/gpt2.yaml --weights model.safetensors", "build specs/gpt2.yaml --preset tiny --weights model.safetensors")],
}


def blocks(page: str):
    """(line, kind, code, illustrative reason or None) of every fenced block of a page, fences tracked
    so a fence shown inside another block is not taken for one."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,})\s*([\w-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, kind = m.groups()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        before = [l.strip() for l in lines[:start - 1] if l.strip()]
        reason = ILLUSTRATIVE.match(before[-1]) if before else None
        out.append((start, kind, "\n".join(body) + "\n", reason.group(1) if reason else None))
    return out


def test_every_runnable_block_is_found_and_marked_or_run():
    found = [(p, b) for p in PAGES for b in blocks(p) if b[1] in RUN_KINDS]
    assert len(found) >= 25
    for page, (line, kind, code, reason) in found:
        assert reason is None or len(reason) > 5, f"{page}:{line}: say why the block is illustrative"


def test_substitutions_still_match():
    for page, subs in SUBSTITUTIONS.items():
        text = (ROOT / page).read_text(encoding="utf-8")
        for old, _ in subs:
            assert old in text, f"{page}: substitution {old!r} no longer matches: update SUBSTITUTIONS"


# ---- scratch directory and page setup ------------------------------------------------------------------

def _scratch(tmp: Path) -> dict:
    shutil.copytree(ROOT / "specs", tmp / "specs", symlinks=False)
    (tmp / "bin").mkdir()
    (tmp / "home").mkdir()
    shim = tmp / "bin" / "graphformer"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m graphformer "$@"\n')
    shim.chmod(0o755)
    (tmp / "bin" / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORCE_COLOR", "GRAPHFORMER"))}
    env.update(PATH=f"{tmp / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(tmp / "home"),
               PYTHONPATH=str(ROOT), NO_COLOR="1", COLUMNS="120")
    return env


_HELPER = textwrap.dedent("""
    import torch, transformers
    torch.manual_seed(0)
    def llama_dir(path):   # the small save_pretrained directory docs/huggingface.md imports
        cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=40, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                       rope_theta=321.0, tie_word_embeddings=False)
        transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    def graphformer_cli(*args):
        import subprocess, sys
        subprocess.run([sys.executable, "-m", "graphformer", *args], check=True)
    def gpt2_file(path):   # a transformers GPT-2 checkpoint at the tiny preset, reference names
        import graphformer
        from safetensors.torch import save_file
        p = graphformer.load("specs/gpt2.yaml", preset="tiny").params
        cfg = transformers.GPT2Config(vocab_size=p["vocab"], n_positions=p["max_len"], n_embd=p["d_model"],
                                      n_layer=p["layers"], n_head=p["heads"])
        sd = transformers.GPT2LMHeadModel(cfg).state_dict()
        save_file({k: v.contiguous() for k, v in sd.items() if k != "lm_head.weight"}, path)
""")

SETUP: dict[str, str] = {
    "docs/huggingface.md": 'llama_dir("my-llama"); llama_dir("tiny-llama")',
    "docs/weight-maps.md": 'gpt2_file("model.safetensors")',
    "docs/onnx.md": 'gpt2_file("model.safetensors"); llama_dir("tiny-llama")',
    "docs/python-api.md": 'llama_dir("my-llama"); llama_dir("tiny-llama"); gpt2_file("model.safetensors"); '
                          'graphformer_cli("import", "hf", "my-llama", "-o", "my-llama.yaml")',
}


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ---- matching shown output ---------------------------------------------------------------------------

def _line_pattern(line: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in line.rstrip().split("...")))


def shown_matches(shown: list[str], actual: list[str]) -> bool:
    """`...` alone: any number of lines; `...` in a line: any text."""
    if not shown:
        return not actual
    head, rest = shown[0], shown[1:]
    if head.strip() == "...":
        return any(shown_matches(rest, actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and bool(_line_pattern(head).fullmatch(actual[0].rstrip())) and shown_matches(rest, actual[1:])


def console_commands(code: str) -> list[tuple[str, list[str]]]:
    """[(command, shown output lines)] of a console block; `\\` continues a command."""
    out: list[tuple[str, list[str]]] = []
    lines, i = code.splitlines(), 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            assert out, f"output before any command: {lines[i]!r}"
            out[-1][1].append(lines[i])
            i += 1
            continue
        cmd = lines[i][2:]
        while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
        out.append((cmd, []))
        i += 1
    return out


_PROSE = re.compile(r"^[A-Za-z]+[ ,;]")
_PRINT = re.compile(r"^(\s*)print\((.*)\)\s*#\s*(.+)$")


def instrument(code: str, checking: bool) -> str:
    """Each `print(x)  # shown output` becomes a check that str(x) is the output shown."""
    out = []
    for line in code.splitlines():
        m = _PRINT.match(line)
        if m and not _PROSE.match(m.group(3)):
            indent, expr, shown = m.groups()
            line = f"{indent}__shown__({expr}, {shown!r})" if checking else f"{indent}pass"
        out.append(line)
    return "\n".join(out) + "\n"


_CHECK = textwrap.dedent("""
    import re as __re
    def __shown__(value, shown):
        text = str(value)
        cuts = [shown] + [shown[:m.start()] for m in __re.finditer(r": ", shown)]
        pats = [__re.compile(".*".join(__re.escape(p) for p in c.split("...")), __re.S) for c in cuts]
        if not any(p.fullmatch(text) for p in pats):
            raise AssertionError(f"printed {text!r}, the page shows {shown!r}")
        print(text)
""")


# ---- the test ----------------------------------------------------------------------------------------

def _marks(page):
    return [pytest.mark.slow] if page in SLOW_PAGES else []


@pytest.mark.parametrize("page", [pytest.param(p, marks=_marks(p)) for p in PAGES])
def test_page_runs_as_shown(page, tmp_path):
    runnable = [b for b in blocks(page) if b[1] in RUN_KINDS and b[3] is None]
    if not runnable:
        pytest.skip("no runnable blocks")
    env = _scratch(tmp_path)
    if page in SETUP:
        r = _run([sys.executable, "-c", _HELPER + SETUP[page]], tmp_path, env)
        assert r.returncode == 0, r.stderr[-3000:]
    subs = SUBSTITUTIONS.get(page, [])
    earlier_python: list[str] = []
    for line, kind, code, _ in runnable:
        for old, new in subs:
            code = code.replace(old, new)
        where = f"{page}:{line}"
        if kind == "sh":
            r = _run(["bash", "-e", "-o", "pipefail", "-c", code], tmp_path, env)
            assert r.returncode == 0, f"{where}: exit {r.returncode}\n{r.stderr[-3000:]}"
        elif kind == "console":
            for cmd, shown in console_commands(code):
                r = _run(["bash", "-o", "pipefail", "-c", cmd], tmp_path, env)
                assert r.returncode == 0, f"{where}: `{cmd}` exit {r.returncode}\n{r.stderr[-3000:]}"
                if shown:
                    actual = (r.stdout + r.stderr).splitlines()
                    assert shown_matches(shown, actual), \
                        f"{where}: `{cmd}` printed\n" + "\n".join(actual[:60]) + "\nthe page shows\n" + "\n".join(shown)
        else:
            script = _CHECK + "".join(instrument(c, False) for c in earlier_python) + instrument(code, True)
            r = _run([sys.executable, "-c", script], tmp_path, env)
            assert r.returncode == 0, f"{where}:\n{r.stderr[-3000:]}"
            earlier_python.append(code)
