"""Shared by the benchmarks: the machine line every table starts with, and writing a table into the docs."""
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


def write_section(doc: str, begin: str, end: str, text: str) -> None:
    """Replace only the text between `begin` and `end` in `doc` (other sections belong to other benchmarks)."""
    body = open(doc).read() if os.path.exists(doc) else "# Performance\n"
    if begin not in body or end not in body:
        body = body.rstrip("\n") + "\n\n" + begin + "\n" + end + "\n"
    head, rest = body.split(begin, 1)
    _, tail = rest.split(end, 1)
    tmp = f"{doc}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(head + begin + "\n" + text.strip("\n") + "\n" + end + tail)
    os.replace(tmp, doc)
