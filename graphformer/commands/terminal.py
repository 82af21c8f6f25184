"""Whether to colour what goes to a stream: on a terminal, unless NO_COLOR says no (https://no-color.org);
FORCE_COLOR says yes even through a pipe (https://force-color.org). NO_COLOR wins when both are set."""
from __future__ import annotations

import os


def wants_color(stream) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
