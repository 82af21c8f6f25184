"""`summary`'s planning figures against what torch actually does: the activation estimate against the bytes
a real training forward saves for backward, training FLOPs against torch's FlopCounterMode, and the
exact byte counts of weights, gradients and optimizer state against real optimizers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli
import graphformer
from graphformer.analysis.budget import budget, kv_cache_per_token

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"


def test_summary_json_carries_the_documented_keys(capsys):
    assert cli.main(["summary", str(SPECS / "llama.yaml"), "--preset", "tiny", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("params", "flops", "flops_per_token", "train_flops", "active_params", "embedding_params"):
        assert key in doc, key
    for key in ("weights", "grads", "optimizer", "activations", "activations_checkpointed", "kv_cache_per_token",
                "inference_peak"):
        assert key in doc["memory"], key
    assert doc["memory"]["weights"] == 4 * doc["params"]


def test_depth_rolls_repetitions_up(capsys):
    argv = ["summary", str(SPECS / "gpt2.yaml"), "--set", "layers=96", "--depth", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "blocks × 96" in out and "blocks.95" not in out
    body = [line for line in out.splitlines() if line and not line.startswith(("-", "node", " ", "at "))]
    assert len(body) < 12   # one row per top-level node, not ~1,000
    assert cli.main(argv[:-1] + ["2"]) == 0
    assert "blocks.attn × 96" in capsys.readouterr().out


def test_kv_cache_counts_kv_heads_not_heads():
    spec = graphformer.load(SPECS / "llama.yaml", preset="llama3-8b")
    # 32 layers × 2 (k, v) × 8 kv heads × 128 × 2 bytes (bf16) = 128 KiB per token
    assert kv_cache_per_token(spec.ir, 2) == 32 * 2 * 8 * 128 * 2


@pytest.mark.parametrize("name,decodes", [("clip-vit-b32", False), ("bert-base", False), ("gpt2", True),
                                           ("whisper-base", True)])
def test_kv_cache_only_where_the_graph_decodes(name, decodes):
    """CLIP's text tower is causal but pools one position: generation refuses it, and nothing is cached."""
    spec = graphformer.load(SPECS / f"{name}.yaml")
    assert (kv_cache_per_token(spec.ir, 4) > 0) == decodes


def test_moe_active_params():
    spec = graphformer.load(SPECS / "mixtral-8x7b.yaml")
    b = budget(spec.ir, spec.ir.resolve_dims({}))
    assert b.params == 46_702_792_704
    assert b.active_params == 12_879_925_248   # Mixtral's published 12.9B active


torch = pytest.importorskip("torch")


def saved_for_backward(spec, inputs) -> int:
    """Bytes autograd saves in a training forward: each tensor once (by data pointer), parameters excluded."""
    model = graphformer.build(spec, seed=0).train()
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen.setdefault(t.data_ptr(), t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs)
    return sum(seen.values())


@pytest.mark.parametrize("name", ["gpt2", "llama", "mixtral-8x7b", "phi-2", "bert-base", "vit-b16",
                                  "clip-vit-b32"])
def test_activation_estimate_within_ten_percent_of_what_autograd_saves(name):
    spec = graphformer.load(SPECS / f"{name}.yaml", preset="tiny")
    dims = {k: v for k, v in {"B": 2, "n": 16}.items() if k in spec.dims}
    inputs = graphformer.example_inputs(spec, dims=dims)
    if "mask" in inputs and spec.ir.node(spec.ir.inputs["mask"]).meta.get("optional"):
        del inputs["mask"]   # the estimate assumes no padding mask on optional masks
    got = saved_for_backward(spec, inputs)
    est = budget(spec.ir, spec.ir.resolve_dims(dims)).memory["activations"]
    assert abs(est - got) <= 0.1 * got, f"{name}: estimate {est:,} vs saved {got:,} ({est / got:.3f})"


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_training_flops_of_the_matmuls_equal_flop_counter(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    spec = graphformer.load(SPECS / f"{name}.yaml", preset="tiny")
    model = graphformer.build(spec, seed=0)
    inputs = graphformer.example_inputs(spec, dims={"B": 2, "n": 16})
    inputs.pop("mask", None) if name == "llama" else None
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(**inputs)["logits"].sum().backward()
    from graphformer.ops import REGISTRY
    from graphformer.analysis.summary import rows
    dims = spec.ir.resolve_dims({"B": 2, "n": 16})
    matmul = sum(r.flops.evaluate(dims) for r in rows(spec.ir) if REGISTRY[r.op].matmul)
    assert counter.get_total_flops() == 3 * matmul


def test_weights_grads_and_adamw_state_equal_real_bytes():
    spec = graphformer.load(SPECS / "llama.yaml", preset="tiny")
    model = graphformer.build(spec, seed=0)
    opt = torch.optim.AdamW(model.parameters())
    model(**graphformer.example_inputs(spec))["logits"].sum().backward()
    opt.step()
    b = budget(spec.ir, spec.ir.resolve_dims({}))
    real = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    assert b.memory["weights"] == real(model.parameters())
    assert b.memory["grads"] == real(p.grad for p in model.parameters())
    states = [v for s in opt.state.values() for k, v in s.items() if k != "step"]
    assert b.memory["optimizer"] == real(states)


def test_mesh_gives_per_device_bytes_and_the_plan(capsys):
    argv = ["summary", str(SPECS / "llama.yaml"), "--preset", "llama3-8b", "--mesh", "dp=8,tp=4", "--format", "json"]
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    dev = doc["per_device"]
    assert (dev["dp"], dev["tp"]) == (8, 4)
    # every projection, the token table and the head split 4 ways, then everything 8 ways (norms: 8 ways)
    assert doc["params"] / 32 < dev["params"] < doc["params"] / 8
    assert {p["style"] for p in dev["plan"]} == {"colwise", "rowwise", "vocab"}
    assert cli.main(argv[:5] + ["dp=2,tp=5"]) == 2   # 32 heads don't split 5 ways
    assert "does not divide by tp = 5" in capsys.readouterr().err
    # per-rank parameters of a really sharded model equal this figure: tests/dist_worker.py checks it
