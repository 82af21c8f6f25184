"""Every output goes through graphformer/base/fileio.py's atomic path (docs/robustness.md, sections 1 and 2):
the mode of new and overwritten files for every writer, a full disk (simulated, and a real refusal by
the kernel), concurrent exports of one ONNX path with external data; and the range of a weight map's
`scale` (GF180) with the refusal of non-finite scaled weights at load."""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

import cli
import graphformer as gf
from graphformer.base import fileio

ROOT = Path(__file__).resolve().parents[2]

SPEC = """\
graphformer: 1
name: outs
params: {d: 4}
dims: {B: 2, n: 3}
inputs:
  x: {shape: [B, n, d]}
nodes:
  up: {op: linear, out: 8}
  ln: {op: norm}
outputs: {y: ln}
weight_maps:
  ref:
    rules:
      - {from: proj.w, to: up.weight, scale: SCALE}
      - {from: proj.b, to: up.bias}
      - {from: norm.g, to: ln.weight}
      - {from: norm.b, to: ln.bias}
"""


def spec_file(directory: Path, scale: str = "2") -> Path:
    path = directory / "spec.yaml"
    path.write_text(SPEC.replace("SCALE", scale))
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def weights_of(spec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(tuple(s)).astype(np.float32) for k, s in spec.ir.param_shapes().items()}


@pytest.fixture
def umask027():
    old = os.umask(0o027)
    yield
    os.umask(old)


# what each command writes with -o (build and export need torch for the seeded init)
WRITERS = {"build": ("out.safetensors", True), "export": ("out.onnx", True), "draw": ("out.dot", False),
           "schema": ("out.json", False)}


def command(writer: str, spec: Path, out: Path) -> list:
    return ["schema", "-o", out] if writer == "schema" else [writer, spec, "-o", out]


# ---------------------------------------------------------------- 1. modes

@pytest.mark.parametrize("writer", WRITERS)
def test_new_outputs_follow_the_umask_and_existing_ones_keep_their_mode(tmp_path, capsys, umask027, writer):
    name, needs_torch = WRITERS[writer]
    if needs_torch:
        pytest.importorskip("torch")
    spec = spec_file(tmp_path)
    new = tmp_path / name
    assert run(capsys, *command(writer, spec, new))[0] == 0
    assert mode(new) == 0o640                       # 0666 & ~umask, not the 0600 of a private temp file
    kept = tmp_path / ("kept" + new.suffix)
    kept.write_bytes(b"old")
    kept.chmod(0o604)
    assert run(capsys, *command(writer, spec, kept))[0] == 0
    assert mode(kept) == 0o604 and kept.read_bytes() != b"old"
    assert names(tmp_path) == sorted(["spec.yaml", new.name, kept.name])  # no temp file left


def test_build_output_is_the_models_state_dict(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from safetensors import safe_open
    spec = spec_file(tmp_path)
    out = tmp_path / "w.safetensors"
    assert run(capsys, "build", spec, "-o", out)[0] == 0
    want = gf.build(str(spec), seed=0).state_dict()
    with safe_open(str(out), "pt") as f:        # read by safetensors' own reader
        assert f.metadata() == {"graphformer_spec": "outs", "format": "pt"}
        assert sorted(f.keys()) == sorted(want)
        assert all(torch.equal(f.get_tensor(k), want[k]) for k in want)


def test_the_safetensors_writer_matches_safetensors_for_every_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    from graphformer.backends.torch.weights import write_safetensors
    tensors = {"f32": torch.randn(3, 4), "i64": torch.arange(5), "bf16": torch.randn(2, dtype=torch.bfloat16),
               "bool": torch.tensor(True), "empty": torch.zeros(0, 3), "f16": torch.randn(()).half(),
               "u8": torch.arange(3, dtype=torch.uint8), "view": torch.randn(4, 4).t()}
    tensors["again"] = tensors["f32"]          # shared memory: safetensors' save_file refuses it; we copy
    with fileio.atomic_output(tmp_path / "t.safetensors") as fh:
        write_safetensors(tensors, fh, {})
    back = load_file(str(tmp_path / "t.safetensors"))
    assert sorted(back) == sorted(tensors)
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in tensors.items())


def test_parallel_export_safetensors_keeps_the_documented_mode(tmp_path, umask027):
    pytest.importorskip("torch")
    from graphformer.backends.torch.parallel import export_safetensors
    model = gf.build(str(spec_file(tmp_path)))
    export_safetensors(model, tmp_path / "new.safetensors")
    kept = tmp_path / "kept.safetensors"
    kept.write_bytes(b"old")
    kept.chmod(0o604)
    export_safetensors(model, kept, mapping="ref")
    assert mode(tmp_path / "new.safetensors") == 0o640 and mode(kept) == 0o604
    assert names(tmp_path) == ["kept.safetensors", "new.safetensors", "spec.yaml"]


