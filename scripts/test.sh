#!/usr/bin/env bash
# Installs graphformer with every extra into .venv (CPU torch) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# Graphviz's `dot` binary comes from the system package manager (needed by `graphformer draw`).
if ! command -v dot >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq graphviz >/dev/null
  else
    echo "warning: install Graphviz (the dot binary) for the drawing tests" >&2
  fi
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[torch,onnx,dev]"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
