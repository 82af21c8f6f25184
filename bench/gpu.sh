#!/usr/bin/env bash
# The GPU run of issue 30: GPU-marked tests, bf16 forward/training/generation vs transformers, parallelize
# with NCCL, one table (bench/gpu.py says what). Exits 0 with a message where there is no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
# $PYTHON if given, else the checkout's .venv, else python3
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
exec timeout 480 "$PY" bench/gpu.py "$@"
