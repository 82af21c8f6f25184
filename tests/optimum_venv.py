"""optimum's own virtual environment: optimum-onnx pins transformers < 4.58 while the project runs 5, so the
tests that load exported directories with optimum (tests/slow/test_optimum.py) run its classes in a second
environment, made once with `python -m venv` and pip, and kept under $GRAPHFORMER_OPTIMUM_VENV (default
~/.cache/graphformer/optimum-venv). It is reused while its marker file names the same requirements; one
left half-made (no marker) is made again. `python tests/optimum_venv.py` makes it (.ci/run's install step)."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time

REQUIREMENTS = ["torch==2.13.0", "optimum-onnx[onnxruntime]==0.1.0"]
ENV = "GRAPHFORMER_OPTIMUM_VENV"
MARKER = "graphformer-requirements.txt"
TIMEOUT = 1200   # seconds for pip; measured here: about 2 minutes (torch from the local wheel)


class VenvError(Exception):
    """The environment could not be made (no network, no venv module, pip failed)."""


def location() -> str:
    return os.environ.get(ENV) or os.path.join(os.path.expanduser("~"), ".cache", "graphformer", "optimum-venv")


def python() -> str:
    return os.path.join(location(), "bin", "python")


def ready() -> bool:
    try:
        with open(os.path.join(location(), MARKER)) as fh:
            return fh.read().split() == REQUIREMENTS and os.path.exists(python())
    except OSError:
        return False


def ensure() -> str:
    """The environment's python, made first if needed (under a lock: one maker at a time); VenvError if it
    cannot be made."""
    if ready():
        return python()
    root = location()
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with open(root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return python()
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        for cmd in ([sys.executable, "-m", "venv", root],
                    [python(), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS]):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise VenvError(f"optimum's environment could not be made: {' '.join(cmd[:4])}: {e}") from None
            if r.returncode:
                tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
                raise VenvError(f"optimum's environment could not be made ({' '.join(cmd[:4])} ...): "
                                + " / ".join(tail))
        with open(os.path.join(root, MARKER), "w") as fh:
            fh.write("\n".join(REQUIREMENTS) + "\n")
        sys.stderr.write(f"made optimum's environment in {root} in {time.perf_counter() - t0:.0f} s\n")
    return python()


if __name__ == "__main__":
    try:
        print(ensure())
    except VenvError as e:
        sys.exit(f"error: {e}")
