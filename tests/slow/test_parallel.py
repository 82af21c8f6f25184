"""graphformer.parallelize under torchrun with the gloo backend on CPU: FSDP2, tensor parallelism from the
derived plan, and both on a 2 × 2 mesh train exactly like one process; a checkpoint saved sharded loads at
another world size, and the single-file export of a sharded run is the model (tests/dist_worker.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import graphformer  # noqa: E402
from graphformer.frontend.load import UsageError  # noqa: E402

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"


def torchrun(nproc: int, *args: str, script: Path = ROOT / "tests" / "dist_worker.py") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.mark.parametrize("name,mode,nproc", [
    ("llama", "fsdp+ac", 2), ("llama", "tp", 2), ("gpt2", "tp", 2),
    pytest.param("llama", "2d", 4, marks=pytest.mark.slow), pytest.param("gpt2", "fsdp", 2, marks=pytest.mark.slow),
    # FSDP around whole blocks (not experts, which ranks run unevenly) and each expert split tensor-parallel
    pytest.param("mixtral-8x7b", "2d", 4, marks=pytest.mark.slow),
])
def test_sharded_training_equals_one_process(name, mode, nproc):
    r = torchrun(nproc, name, mode)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "worst difference" in r.stdout
    print(r.stdout.strip())


SHARED = """\
graphformer: 1
name: shared_gpt
params: {vocab: 97, d_model: 32, heads: 4, layers: 4}
presets: {tiny: {}}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
blocks:
  layer:
    inputs: {x: [B, n, d_model]}
    nodes:
      ln: {op: norm}
      attn: {op: attention, heads: heads, causal: true}
      res: {op: residual, in: [x, attn]}
      ln2: {op: norm}
      up: {op: linear, out: 2 * d_model}
      act: {op: gelu}
      down: {op: linear, out: d_model}
      res2: {op: residual, in: [res, down]}
    outputs: {x: res2}
nodes:
  tok: {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  blocks: {op: layer, repeat: layers, share: 2}
  ln_f: {op: norm}
  head: {op: linear, out: vocab}
outputs: {logits: head}
"""


@pytest.mark.parametrize("mode", ["fsdp", "tp"])
def test_a_shared_layer_trains_sharded_as_in_one_process(mode, tmp_path):
    """`share`: FSDP keeps the shared repetitions in the root unit, tensor parallelism re-links them; the
    parameters are held once (rank 0's count equals summary's) and training equals one process."""
    path = tmp_path / "shared.yaml"
    path.write_text(SHARED)
    r = torchrun(2, str(path), mode)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "worst difference" in r.stdout


@pytest.mark.parametrize("name,layout,nproc,reload", [
    ("gpt2", "fsdp+ac", 2, []),
    pytest.param("llama", "2d", 4, [("tp", 2)], marks=pytest.mark.slow),
])
def test_checkpoint_saved_sharded_loads_at_another_world_size(name, layout, nproc, reload, tmp_path):
    """Saved at `nproc` ranks as `layout` (after one step, so weights and optimizer state are not the
    init's); loaded in this process unsharded and at each `reload` layout: the same logits before and after
    one more AdamW step. The single-file exports of that run hold the same model."""
    import dist_worker
    from safetensors.torch import load_file
    from graphformer.weights.maps import read_state_dict
    from graphformer.backends.torch.parallel import load_checkpoint
    r = torchrun(nproc, name, layout, "save", str(tmp_path))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    want = torch.load(tmp_path / "expected.pt")
    spec = graphformer.load(SPECS / f"{name}.yaml", preset="tiny")
    ids = dist_worker.batch(spec, 1)

    model = graphformer.build(spec, seed=1).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    load_checkpoint(tmp_path / "dcp", model, opt)
    worst = dist_worker.compare(dist_worker.probe(model, opt, ids, ids), want)
    print(f"{name} saved as {layout} x{nproc}, loaded in one process: worst difference {worst:.2e}")
    assert worst <= 5e-5

    exported = graphformer.build(spec, seed=1).eval()
    exported.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    via_hf = graphformer.load_weights(graphformer.build(spec, seed=1).eval(),
                                      read_state_dict(str(tmp_path / "hf.safetensors")), "hf")
    with torch.no_grad():
        for what, m in (("spec names", exported), ("hf names", via_hf)):
            worst = (m(tokens=ids)["logits"] - want["before"]).abs().max().item()
            print(f"{name} exported from {layout} x{nproc} ({what}): worst difference {worst:.2e}")
            assert worst <= 1e-5

    for other, n in reload:
        r = torchrun(n, name, other, "load", str(tmp_path))
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        print(r.stdout.strip())


@pytest.mark.slow
def test_example_trains_saves_resumes_at_another_world_size_and_exports(tmp_path):
    args = [str(SPECS / "llama.yaml"), "--preset", "tiny", "--batch", "4", "--seq", "8", "--ckpt", str(tmp_path)]
    r = torchrun(2, *args, "--steps", "2", "--save-every", "1", "--export", str(tmp_path / "hf.safetensors"),
                 "--export-map", "hf", script=ROOT / "examples" / "train.py")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "step 2/2" in r.stdout and (tmp_path / "step-1" / ".metadata").is_file()
    r = torchrun(1, *args, "--steps", "3", script=ROOT / "examples" / "train.py")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert f"resumed from {tmp_path} at step 2" in r.stdout and "step 3/3" in r.stdout
    from graphformer.weights.maps import read_state_dict
    spec = graphformer.load(SPECS / "llama.yaml", preset="tiny")
    graphformer.load_weights(graphformer.build(spec), read_state_dict(str(tmp_path / "hf.safetensors")), "hf")


def test_plan_without_building():
    spec = graphformer.load(SPECS / "llama.yaml", preset="tiny")
    plan = {s.module: s.style for s in graphformer.plan(spec, tp=2)}
    assert plan["blocks.0.attn.q"] == plan["blocks.0.mlp.gate"] == plan["blocks.0.mlp.up"] == "colwise"
    assert plan["blocks.1.attn.o"] == plan["blocks.1.mlp.down"] == "rowwise"
    assert plan["tok"] == plan["lm_head"] == "vocab"
    gpt2 = {s.module: s for s in graphformer.plan(graphformer.load(SPECS / "gpt2.yaml", preset="tiny"), tp=2)}
    assert gpt2["tok"].style == gpt2["lm_head"].style == "replicate"      # a tied table stays with its head
    assert "tied" in gpt2["tok"].why and "tied" in gpt2["lm_head"].why
    with pytest.raises(UsageError, match="heads = 6 does not divide by tp = 4"):
        graphformer.plan(spec, tp=4)
    with pytest.raises(UsageError, match="kv_heads = 2 does not divide by tp = 3"):
        graphformer.plan(spec, tp=3)
