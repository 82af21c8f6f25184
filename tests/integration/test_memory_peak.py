"""Loading and writing weights stream one tensor at a time: bounded by counts, not by a clock.

The ≥ 1 GB figures are bench/bench_memory.py's (docs/performance.md); here a small GPT-2 checkpoint
(the fused, transposed q/k/v split of its `hf` map) is loaded from safetensors and the test counts the
bytes of the file mapped at once and the bytes numpy allocates while loading: each at most a small
multiple of the largest tensor, never the checkpoint. The loaded model equals the one the weights came
from bit for bit.
"""
from __future__ import annotations

import json
import mmap
import tracemalloc
import weakref

import pytest

torch = pytest.importorskip("torch")

import graphformer  # noqa: E402
from graphformer.backends.torch.weights import load_weights, write_safetensors  # noqa: E402
from graphformer.base.errors import WeightFileError, WeightMapError  # noqa: E402
from graphformer.weights import checkpoint  # noqa: E402
from graphformer.weights.maps import read_state_dict, to_reference  # noqa: E402

GPT2 = "specs/gpt2.yaml"
SIZES = {"vocab": 512, "max_len": 64, "d_model": 128, "heads": 4, "layers": 3}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The spec, a model with seeded weights, and its weights under the reference's names in one file
    and in two shards (with an index), as save_pretrained writes them."""
    spec = graphformer.load(GPT2, None, SIZES)
    model = graphformer.build(spec, seed=1)
    ref = to_reference(spec, model.state_dict(), "hf")
    root = tmp_path_factory.mktemp("ckpt")
    single, sharded = root / "single", root / "sharded"
    single.mkdir()
    sharded.mkdir()
    with open(single / "model.safetensors", "wb") as fh:
        write_safetensors(ref, fh, {"format": "pt"})
    names = list(ref)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in halves.items():
        with open(sharded / file, "wb") as fh:
            write_safetensors({k: ref[k] for k in keys}, fh, {"format": "pt"})
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: f for f, keys in halves.items() for k in keys}}))
    largest = max(t.numel() * t.element_size() for t in ref.values())
    total = sum(t.numel() * t.element_size() for t in ref.values())
    return spec, model, single, sharded, largest, total


def _equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_a_streamed_load_gives_the_model_bit_for_bit(source, layout):
    spec, model, single, sharded, _, _ = source
    fresh = graphformer.build(spec, seed=0)
    assert not _equal(fresh, model)
    load_weights(fresh, read_state_dict(str(single if layout == "single" else sharded)), "hf", spec)
    assert _equal(fresh, model)


def test_at_most_two_tensors_of_the_file_are_mapped_at_once(source, monkeypatch):
    """Each tensor is mapped when the map takes it and unmapped once it is copied; the next one may be
    mapped a moment before the previous is dropped, never more."""
    spec, model, single, _, largest, total = source
    live, peak = [0], [0]
    real = checkpoint._bytes

    def counted(fd, start, stop):
        buf = real(fd, start, stop)
        size = len(buf)
        live[0] += size
        peak[0] = max(peak[0], live[0])
        weakref.finalize(buf, lambda: live.__setitem__(0, live[0] - size))
        return buf
    monkeypatch.setattr(checkpoint, "_bytes", counted)
    fresh = graphformer.build(spec, seed=0)
    load_weights(fresh, read_state_dict(str(single)), "hf", spec)
    assert _equal(fresh, model)
    assert live[0] == 0, "a mapped tensor outlived the load"
    assert 0 < peak[0] <= 2 * (largest + mmap.ALLOCATIONGRANULARITY) < total / 2, (peak[0], largest, total)


def test_loading_allocates_about_one_rule_not_the_checkpoint(source):
    """numpy's allocations (traced by tracemalloc) while loading: the copies a splitting rule makes
    (GPT-2's fused q/k/v: transposed, then three parts), never a copy of the checkpoint."""
    spec, model, single, _, largest, total = source
    fresh = graphformer.build(spec, seed=0)
    state = read_state_dict(str(single))
    tracemalloc.start()
    try:
        load_weights(fresh, state, "hf", spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _equal(fresh, model)
    assert peak <= 3 * largest < total / 2, (peak, largest, total)


def test_a_map_problem_leaves_the_model_untouched(source, tmp_path):
    """The map runs on the tensors' shapes first: a missing tensor is reported before anything is copied."""
    spec, model, single, _, _, _ = source
    state = dict(read_state_dict(str(single)))
    state.pop("h.2.mlp.c_proj.weight")
    fresh = graphformer.build(spec, seed=0)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(WeightMapError, match="h.2.mlp.c_proj.weight"):
        load_weights(fresh, state, "hf", spec)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_a_low_precision_build_casts_each_tensor_after_its_init():
    spec = graphformer.load(GPT2, "tiny")
    direct = graphformer.build(spec, seed=3, dtype="bfloat16")
    cast = graphformer.build(spec, seed=3).to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in direct.parameters())
    assert _equal(direct, cast)


def _file(path, header: dict, data: bytes = b"") -> str:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return str(path)


@pytest.mark.parametrize("entry, why", [
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}, "outside the file"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, "8 bytes for shape"),
    ({"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}, "does not read"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}, "no valid shape"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "outside the file"),
    ("F32", "not described by an object"),
])
def test_a_header_that_does_not_fit_its_file_is_refused(tmp_path, entry, why):
    with pytest.raises(WeightFileError, match=why):
        read_state_dict(_file(tmp_path / "w.safetensors", {"w": entry}, bytes(8)))


def test_tensors_are_read_in_every_dtype_the_writer_writes(tmp_path):
    tensors = {"f": torch.arange(6, dtype=torch.float32).reshape(2, 3), "h": torch.ones(4, dtype=torch.float16),
               "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16), "i": torch.arange(3), "e": torch.zeros(0, 2),
               "c": torch.tensor([1 + 2j], dtype=torch.complex64), "u": torch.tensor([True, False])}
    with open(tmp_path / "w.safetensors", "wb") as fh:
        write_safetensors(tensors, fh, {})
    read = read_state_dict(str(tmp_path / "w.safetensors"))
    assert sorted(read) == sorted(tensors)
    for k, t in tensors.items():
        got = torch.as_tensor(read[k])
        assert got.dtype == t.dtype and torch.equal(got, t), k


def test_a_caller_keeping_every_tensor_gets_them_read_past_the_map_limit(source, monkeypatch):
    """Each live map holds a file descriptor: past MAX_LIVE_MAPS, tensors are read into memory instead."""
    spec, model, single, _, _, _ = source
    monkeypatch.setattr(checkpoint, "MAX_LIVE_MAPS", 2)
    kept = dict(read_state_dict(str(single)))   # every tensor alive at once
    assert checkpoint._live[0] <= 2 < len(kept)
    fresh = graphformer.build(spec, seed=0)
    load_weights(fresh, kept, "hf", spec)
    assert _equal(fresh, model)
