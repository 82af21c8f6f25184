"""The hook long loops report progress through (building per layer, loading weights per tensor, ONNX
external data per tensor, checkpoint shards): `track(items, total, desc)` returns `items` unchanged unless
a reporter is installed. The command line installs one on a terminal (commands/progress.py); library
calls stay silent. A context variable rather than a parameter, so the loops' signatures don't grow one."""
from __future__ import annotations

from contextvars import ContextVar
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
Reporter = Callable[[Iterable, "int | None", str, str], Iterable]
REPORTER: ContextVar[Reporter | None] = ContextVar("graphformer_progress", default=None)


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    reporter = REPORTER.get()
    return items if reporter is None else reporter(items, total, desc, unit)
