"""graphformer.parallelize under torchrun with the gloo backend on CPU: FSDP2, tensor parallelism from the
derived plan, and both on a 2 × 2 mesh train exactly like one process (tests/dist_worker.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import graphformer  # noqa: E402
from graphformer.load import UsageError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "tests" / "dist_worker.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.mark.parametrize("name,mode,nproc", [
    ("llama", "fsdp", 2), ("llama", "tp", 2), ("gpt2", "tp", 2),
    pytest.param("llama", "2d", 4, marks=pytest.mark.slow), pytest.param("gpt2", "fsdp", 2, marks=pytest.mark.slow),
])
def test_sharded_training_equals_one_process(name, mode, nproc):
    r = torchrun(nproc, name, mode)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "worst difference" in r.stdout


def test_plan_without_building():
    spec = graphformer.load(SPECS / "llama.yaml", preset="tiny")
    plan = {s.module: s.style for s in graphformer.plan(spec, tp=2)}
    assert plan["blocks.0.attn.q"] == plan["blocks.0.mlp.gate"] == plan["blocks.0.mlp.up"] == "colwise"
    assert plan["blocks.1.attn.o"] == plan["blocks.1.mlp.down"] == "rowwise"
    assert plan["tok"] == plan["lm_head"] == "replicate"
    with pytest.raises(UsageError, match="heads = 6 does not divide by tp = 4"):
        graphformer.plan(spec, tp=4)
    with pytest.raises(UsageError, match="kv_heads = 2 does not divide by tp = 3"):
        graphformer.plan(spec, tp=3)
