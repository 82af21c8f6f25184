"""A diagnostic code's page: what it means, an example of the mistake with the checker's real output on
it, and the fix. `graphformer explain CODE` prints one; docs/errors.md is all of them."""
from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import tempfile
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

from ..base.codes import CODES, EXAMPLE_FILE, Code
from ..base.diagnostics import SourceCache, render
from ..frontend.check import check_file


def example_output(entry: Code) -> str:
    """What `graphformer check` (or the entry's `command`) prints for its example, paths relative to it."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {EXAMPLE_FILE: entry.example, **entry.files}
        for rel, content in files.items():
            path = Path(tmp, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with _inside(tmp), _plugin(entry.plugin):  # files are named relative to the working directory
            text = _run(entry.command) if entry.command else \
                render(check_file(EXAMPLE_FILE).diagnostics, "text", SourceCache())
    return text.rstrip()


def _run(command: tuple[str, ...]) -> str:
    """What `graphformer <command...> example.yaml` writes to stderr (the command is a module of commands/)."""
    from .common import run_guarded
    mod = importlib.import_module(f"{__package__}.{command[0]}")
    parser = argparse.ArgumentParser(prog="graphformer")
    mod.add_parser(parser.add_subparsers())
    err = io.StringIO()
    with redirect_stderr(err):
        run_guarded(mod.run, parser.parse_args([*command, EXAMPLE_FILE]))
    return err.getvalue()


@contextmanager
def _plugin(name: str):
    """The demonstration plugin `name` installed for the example (nothing when empty)."""
    if not name:
        yield
        return
    from ..ops.plugins import demonstration
    with demonstration(name):
        yield


@contextmanager
def _inside(directory: str):
    old = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(old)


def first_code(entry: Code) -> str | None:
    """The code of the first diagnostic the example produces (a test holds it to the entry's own)."""
    m = re.search(r"(?:error|warning)\[(GF\d{3})\]", example_output(entry))
    return m.group(1) if m else None


def _shown(example: str | bytes) -> tuple[str, bool]:
    """The example as text, and whether bytes that aren't printable UTF-8 had to be escaped (`\\xNN`)."""
    if isinstance(example, str) and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", example.replace("\t", "")):
        return example, False
    raw = example if isinstance(example, bytes) else example.encode()
    return raw.decode("latin-1").encode("unicode_escape").decode("ascii").replace("\\n", "\n"), True


def page(code: str, heading: str = "#") -> str:
    """The entry for `code` as Markdown, under a heading of the given level."""
    entry = CODES[code]
    source, escaped = _shown(entry.example)
    lines = [f"{heading} {code}", "", f"**{entry.title}.** {entry.explanation}", "", f"**Fix:** {entry.fix}", "",
             f"Example (`{EXAMPLE_FILE}`" + (", raw bytes shown as `\\xNN`" if escaped else "") + "):", "",
             "```yaml", source.rstrip(), "```", ""]
    for rel, text in entry.files.items():
        lines += [f"with `{rel}`:", "", "```yaml", text.rstrip(), "```", ""]
    lines += [f"`graphformer {' '.join(entry.command) or 'check'}` reports:", "", "```text", example_output(entry), "```"]
    return "\n".join(lines) + "\n"