def test_an_external_data_pair_follows_the_umask_then_keeps_the_models_mode(tmp_path, umask027):
    pytest.importorskip("onnx")
    from graphformer.backends.onnx import export_onnx
    spec = gf.load(spec_file(tmp_path))
    path = tmp_path / "m.onnx"
    first = export_onnx(spec, weights_of(spec, 1), path, external_data_threshold=0)
    assert mode(path) == mode(first.data_path) == 0o640
    path.chmod(0o604)
    second = export_onnx(spec, weights_of(spec, 2), path, external_data_threshold=0)
    assert mode(path) == mode(second.data_path) == 0o604     # the new data file takes its model's mode
    assert names(tmp_path) == sorted(["m.onnx", os.path.basename(second.data_path), "spec.yaml"])


def test_an_inline_export_removes_the_data_file_of_an_external_one(tmp_path):
    pytest.importorskip("onnx")
    from graphformer.backends.onnx import export_onnx
    spec = gf.load(spec_file(tmp_path))
    export_onnx(spec, weights_of(spec, 1), tmp_path / "m.onnx", external_data_threshold=0)
    export_onnx(spec, weights_of(spec, 1), tmp_path / "m.onnx")
    assert names(tmp_path) == ["m.onnx", "spec.yaml"]


# ---------------------------------------------------------------- 1. a full disk

