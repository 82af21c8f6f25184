"""Progress bars for the command line: tqdm on stderr, only when stderr is a terminal (TERM not dumb) and
`--quiet` is not given, shown only for work that runs past a second (tqdm's `delay`). Output that goes to
a pipe or a log is unchanged. The loops themselves call `graphformer.base.progress.track`."""
from __future__ import annotations

import contextlib
import os
import sys

from ..base.progress import REPORTER

DELAY_S = 1.0   # quick work shows nothing: a bar appears only once a loop has run this long


def wanted(args, stream=None) -> bool:
    stream = stream or sys.stderr
    if getattr(args, "quiet", False):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _tqdm_reporter(stream, delay: float):
    from tqdm import tqdm

    def report(items, total, desc, unit):
        return tqdm(items, total=total, desc=desc, unit=unit, file=stream, delay=delay, leave=False,
                    dynamic_ncols=True, mininterval=0.2)
    return report


@contextlib.contextmanager
def reporting(args, stream=None, force: bool | None = None, delay: float | None = None):
    """Install the tqdm reporter for the length of a command when `wanted` (or `force`) says so."""
    stream = stream or sys.stderr
    on = wanted(args, stream) if force is None else force
    if on:
        try:
            reporter = _tqdm_reporter(stream, DELAY_S if delay is None else delay)
        except ImportError:   # tqdm missing from a broken install: work without bars
            on = False
    token = REPORTER.set(reporter if on else None)
    try:
        yield
    finally:
        REPORTER.reset(token)


def add_quiet(p) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars on stderr (shown only on a terminal)")
