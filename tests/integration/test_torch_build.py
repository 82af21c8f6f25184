"""The torch backend end to end: every spec builds and passes the shape self-check; structure (paths,
ModuleList blocks, tied weights); example inputs; devices; the build CLI. Single lowerings are in
test_torch_lowerings.py."""
from __future__ import annotations

import copy
import glob
import os
import pickle
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import graphformer as gf  # noqa: E402
from graphformer.backends.torch.plan import split_args  # noqa: E402
from graphformer.backends.torch import LOWERINGS, example_inputs  # noqa: E402
from graphformer.backends.torch.plan import split_args  # noqa: E402
from graphformer.frontend.load import UsageError  # noqa: E402
from graphformer.ops import REGISTRY  # noqa: E402
from graphformer.analysis.summary import param_shapes, total_params  # noqa: E402

import cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def load_tiny(path: str):
    try:
        spec = gf.load(path, "tiny")
    except UsageError as e:
        pytest.skip(f"{os.path.basename(path)}: {e}")
    missing = sorted({n.op for n in spec.ir.nodes() if n.op != "input" and n.op not in LOWERINGS})
    if missing:
        pytest.skip(f"no torch lowering yet for {', '.join(missing)}")
    return spec


def spec_file(tmp_path, text: str, name: str = "s.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ---------------------------------------------------------------- every bundled spec

@pytest.mark.parametrize("path", SPECS, ids=[os.path.basename(p) for p in SPECS])
def test_spec_builds_and_matches_checker(path):
    spec = load_tiny(path)
    model = gf.build(spec, seed=0).eval()
    inputs = example_inputs(spec)
    with torch.inference_mode():
        shapes = model.trace_shapes(**inputs)
        out = model(**inputs)
    for n in spec.ir.nodes():
        want = tuple(d.evaluate(spec.dims) for d in n.shape.shape)
        assert shapes[n.name] == want, f"{n.name}: runtime {shapes[n.name]} vs checker {n.shape}"
    assert list(out) == list(spec.outputs)
    for name, t in spec.outputs.items():
        assert tuple(out[name].shape) == tuple(d.evaluate(spec.dims) for d in t.shape)
        assert torch.isfinite(out[name]).all(), name

    # parameters: count, names and shapes are exactly the registry's
    assert sum(p.numel() for p in model.parameters()) == total_params(spec.ir)
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(spec.ir)
    for n in spec.ir.nodes():  # per node: the module's own parameters are the op's trained params
        if n.op == "input":      # (params() less running statistics, which are buffers: batch_norm)
            continue
        types = {p: spec.ir.node(s).shape for p, s in n.inputs.items()}
        want = {k: tuple(v) for k, v in REGISTRY[n.op].trained(n.attrs, types).items()}
        got = {k: tuple(p.shape) for k, p in model.node_module(n.name).named_parameters()}
        assert got == want, n.name


@pytest.mark.parametrize("path", SPECS, ids=[os.path.basename(p) for p in SPECS])
def test_spec_runs_in_bfloat16(path):
    spec = load_tiny(path)
    model = gf.build(spec, seed=0, dtype=torch.bfloat16).eval()
    inputs = example_inputs(spec, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = model(**inputs)
    for name, t in out.items():
        assert t.dtype == (torch.bfloat16 if t.is_floating_point() else t.dtype), name
        assert torch.isfinite(t.float()).all(), name


@pytest.mark.parametrize("path", SPECS, ids=[os.path.basename(p) for p in SPECS])
def test_fast_path_equals_node_by_node_walk(path):
    spec = load_tiny(path)
    model = gf.build(spec, seed=1).eval()
    inputs = example_inputs(spec, dims={d: 3 for d in spec.dims if d.startswith("B")}, seed=2)
    with torch.inference_mode():
        out = model(**inputs)
        values = _walk(model, spec, inputs)
    for name, node in spec.ir.outputs.items():
        torch.testing.assert_close(out[name], values[node], rtol=0, atol=0)


def test_mask_prepared_once_equals_per_layer_masks():
    spec = gf.load(os.path.join(ROOT, "specs", "bert-base.yaml"), "tiny")
    model = gf.build(spec, seed=0).eval()
    assert model.code.count("prepare_key_mask") == 1
    x = example_inputs(spec, dims={"B": 3, "n": 6})
    for mask in ([[1] * 6] * 3, [[1] * 6, [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]):
        x["attention_mask"] = torch.tensor(mask)
        with torch.inference_mode():   # the walk hands every attention the raw [B, n] mask
            want = _walk(model, spec, x)[spec.ir.outputs["last_hidden_state"]]
            torch.testing.assert_close(model(**x)["last_hidden_state"], want, rtol=1e-6, atol=1e-6)


def _walk(model, spec, inputs):
    values = {spec.ir.inputs[k]: v for k, v in inputs.items()}
    for n in spec.ir.nodes():
        if n.op != "input":   # optional inputs by name: an attention fed `bias` but no `mask`
            args, kwargs = split_args(n, [values[s] for s in n.inputs.values()])
            values[n.name] = model.node_module(n.name)(*args, **kwargs)
    return values


# ---------------------------------------------------------------- structure

def test_paths_blocks_and_tied_weights():
    spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"), "tiny")
    model = gf.build(spec, seed=0)
    assert isinstance(model["blocks"], nn.ModuleList) and len(model["blocks"]) == 2
    assert model["blocks"][1]["attn"].q.weight is dict(model.named_parameters())["blocks.1.attn.q.weight"]
    assert model.node_module("lm_head").weight is model["tok"].weight      # one shared parameter
    assert "lm_head.weight" not in model.state_dict()
    assert len(list(model.parameters())) == len(model.state_dict())

    # the tied parameter gets the gradient of both uses
    out = model(**example_inputs(spec))
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_state_dict_round_trip_and_seeds():
    spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"), "tiny")
    a, b, c = gf.build(spec, seed=0), gf.build(spec, seed=0), gf.build(spec, seed=1)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a["tok"].weight, c["tok"].weight)
    assert torch.all(a["ln_f"].weight == 1) and torch.all(a["blocks"][0]["up"].bias == 0)
    assert abs(a["blocks"][0]["up"].weight.std().item() - 0.02) < 0.004
    c.load_state_dict(a.state_dict(), strict=True)
    x = example_inputs(spec)
    torch.testing.assert_close(a.eval()(**x), c.eval()(**x), rtol=0, atol=0)
    assert c.node_module("lm_head").weight is c["tok"].weight  # loading kept the tie


def test_repetition_is_one_module_that_wrappers_can_replace():
    spec = gf.load(os.path.join(ROOT, "specs", "bert-base.yaml"), "tiny")
    model = gf.build(spec, seed=0).eval()
    x = example_inputs(spec)
    ref = model(**x)["last_hidden_state"]
    calls = []
    model["encoder"][1].register_forward_hook(lambda *a: calls.append("hook"))

    class Wrapper(nn.Module):  # what activation checkpointing / FSDP wrapping does to a ModuleList item
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            calls.append("wrapper")
            return torch.utils.checkpoint.checkpoint(self.inner, *args, use_reentrant=False)

    model["encoder"][0] = Wrapper(model["encoder"][0])
    out = model(**x)["last_hidden_state"]
    assert calls == ["wrapper", "hook"]
    torch.testing.assert_close(out, ref)


def test_train_mode_runs_dropout_and_copies_pickle():
    spec = gf.load(os.path.join(ROOT, "specs", "encoder-block.yaml"), "tiny")
    model = gf.build(spec, seed=0)
    x = example_inputs(spec)
    assert model.training and "F.dropout" in model.code
    assert not torch.equal(model(**x)["y"], model(**x)["y"])
    model.eval()
    assert "dropout" not in model.code
    y = model(**x)["y"]
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone(**x)["y"], y, rtol=0, atol=0)


def test_forward_input_errors_and_positional_call():
    spec = gf.load(os.path.join(ROOT, "specs", "decoder-block.yaml"), "tiny")
    model = gf.build(spec, seed=0).eval()
    x = example_inputs(spec)
    torch.testing.assert_close(model(x["x"], x["memory"])["y"], model(x=x["x"], memory=x["memory"])["y"])
    with pytest.raises(TypeError, match="missing memory"):
        model(x=x["x"])
    with pytest.raises(TypeError, match="unexpected tgt"):
        model(**x, tgt=x["x"])


NESTED = """
graphformer: 1
name: nested
params: {d: 16, heads: 2}
dims: {B: 2, n: 5, m: 3}
inputs:
  a: {shape: [B, n, d]}
  b: {shape: [B, m, d]}
blocks:
  ffn:
    inputs: {x: [B, n, d]}
    nodes:
      up: {op: linear, out: 2 * d}
      type: {op: relu}
      down: {op: linear, out: d}
      res: {op: residual, in: [x, down]}
    outputs: {x: res}
  co:
    inputs: {x: [B, n, d], y: [B, m, d]}
    nodes:
      xa: {op: cross_attend, in: {query: x, context: y}, heads: heads}
      ya: {op: cross_attend, in: {query: y, context: x}, heads: heads}
      xr: {op: residual, in: [x, xa]}
      yr: {op: residual, in: [y, ya]}
      xf: {op: ffn, in: xr, repeat: 2}
    outputs: {x: xf, y: yr}
  split:
    inputs: {p: [B, n, d], q: [B, n, d]}
    nodes:
      pp: {op: relu, in: p}
      qq: {op: tanh, in: q}
    outputs: {p: pp, q: qq}
nodes:
  layers: {op: co, in: {x: a, y: b}, repeat: 2}
  s: {op: split, in: {p: layers.x, q: later}}
  later: {op: sigmoid, in: s.p}
  one: {op: ffn, in: s.q}
  cat: {op: concat, in: [one, later], axis: 1}
outputs: {out: cat, ys: layers.y}
"""


def test_nested_repeats_multi_output_blocks_and_interleaved_block(tmp_path):
    spec = gf.load(spec_file(tmp_path, NESTED))
    model = gf.build(spec, seed=0).eval()
    assert isinstance(model["layers"][1]["xf"], nn.ModuleList)
    assert "layers.1.xf.0.up.weight" in model.state_dict()
    assert isinstance(model["layers"][0]["xf"][1]["type"], nn.Module)  # a node named like an nn.Module method
    x = example_inputs(spec)
    with torch.inference_mode():
        out = model(**x)
        values = _walk(model, spec, x)
    # `s` feeds `later`, which feeds `s` again: that block can't run as one call, so it is inlined
    assert "mods['s']" not in model.code
    torch.testing.assert_close(out["out"], values["cat"], rtol=0, atol=0)
    torch.testing.assert_close(out["ys"], values["layers.1.yr"], rtol=0, atol=0)


# ---------------------------------------------------------------- example inputs

def test_example_inputs_are_valid():
    spec = gf.load(os.path.join(ROOT, "specs", "bert-base.yaml"), "tiny")
    x = example_inputs(spec, dims={"B": 5, "n": 12}, seed=3)
    assert x["input_ids"].shape == (5, 12) and x["input_ids"].dtype == torch.int64
    assert 0 <= x["input_ids"].min() and x["input_ids"].max() < spec.params["vocab"]
    assert x["token_type_ids"].max() < spec.params["type_vocab"]
    mask = x["attention_mask"]
    lengths = mask.sum(1)
    assert mask.dtype == torch.int64 and lengths.min() >= 1 and lengths[0] == 12
    assert torch.equal(mask, (torch.arange(12)[None] < lengths[:, None]).long())   # a prefix per row
    assert torch.equal(x["input_ids"], example_inputs(spec, dims={"B": 5, "n": 12}, seed=3)["input_ids"])
    with pytest.raises(UsageError, match="not a symbolic dim"):
        example_inputs(spec, dims={"q": 2})
    with pytest.raises(UsageError, match="at least 1"):
        example_inputs(spec, dims={"n": 0})


# ---------------------------------------------------------------- devices

def test_meta_build_of_gpt3_size_allocates_nothing():
    spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"),
                   overrides={"layers": 96, "d_model": 12288, "heads": 96, "max_len": 2048})
    model = gf.build(spec, device="meta")
    assert sum(p.numel() for p in model.parameters()) == 174_604_259_328 == total_params(spec.ir)
    assert all(p.is_meta for p in model.parameters())


