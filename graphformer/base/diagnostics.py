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


MAX_SOURCE_BYTES = 2_000_000  # the loader's limit: a file that grew past it since gets no excerpt
MAX_EXCERPT_CHARS = 200       # a longer source line is cut, so one line can't flood the terminal


class SourceCache:
    """Source text by file name, for excerpts. Files that can't be read just get no excerpt; only
    regular files are re-read, and only up to the loader's size limit."""

    def __init__(self) -> None:
        self._text: dict[str, list[str]] = {}

    def add(self, file: str, text: str) -> None:
        self._text[file] = text.splitlines()

    def line(self, file: str, line: int) -> str | None:
        if file not in self._text:
            from .reading import FileProblem, FileTooBig, read_regular_file
            try:
                raw = read_regular_file(file, MAX_SOURCE_BYTES)
                self._text[file] = [] if len(raw) > MAX_SOURCE_BYTES else raw.decode("utf-8").splitlines()
            except (FileProblem, FileTooBig, UnicodeDecodeError, TypeError):
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
    if len(text) > MAX_EXCERPT_CHARS:
        text = text[:MAX_EXCERPT_CHARS] + " …"
    text = escape_controls(text)
    gutter = " " * len(str(span.line))
    width = max(1, (span.end_col or span.col + 1) - span.col)
    caret = " " * (span.col - 1) + _paint("^" * width + (f" {escape_controls(label)}" if label else ""), style, color)
    return [f"{gutter} |", f"{span.line} | {text}", f"{gutter} | {caret}"]


def render_text(diags: Iterable[Diagnostic], sources: SourceCache | None = None, color: bool = False) -> str:
    """rustc-style text; `color` adds ANSI colours (the caller decides: a terminal, NO_COLOR, FORCE_COLOR)."""
    sources = sources or SourceCache()
    out: list[str] = []
    esc = escape_controls   # user text is escaped piece by piece, so that only our own colours reach a terminal
    for d in diags:
        where = f"{esc(str(d.span))}: " if d.span else ""
        out.append(f"{where}{_paint(f'{d.severity}[{d.code}]', d.severity, color)}: {esc(d.message)}")
        if d.span:
            out.extend(_excerpt(d.span, sources, style=d.severity, color=color))
        for lab in d.labels:
            excerpt = _excerpt(lab.span, sources, lab.message, "label", color)
            out.append(f"  --> {esc(str(lab.span))}" + ("" if excerpt else f": {esc(lab.message)}"))
            out.extend("  " + l for l in excerpt)
        if d.node:
            out.append(f"  = node: {esc(d.node)}")
        out.extend(f"  = note: {esc(n)}" for n in d.notes)
        if d.help:
            out.append(f"  = help: {esc(d.help)}")
        out.append("")
    return "\n".join(out)


_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F] if chr(c) not in "\t"}
_CONTROLS.update({c: f"\\u{c:04x}" for c in [*range(0x80, 0xA0), 0x2028, 0x2029, 0x202E, 0x2066, 0x2067,
                                             0x2068, 0x2069, 0x202A, 0x202B, 0x202C, 0x202D]})


def escape_controls(s: str) -> str:
    """Control characters (and text-direction overrides) as visible escapes: a name or message can't
    move the cursor, clear the screen or forge a line of output."""
    return s.translate(_CONTROLS)


def escape_lines(s: str, indent: str = "  ") -> str:
    """A multi-line message as lines: each line's controls escaped, the lines after the first indented, so
    a message lists its problems one per line and still can't forge a line of output at column 0."""
    return ("\n" + indent).join(escape_controls(line) for line in s.split("\n"))


def _gh_escape(s: str) -> str:
    """A workflow command's message: `%`, CR and LF escaped (GitHub's rules)."""
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(s: str) -> str:
    """A workflow command's property value (file=...): additionally `:` and `,`, which end it."""
    return _gh_escape(s).replace(":", "%3A").replace(",", "%2C")


def render_github(diags: Iterable[Diagnostic]) -> str:
    out = []
    for d in diags:
        kind = "error" if d.is_error else "warning"
        loc = f" file={_gh_property(d.span.file)},line={d.span.line},col={d.span.col}" if d.span else ""
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


MAX_SUGGESTION_CHOICES = 2_000  # candidates compared per hint; a larger namespace gets no hint


def did_you_mean(word: str, choices: Iterable[str], max_distance: int = 2) -> str | None:
    """The closest choice within a small edit distance, for 'did you mean' hints. Each comparison is
    banded (O(len · distance)) and candidates of the wrong length are skipped without one."""
    if len(word) > 64:  # no one mistypes a name that long, and the distance grows with its length
        return None
    limit = max(1, min(max_distance, len(word) // 2))
    best, best_d = None, limit + 1
    for i, c in enumerate(choices):
        if i >= MAX_SUGGESTION_CHOICES:
            return None
        if not isinstance(c, str) or abs(len(c) - len(word)) >= best_d:
            continue
        d = _levenshtein(word, c, best_d - 1)
        if d < best_d:
            best, best_d = c, d
    return best if best_d <= limit else None


def _levenshtein(a: str, b: str, bound: int = 3) -> int:
    """Edit distance of `a` and `b` if it is at most `bound`, else `bound + 1` (only a band of width
    2·bound + 1 around the diagonal is computed, and it stops once the whole band exceeds `bound`)."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    over = bound + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        lo, hi = max(1, i - bound), min(len(b), i + bound)
        cur = [over] * (len(b) + 1)
        cur[0] = i if i <= bound else over
        for j in range(lo, hi + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != b[j - 1]), over)
        if min(cur[max(0, lo - 1):hi + 1]) > bound:
            return over
        prev = cur
    return min(prev[-1], over)
