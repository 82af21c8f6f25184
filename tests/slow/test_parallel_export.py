"""Checkpoints and single-file exports of a model in one process (tests/slow/test_parallel.py does the sharded
runs): `to_reference` inverts every bundled weight map; an `hf` export loads into transformers and into
graphformer.from_pretrained with the same outputs; DCP checkpoints round-trip and refuse what doesn't fit."""
from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import pytest

import graphformer
from graphformer.weights.maps import WeightMapError, convert_state_dict, to_reference

np = pytest.importorskip("numpy")
ROOT = Path(__file__).resolve().parents[2]
MAPPED = [(Path(f).stem, m) for f in sorted(glob.glob(str(ROOT / "specs" / "*.yaml")))
          for m in graphformer.load(f).ir.weight_maps]


@pytest.mark.parametrize("name,mapping", MAPPED, ids=[f"{n}-{m}" for n, m in MAPPED])
def test_to_reference_inverts_the_map(name, mapping):
    try:
        spec = graphformer.load(ROOT / "specs" / f"{name}.yaml", preset="tiny")
    except graphformer.UsageError:
        pytest.skip(f"{name} has no tiny preset (random weights at full size would be too big)")
    rng = np.random.default_rng(0)
    weights = {k: rng.standard_normal(tuple(s)).astype(np.float32) for k, s in spec.ir.param_shapes().items()}
    back = convert_state_dict(spec, to_reference(spec, weights, mapping), mapping)
    assert list(back) == list(weights)
    assert all(np.array_equal(back[k], weights[k]) for k in weights)


def test_to_reference_names_what_it_cannot_make():
    spec = graphformer.load(ROOT / "specs" / "gpt2.yaml", preset="tiny")
    weights = {k: np.zeros(tuple(s), np.float32) for k, s in spec.ir.param_shapes().items()}
    reference = {"transformer.wte.weight": weights["tok.weight"], "transformer.h.0.extra.weight": np.zeros(3),
                 "transformer.h.5.ln_1.weight": np.zeros(32)}
    with pytest.raises(WeightMapError) as e:
        to_reference(spec, weights, "hf", reference)
    text = str(e.value)
    assert "reference tensor `transformer.h.0.extra.weight` is made by no rule of map `hf`" in text
    assert "reference tensor `transformer.h.5.ln_1.weight` needs spec parameter(s) `blocks.5.ln1.weight`" in text
    assert "spec parameter `pos.weight` is written by no rule of map `hf`" in text


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402

from graphformer.base.errors import UsageError, WeightFileError  # noqa: E402
from graphformer.backends.torch.parallel import export_safetensors, load_checkpoint, save_checkpoint  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))   # the parity tests' configs,
from test_parity_llm import CASES  # noqa: E402                               # also when this tier runs alone

transformers.logging.set_verbosity_error()


def reference_and_ours(case: str):
    """A transformers model and our build of the same config, with *different* random weights."""
    name, preset, sets, cls, cfg_cls, kw = CASES[case]
    torch.manual_seed(0)
    ref = cls(cfg_cls(**kw, attn_implementation="sdpa")).eval()
    spec = graphformer.load(ROOT / "specs" / f"{name}.yaml", preset=preset, overrides=sets)
    return ref, graphformer.build(spec, seed=3).eval()


def logits(model, ids):
    with torch.no_grad():
        out = model(ids) if isinstance(model, transformers.PreTrainedModel) else model(tokens=ids)
    return out.logits if isinstance(model, transformers.PreTrainedModel) else out["logits"]


@pytest.mark.parametrize("case", ["llama", "llama-tied", "mixtral", "qwen2", "phi"])
def test_hf_export_loads_into_transformers(case, tmp_path):
    ref, model = reference_and_ours(case)
    path = tmp_path / "model.safetensors"
    export_safetensors(model, path, mapping="hf", reference=ref.state_dict())
    ref.load_state_dict(load_file(path), strict=True)
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    assert (logits(ref, ids) - logits(model, ids)).abs().max().item() <= 1e-5


def test_hf_export_reads_back_with_from_pretrained_and_build(tmp_path):
    """A save_pretrained-style directory: the reference's config.json beside our export."""
    ref, model = reference_and_ours("llama")
    export_safetensors(model, tmp_path / "model.safetensors", mapping="hf", reference=ref.state_dict())
    ref.config.to_json_file(tmp_path / "config.json")
    loaded = graphformer.from_pretrained(tmp_path)
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(loaded, ids), logits(model, ids))
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "build", str(ROOT / "specs" / "llama.yaml"),
                        "--preset", "tiny",
                        "--weights", str(tmp_path / "model.safetensors"), "--weights-map", "hf"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "loaded" in r.stdout


def test_export_refusals(tmp_path):
    model = graphformer.build(graphformer.load(ROOT / "specs" / "gpt2.yaml", preset="tiny"))
    with pytest.raises(UsageError, match="cannot write"):
        export_safetensors(model, tmp_path / "no-such-dir" / "model.safetensors")
    with pytest.raises(WeightMapError, match="no weight map `nope`"):
        export_safetensors(model, tmp_path / "model.safetensors", mapping="nope")
    assert not (tmp_path / "model.safetensors").exists()


def test_checkpoint_round_trip_in_one_process(tmp_path):
    spec = graphformer.load(ROOT / "specs" / "gpt2.yaml", preset="tiny")
    saved, fresh = graphformer.build(spec, seed=0).eval(), graphformer.build(spec, seed=1).eval()
    ids = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(saved.parameters(), lr=1e-3)
    saved(tokens=ids)["logits"].sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ckpt", saved, opt)
    opt_fresh = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    load_checkpoint(tmp_path / "ckpt", fresh, opt_fresh)
    assert torch.equal(logits(fresh, ids), logits(saved, ids))
    assert opt_fresh.state_dict()["state"][0]["step"].item() == 1
    load_checkpoint(tmp_path / "ckpt", graphformer.build(spec, seed=2))   # the model alone, optimizer left


def test_checkpoint_refusals_are_weight_file_errors(tmp_path):
    gpt2 = graphformer.build(graphformer.load(ROOT / "specs" / "gpt2.yaml", preset="tiny"))
    with pytest.raises(WeightFileError, match="holds no torch.distributed.checkpoint"):
        load_checkpoint(tmp_path, gpt2)
    save_checkpoint(tmp_path / "ckpt", gpt2)
    llama = graphformer.build(graphformer.load(ROOT / "specs" / "llama.yaml", preset="tiny"))
    with pytest.raises(WeightFileError, match=r"cannot load checkpoint .* into `llama`: .*tok\.weight"):
        load_checkpoint(tmp_path / "ckpt", llama)
