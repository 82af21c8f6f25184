"""`graphformer view SPEC`: write the interactive HTML viewer to a temporary file and open it in the browser.

The same page as `draw --format html`; the file is kept (the browser reads it after we exit) and its path
printed, so that it can be opened by hand where no browser can be started (a remote shell).
"""
from __future__ import annotations

import os
import tempfile
import webbrowser
from pathlib import Path

from .common import add_spec_args
from .draw import run as draw


def add_parser(sub) -> None:
    p = sub.add_parser("view", help="open the interactive HTML viewer of a spec in the browser",
                       description="Open a spec in the interactive HTML viewer (pan, zoom, expand blocks, "
                                   "search, shapes and costs per node): `draw --format html` to a temporary "
                                   "file, then the default browser.")
    add_spec_args(p, dims=True)
    p.add_argument("--expand", action="store_true", help="open with every repeated block expanded")
    p.add_argument("--expand-experts", action="store_true", help="open with every expert of a mixture drawn")
    p.add_argument("--direction", choices=["TB", "LR"], default="TB", help="top to bottom (default) or left to right")


def run(args) -> int:
    name = Path(args.spec).stem
    fd, path = tempfile.mkstemp(prefix=f"graphformer-{name}-", suffix=".html")
    os.close(fd)
    args.output, args.format = path, "html"
    try:
        draw(args)
    except BaseException:   # a spec error, no `dot`: no empty page left behind
        os.unlink(path)
        raise
    uri = Path(path).as_uri()
    opened = webbrowser.open(uri)
    print(f"{'opened' if opened else 'wrote'} {path}" + ("" if opened else ": open it in a browser"))
    return 0