class FullDisk:
    """A file object on a disk that has `room` more bytes for it: ENOSPC past them."""
    rooms: list[int] = []   # the room of each file opened next, in order; none for files past the list

    def __init__(self, fh):
        self.fh = fh
        self.room = FullDisk.rooms.pop(0) if FullDisk.rooms else 0

    def write(self, data):
        n = memoryview(data).nbytes
        if n > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self.fh.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def __getattr__(self, name):
        return getattr(self.fh, name)


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk(100)`: the next file written has room for 100 bytes; `full_disk(10**9, 0)`: the
    first has room, the second none."""
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **kw: FullDisk(real(fd, *a, **kw)))

    def rooms(*n: int) -> None:
        FullDisk.rooms = list(n)
    return rooms


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_is_exit_2_and_leaves_no_new_file(tmp_path, capsys, full_disk, writer, existing):
    name, needs_torch = WRITERS[writer]
    if needs_torch:
        pytest.importorskip("torch")
    spec = spec_file(tmp_path)
    out = tmp_path / name
    if existing:
        out.write_bytes(b"old")
    before = names(tmp_path)
    full_disk(100)  # a little room: the failure comes mid-file
    rc, _, err = run(capsys, *command(writer, spec, out))
    assert rc == 2 and f"cannot write `{out}`: no space left on device" in err
    assert names(tmp_path) == before and (not existing or out.read_bytes() == b"old")


@pytest.mark.parametrize("rooms", [(100,), (10**9, 100)], ids=["in-the-data", "in-the-model"])
def test_a_full_disk_during_an_external_data_export_keeps_the_old_pair(tmp_path, full_disk, rooms):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    from graphformer.backends.onnx import export_onnx
    spec = gf.load(spec_file(tmp_path))
    path = tmp_path / "m.onnx"
    full_disk(10**9, 10**9)
    export_onnx(spec, weights_of(spec, 1), path, external_data_threshold=0)
    before = names(tmp_path)
    full_disk(*rooms)  # the data file is written first, then the model file
    with pytest.raises(gf.UsageError, match="no space left on device"):
        export_onnx(spec, weights_of(spec, 2), path, external_data_threshold=0)
    assert names(tmp_path) == before  # neither a temp file nor the new data file
    loaded = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    assert all(np.array_equal(loaded[k], v) for k, v in weights_of(spec, 1).items())


def test_a_write_the_kernel_refuses_is_exit_2_with_its_reason(tmp_path, capsys):
    """Not a patched write: RLIMIT_FSIZE makes the kernel refuse (EFBIG) whatever writes past 256 bytes."""
    resource = pytest.importorskip("resource")
    pytest.importorskip("torch")
    spec, out = spec_file(tmp_path), tmp_path / "w.safetensors"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the signal kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (256, hard))
    try:
        rc, _, err = run(capsys, "build", spec, "-o", out)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert rc == 2 and f"cannot write `{out}`: file too large" in err
    assert names(tmp_path) == ["spec.yaml"]


# ---------------------------------------------------------------- 2. concurrent exports of one path

ROUNDS = 25


def export_rounds(spec_path: str, out: str, me: int, barrier) -> None:
    """One exporter: ROUNDS exports of `out` with weights of its own, started together with the other."""
    from graphformer.backends.onnx import export_onnx
    spec = gf.load(spec_path)
    barrier.wait()
    for r in range(ROUNDS):
        export_onnx(spec, weights_of(spec, 100 * me + r), out, external_data_threshold=0)


def test_concurrent_exports_of_one_path_leave_one_loadable_pair(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import numpy_helper
    spec_path, out = spec_file(tmp_path), tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    ctx = multiprocessing.get_context("fork")  # two real processes, without paying for the imports again
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=export_rounds, args=(str(spec_path), str(out), me, barrier)) for me in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    files = names(out.parent)
    data = [f for f in files if f.endswith(".data")]
    assert files == sorted(["m.onnx"] + data) and len(data) == 1, files   # one pair, no temp files

    model = onnx.load(str(out))  # resolves the external data
    onnx.checker.check_model(model, full_check=True)
    loaded = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    spec = gf.load(spec_path)
    last = [weights_of(spec, 100 * me + ROUNDS - 1) for me in (0, 1)]  # the last switch: a last round's
    assert any(all(np.array_equal(loaded[k], w[k]) for k in w) for w in last)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.ones((2, 3, 4), np.float32)})[0]
    assert y.shape == (2, 3, 8) and np.isfinite(y).all()


def test_an_export_that_finishes_between_anothers_two_renames_breaks_nothing(tmp_path, monkeypatch):
    """The interleaving the stress test above hopes to hit, forced: export B runs whole while export A has
    renamed its data file but not yet its model. B must not delete A's data file before A's switch."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    from graphformer.backends.onnx import export_onnx
    spec = gf.load(spec_file(tmp_path))
    path = tmp_path / "m.onnx"
    real, other = os.replace, []

    def replace(src, dst):
        real(src, dst)
        if not other:  # A's first rename: its data file
            other.append(threading.Thread(target=export_onnx, args=(spec, weights_of(spec, 2), path),
                                          kwargs={"external_data_threshold": 0}))
            other[0].start()
            other[0].join(timeout=0.5)  # B runs to its end here unless A's directory lock holds it
    monkeypatch.setattr(os, "replace", replace)
    export_onnx(spec, weights_of(spec, 1), path, external_data_threshold=0)
    other[0].join(timeout=60)
    monkeypatch.setattr(os, "replace", real)
    model = onnx.load(str(path))  # resolves the external data: fails if the pair was broken
    loaded = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert any(all(np.array_equal(loaded[k], w[k]) for k in w) for w in (weights_of(spec, 1), weights_of(spec, 2)))
    assert len([f for f in names(tmp_path) if f.endswith(".data")]) == 1


# ---------------------------------------------------------------- weight-map scales

def check_json(capsys, path) -> tuple[int, list[dict]]:
    rc, out, _ = run(capsys, "check", path, "--format", "json")
    return rc, json.loads(out)


@pytest.mark.parametrize("scale,code", [('"1e400"', "GF130"), ('"-1e400"', "GF130"), ('"0"', "GF180"),
                                        ("0.0", "GF180"), ('"1e7"', "GF180"), ('"-1e-7"', "GF180"),
                                        ("1.0e+300", "GF180")])
def test_a_scale_out_of_range_is_gf180_at_the_rule(tmp_path, capsys, scale, code):
    """Finite but out of range: GF180; not finite at all (`1e400` is inf): GF130, the expression's error."""
    rc, diags = check_json(capsys, spec_file(tmp_path, scale))
    assert rc == 1 and [d["code"] for d in diags] == [code]
    line = SPEC.splitlines().index("      - {from: proj.w, to: up.weight, scale: SCALE}") + 1
    assert (diags[0]["line"], diags[0]["col"]) == (line, SPEC.splitlines()[line - 1].index("SCALE") + 1)


@pytest.mark.parametrize("scale", ['"d ** -0.5"', "-1", '"1e6"', '"-1e-6"'])
def test_a_scale_in_range_is_accepted(tmp_path, capsys, scale):
    assert check_json(capsys, spec_file(tmp_path, scale))[0] == 0


def test_scaled_weights_that_overflow_are_refused_at_load(tmp_path):
    from graphformer.weights.maps import WeightMapError, convert_state_dict
    spec = gf.load(spec_file(tmp_path, '"1e3"'))
    ref = {"proj.w": np.full((8, 4), 100, np.float16), "proj.b": np.zeros(8, np.float16),
           "norm.g": np.ones(8, np.float16), "norm.b": np.zeros(8, np.float16)}
    with pytest.raises(WeightMapError, match=r"`proj.w` scaled by 1000 overflows float16: the result is not finite"):
        convert_state_dict(spec, ref, "ref")
    ref["proj.w"] = ref["proj.w"].astype(np.float32)   # fits in float32
    assert np.all(convert_state_dict(spec, ref, "ref")["up.weight"] == 1e5)
    torch = pytest.importorskip("torch")
    with pytest.raises(WeightMapError, match="overflows float16"):
        convert_state_dict(spec, {k: torch.as_tensor(v).half() for k, v in ref.items()}, "ref")
