"""A torch.distributed.checkpoint directory is data: `load_checkpoint` (and `examples/train.py`, resuming)
refuses one whose `.metadata` or whose non-tensor entries would run code when unpickled, or whose metadata
points outside the directory, before anything runs; a genuine checkpoint still loads (the multi-process
ones: tests/slow/test_parallel.py)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import graphformer  # noqa: E402
from graphformer.base.errors import WeightFileError  # noqa: E402
from graphformer.backends.torch.parallel import load_checkpoint, read_metadata, save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class Marker:
    """Unpickled, it creates the file `path`: the proof that a pickle ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def trained(seed=0):
    spec = graphformer.load(ROOT / "specs" / "gpt2.yaml", preset="tiny")
    model = graphformer.build(spec, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(tokens=torch.arange(6).view(1, 6))["logits"].sum().backward()
    opt.step()
    return spec, model, opt


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A checkpoint of tiny GPT-2 and AdamW, written by save_checkpoint in one process."""
    path = tmp_path_factory.mktemp("ckpt") / "step-1"
    _, model, opt = trained()
    save_checkpoint(path, model, opt)
    return path, model, opt


def copy_of(genuine, tmp_path) -> Path:
    out = tmp_path / "copy"
    out.mkdir()
    for f in genuine.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


def test_genuine_checkpoint_round_trips(genuine):
    path, saved, saved_opt = genuine
    spec, model, opt = trained(seed=1)
    load_checkpoint(path, model, opt)
    for (k, a), b in zip(saved.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    assert opt.state_dict()["param_groups"] == saved_opt.state_dict()["param_groups"]
    first = next(iter(saved_opt.state.values()))
    assert torch.equal(next(iter(opt.state.values()))["exp_avg"], first["exp_avg"])


def test_hostile_metadata_is_refused_before_it_runs(genuine, tmp_path):
    path = copy_of(genuine[0], tmp_path)
    marker = tmp_path / "ran"
    (path / ".metadata").write_bytes(pickle.dumps(Marker(marker)))
    _, model, opt = trained()
    with pytest.raises(WeightFileError, match="names `(io|builtins).open`.*could run code"):
        load_checkpoint(path, model, opt)
    assert not marker.exists()


def test_hostile_optimizer_entry_is_refused_before_it_runs(tmp_path):
    """DCP's planner unpickles non-tensor entries with torch.load(weights_only=False): not ours."""
    marker = tmp_path / "ran"
    _, model, opt = trained()
    opt.param_groups[0]["eps"] = Marker(marker)
    save_checkpoint(tmp_path / "c", model, opt)
    assert not marker.exists()
    _, model, opt = trained()
    with pytest.raises(WeightFileError, match="optim.param_groups.0.eps.*could run code"):
        load_checkpoint(tmp_path / "c", model, opt)
    assert not marker.exists()


def rewrite_metadata(path: Path, change) -> None:
    with open(path / ".metadata", "rb") as f:
        meta = pickle.load(f)   # our own genuine file: trusted here
    change(meta)
    (path / ".metadata").write_bytes(pickle.dumps(meta))


@pytest.mark.parametrize("name,why", [("../outside.distcp", "not a file in the directory"),
                                      ("/etc/passwd", "not a file in the directory"),
                                      ("missing.distcp", "cannot be read")])
def test_shard_outside_the_directory_is_refused(genuine, tmp_path, name, why):
    path = copy_of(genuine[0], tmp_path)

    def elsewhere(meta):
        for info in meta.storage_data.values():
            info.relative_path = name
    rewrite_metadata(path, elsewhere)
    with pytest.raises(WeightFileError, match=why):
        read_metadata(str(path))


def test_malformed_and_foreign_metadata_are_errors(genuine, tmp_path):
    path = copy_of(genuine[0], tmp_path)
    rewrite_metadata(path, lambda meta: setattr(meta, "state_dict_metadata", ["model.tok.weight"]))
    with pytest.raises(WeightFileError, match="malformed: state_dict_metadata"):
        read_metadata(str(path))
    for data in (b"", b"not a pickle", pickle.dumps({"a": 1})[:-3], pickle.dumps(torch.Size([2]))):
        (path / ".metadata").write_bytes(data)
        with pytest.raises(WeightFileError, match="refused"):
            read_metadata(str(path))
    os.unlink(path / ".metadata")
    os.mkfifo(path / ".metadata")   # must not hang
    with pytest.raises(WeightFileError, match="not a regular file"):
        read_metadata(str(path))
    with pytest.raises(WeightFileError, match="no `.metadata`"):
        read_metadata(str(tmp_path / "nowhere"))


def test_shared_references_are_not_multiplied_into_a_message(genuine, tmp_path):
    """A 1.5 kB pickle of lists shared 100 ways, 6 deep (a repr of 10^14 characters) where torch's own
    error messages would format it: refused by type, before anything formats it."""
    from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING, TensorProperties
    big = ["x" * 100]
    for _ in range(6):
        big = [big] * 100

    class Encoding:
        def __reduce__(self):
            return (_MEM_FORMAT_ENCODING, (big,))

    class Properties:
        def __reduce__(self):
            return (TensorProperties, (), (torch.float32, torch.strided, False, big, False))

    path = copy_of(genuine[0], tmp_path)
    for bomb, what in ((Encoding(), "a memory format"), (Properties(), "tensor properties")):
        (path / ".metadata").write_bytes(pickle.dumps(bomb))
        assert len((path / ".metadata").read_bytes()) < 2000
        with pytest.raises(WeightFileError, match=f"malformed: {what}"):
            read_metadata(str(path))


@pytest.mark.slow
def test_train_example_refuses_a_hostile_checkpoint_with_exit_2(genuine, tmp_path):
    ckpt = tmp_path / "run"     # as train.py lays it out: step-1/ and a file `step` naming it
    ckpt.mkdir()
    copy_of(genuine[0], tmp_path).rename(ckpt / "step-1")
    (ckpt / "step").write_text("1")
    marker = tmp_path / "ran"
    (ckpt / "step-1" / ".metadata").write_bytes(pickle.dumps(Marker(marker)))
    # one process without torchrun (its own exit status would hide the worker's): the env:// rendezvous
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    cmd = [sys.executable, str(ROOT / "examples" / "train.py"), str(ROOT / "specs" / "gpt2.yaml"), "--preset",
           "tiny", "--steps", "2", "--ckpt", str(ckpt)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "train.py: error: checkpoint" in r.stderr and "could run code" in r.stderr
    assert not marker.exists()
    (ckpt / "step").write_text("1; rm -rf /")
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "MASTER_PORT": str(free_port())},
                       cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "not a step number" in r.stderr, r.stderr[-2000:]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_from_pretrained_refuses_the_meta_device(tmp_path):
    """Weights can't be loaded onto meta (it holds no values): refused, not silently dropped."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_head=4, n_layer=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    for device in ("meta", torch.device("meta")):
        with pytest.raises(graphformer.UsageError, match="meta device holds none"):
            graphformer.from_pretrained(tmp_path, device=device)
    with pytest.raises(graphformer.UsageError, match="meta device holds none"):   # before reading anything
        graphformer.from_pretrained(tmp_path / "missing", device="meta")
    model = graphformer.from_pretrained(tmp_path)
    assert model.spec.ir.weight_maps and not model.training   # the spec reached from the model, in eval mode
    assert next(model.parameters()).device.type == "cpu"
