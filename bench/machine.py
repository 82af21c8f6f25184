"""The machine line every benchmark table starts with."""
from __future__ import annotations

import os
import platform
import re
import subprocess


def cpu() -> str:
    """CPU model (from lscpu when available) and core count."""
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s+(.+)", out)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"