def test_dtype_and_bad_device():
    spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"), "tiny")
    model = gf.build(spec, dtype="bfloat16", seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model(**example_inputs(spec))["logits"].dtype == torch.bfloat16
    with pytest.raises(UsageError, match="unsupported dtype"):
        gf.build(spec, dtype="int8")
    with pytest.raises(UsageError, match="unknown device"):
        gf.build(spec, device="tpu")


@gpu
@needs_cuda
def test_cuda_build_equals_cpu():
    spec = gf.load(os.path.join(ROOT, "specs", "bert-base.yaml"), "tiny")
    cpu = gf.build(spec, seed=0).eval()
    cuda = gf.build(spec, device="cuda").eval()
    cuda.load_state_dict(cpu.state_dict())
    x = example_inputs(spec)
    want = cpu(**x)
    got = cuda(**example_inputs(spec, device="cuda"))
    for k in want:
        torch.testing.assert_close(got[k].cpu(), want[k], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- the CLI

def run_cli(*argv):
    return cli.main(["build", *argv])


def test_cli_build_prints_and_writes_safetensors(tmp_path, capsys):
    from safetensors.torch import load_file
    path = os.path.join(ROOT, "specs", "gpt2.yaml")
    out = tmp_path / "gpt2.safetensors"
    assert run_cli(path, "--preset", "tiny", "--dims", "B=3", "n=5", "--seed", "7", "-o", str(out)) == 0
    text = capsys.readouterr().out
    assert "29,600 parameters" in text and "logits  [3, 5, 97]" in text and "match the checker" in text
    saved = load_file(str(out))
    model = gf.build(gf.load(path, "tiny"), seed=7)
    assert set(saved) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(saved[k], v), k
    fresh = gf.build(gf.load(path, "tiny"), seed=0)
    fresh.load_state_dict(saved, strict=True)
    assert [p for p in os.listdir(tmp_path) if p.startswith(".gf-")] == []   # no temp file left


def test_cli_loads_weights_through_a_map(tmp_path, capsys):
    from safetensors.torch import save_file
    ref = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)   # encoder-block's tiny preset
    weights = tmp_path / "ref.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(weights))
    path, out = os.path.join(ROOT, "specs", "encoder-block.yaml"), tmp_path / "ours.safetensors"
    assert run_cli(path, "--preset", "tiny", "--weights", str(weights), "--weights-map", "torch", "-o", str(out)) == 0
    assert "through weight map `torch`" in capsys.readouterr().out
    from safetensors.torch import load_file
    ours = load_file(str(out))
    torch.testing.assert_close(ours["attn.q.weight"], ref.self_attn.in_proj_weight[:32])
    torch.testing.assert_close(ours["up.weight"], ref.linear1.weight)
    assert run_cli(path, "--preset", "tiny", "--weights", str(weights), "--weights-map", "nope") == 2  # a usage error (issue 7)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    assert run_cli(path, "--preset", "tiny", "--weights", str(garbage), "--weights-map", "torch") == 2


def test_cli_meta_gpt3_count(capsys):
    path = os.path.join(ROOT, "specs", "gpt2.yaml")
    assert run_cli(path, "--device", "meta", "--set", "layers=96", "d_model=12288", "heads=96", "max_len=2048") == 0
    assert "174,604,259,328 parameters" in capsys.readouterr().out


def test_cli_exit_codes(tmp_path, capsys):
    good = os.path.join(ROOT, "specs", "bert-base.yaml")
    bad = spec_file(tmp_path, "graphformer: 1\nname: bad\ninputs: {x: {shape: [B, 4]}}\n"
                              "nodes: {y: {op: linear, out: 3, in: nope}}\noutputs: {y: y}\n")
    assert run_cli(bad) == 1
    assert run_cli(good, "--preset", "tiny", "--dims", "q=3") == 2
    assert run_cli(good, "--preset", "tiny", "--dims", "n=x") == 2
    assert run_cli(good, "--preset", "tiny", "--dims", "n=33") == 2           # beyond max_len 32
    assert "exceeds `max_len`" in capsys.readouterr().err
    assert run_cli(good, "--preset", "tiny", "--weights", "w.safetensors") == 2  # no --weights-map
    assert run_cli(good, "--preset", "tiny", "--weights", str(tmp_path / "none.pt"), "--weights-map", "hf") == 2
    assert run_cli(good, "--preset", "tiny", "--device", "meta", "-o", str(tmp_path / "m.safetensors")) == 2
    assert run_cli(good, "--preset", "tiny", "-o", str(tmp_path / "no" / "dir.safetensors")) == 2
    if not torch.cuda.is_available():
        assert run_cli(good, "--preset", "tiny", "--device", "cuda") == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_cli_without_torch_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None; import cli; "
            f"sys.exit(cli.main(['build', {os.path.join(ROOT, 'specs', 'encoder-block.yaml')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'graphformer[torch]'" in proc.stderr
