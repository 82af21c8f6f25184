"""A headless Chromium for the viewer's tests and the gallery's screenshots (the system's browser, driven
by playwright's Python API; playwright's own browser download is never used).

`chromium()` yields a browser, or raises BrowserMissing saying what to install.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

# No sandbox (containers run as root), no GPU, and nothing that would reach the network on its own.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserMissing(Exception):
    pass


def executable() -> str:
    """The Chromium to drive: $GRAPHFORMER_CHROMIUM, else the first of CANDIDATES on PATH."""
    path = os.environ.get("GRAPHFORMER_CHROMIUM") or next(filter(None, map(shutil.which, CANDIDATES)), None)
    if not path:
        raise BrowserMissing("no Chromium found: install it (`apt-get install chromium`) or set GRAPHFORMER_CHROMIUM")
    return path


@contextmanager
def chromium():
    exe = executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserMissing("playwright is not installed: `pip install playwright` (no browser download needed)") from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
