#!/usr/bin/env bash
# The GPU run of issue 30: GPU-marked tests, bf16 forward/training/generation vs transformers, parallelize
# with NCCL, one table (bench/gpu.py says what). Exits 0 with a message where there is no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec timeout 480 "$PY" bench/gpu.py "$@"
