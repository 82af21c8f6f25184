#!/usr/bin/env bash
# Installs graphformer with every extra into .venv (CPU torch) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# Graphviz's `dot` (needed by `graphformer draw`) and Chromium (the HTML viewer's browser tests, driven by
# playwright from the dev extra; playwright's own browser download is not used) come from the system.
need=""
command -v dot >/dev/null 2>&1 || need="$need graphviz"
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need="$need chromium"
if [ -n "$need" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $need >/dev/null \
      || echo "warning: could not install$need: the tests that need them are skipped" >&2
  else
    echo "warning: install$need for the drawing and viewer tests (they are skipped without)" >&2
  fi
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[torch,onnx,dev]"
# With arguments: one pytest run of exactly those. Without: the tiers in order, the torch-free unit tier
# on its own first (it runs with torch blocked: tests/unit/conftest.py), then integration and slow.
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
fi
.venv/bin/python -m pytest -q -p no:cacheprovider tests/unit
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests/integration tests/slow
