#!/usr/bin/env bash
# Installs graphformer with every extra into .venv (CPU torch) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[torch,onnx,dev]"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
