"""The library's exception types, below every layer so that any module can raise them.

`SpecError` (a spec with errors, carrying its diagnostics) lives beside `Diagnostic` in diagnostics.py,
which is just as low. What the CLI does with each: `SpecError` and `WeightMapError` exit 1 (the spec or
its weight map is wrong), `UsageError` and its subclasses exit 2 (how graphformer was invoked, or its
environment).
"""
from __future__ import annotations

MAX_LISTED = 8      # problems listed in one WeightMapError message; the rest are counted


class UsageError(Exception):
    """A problem with how graphformer was invoked or its environment (exit code 2)."""


class WeightMapError(Exception):
    """A weight map does not fit the state dict or the spec (the CLI reports it with exit status 1)."""

    def __init__(self, problems: list[str] | str):
        # one problem per line: a newline inside one (a key's name) is shown as `\x0a`, not a new line
        self.problems = [p.replace("\n", "\\x0a").replace("\r", "\\x0d")
                         for p in ([problems] if isinstance(problems, str) else problems)]
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        super().__init__("\n".join(shown) + (f"\n... and {more} more" if more > 0 else ""))


class ExportError(UsageError):
    """The spec is valid but cannot be exported as asked (an op without a lowering, bad weights, ...)."""


class WeightFileError(UsageError):
    """A weights file that is missing, unreadable, or not a state dict."""
