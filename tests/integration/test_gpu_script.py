"""bench/gpu.sh, the prepared GPU run: on a machine without CUDA it starts, says why it has nothing to do,
and exits 0 (on a GPU machine it is run by hand; its table goes to docs/performance.md)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real thing by hand")
def test_gpu_script_starts_and_skips_cleanly_without_cuda():
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHON": sys.executable}, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "no CUDA device" in r.stdout and "Traceback" not in r.stderr
