"""Diagnostics are data: a code, a severity, a message, a source span, labels, notes, a help line.

Rendering (text with a source excerpt and caret, JSON, GitHub annotations) is a separate step so
every front-end error looks the same whichever stage found it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, asdict
from typing import Iterable


@dataclass(frozen=True)
class Span:
    """A 1-based source position (`end_col` exclusive, on `line`)."""

    file: str
    line: int
    col: int
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass
class Label:
    span: Span
    message: str


@dataclass
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    severity: str = "error"  # "error" | "warning"
    node: str | None = None  # IR path such as `encoder.3.attn`
    labels: list[Label] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    help: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.span.file if self.span else None,
            "line": self.span.line if self.span else None,
            "col": self.span.col if self.span else None,
            "node": self.node,
            "labels": [{"file": l.span.file, "line": l.span.line, "col": l.span.col,
                        "message": l.message} for l in self.labels],
            "notes": list(self.notes),
            "help": self.help,
        }


class SpecError(Exception):
    """Raised by the Python API when a spec has errors; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        errors = [d for d in self.diagnostics if d.is_error] or self.diagnostics
        head = errors[0] if errors else None
        msg = f"{head.span}: {head.message}" if head and head.span else (head.message if head else "spec error")
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more)"
        super().__init__(msg)

    def render(self, fmt: str = "text", sources: "SourceCache | None" = None) -> str:
        return render(self.diagnostics, fmt, sources)


class SourceCache:
    """Source text by file name, for excerpts. Files that can't be read just get no excerpt."""

    def __init__(self) -> None:
        self._text: dict[str, list[str]] = {}

    def add(self, file: str, text: str) -> None:
        self._text[file] = text.splitlines()

    def line(self, file: str, line: int) -> str | None:
        if file not in self._text:
            try:
                with open(file, encoding="utf-8") as fh:
                    self._text[file] = fh.read().splitlines()
            except (OSError, UnicodeDecodeError, ValueError):
                self._text[file] = []
        lines = self._text[file]
        return lines[line - 1] if 0 < line <= len(lines) else None


# ANSI styles for a terminal: the severity and code, and the carets, as rustc colours them
_STYLE = {"error": "1;31", "warning": "1;33", "label": "1;34"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_STYLE[style]}m{text}\x1b[0m" if color else text


def _excerpt(span: Span, sources: SourceCache, label: str = "", style: str = "error",
             color: bool = False) -> list[str]:
    text = sources.line(span.file, span.line)
    if text is None:
        return []
    gutter = " " * len(str(span.line))
    width = max(1, (span.end_col or span.col + 1) - span.col)
    caret = " " * (span.col - 1) + _paint("^" * width + (f" {label}" if label else ""), style, color)
    return [f"{gutter} |", f"{span.line} | {text}", f"{gutter} | {caret}"]


def render_text(diags: Iterable[Diagnostic], sources: SourceCache | None = None, color: bool = False) -> str:
    """rustc-style text; `color` adds ANSI colours (the caller decides: a terminal, NO_COLOR, FORCE_COLOR)."""
    sources = sources or SourceCache()
    out: list[str] = []
    for d in diags:
        where = f"{d.span}: " if d.span else ""
        out.append(f"{where}{_paint(f'{d.severity}[{d.code}]', d.severity, color)}: {d.message}")
        if d.span:
            out.extend(_excerpt(d.span, sources, style=d.severity, color=color))
        for lab in d.labels:
            excerpt = _excerpt(lab.span, sources, lab.message, "label", color)
            out.append(f"  --> {lab.span}" + ("" if excerpt else f": {lab.message}"))
            out.extend("  " + l for l in excerpt)
        if d.node:
            out.append(f"  = node: {d.node}")
        out.extend(f"  = note: {n}" for n in d.notes)
        if d.help:
            out.append(f"  = help: {d.help}")
        out.append("")
    return "\n".join(out)


def _gh_escape(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def render_github(diags: Iterable[Diagnostic]) -> str:
    out = []
    for d in diags:
        kind = "error" if d.is_error else "warning"
        loc = f" file={d.span.file},line={d.span.line},col={d.span.col}" if d.span else ""
        msg = f"[{d.code}] {d.message}" + (f" (help: {d.help})" if d.help else "")
        out.append(f"::{kind}{loc}::{_gh_escape(msg)}")
    return "\n".join(out) + ("\n" if out else "")


def render(diags: Iterable[Diagnostic], fmt: str = "text", sources: SourceCache | None = None,
           color: bool = False) -> str:
    diags = list(diags)
    if fmt == "json":
        return json.dumps([d.to_json() for d in diags], indent=2) + "\n"
    if fmt == "github":
        return render_github(diags)
    return render_text(diags, sources, color)


def did_you_mean(word: str, choices: Iterable[str], max_distance: int = 2) -> str | None:
    """The closest choice within a small edit distance, for 'did you mean' hints."""
    if len(word) > 64:  # no one mistypes a name that long, and the distance is quadratic in its length
        return None
    best, best_d = None, max_distance + 1
    for c in choices:
        d = _levenshtein(word, c)
        if d < best_d:
            best, best_d = c, d
    return best if best_d <= max(1, min(max_distance, len(word) // 2)) else None


def _levenshtein(a: str, b: str) -> int:
    if abs(len(a) - len(b)) > 3:
        return 99
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
