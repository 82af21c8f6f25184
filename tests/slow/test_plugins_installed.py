"""The example plugin (examples/plugin-rmsnorm-gated) installed for real, end to end: pip installs it into a
temporary directory (`--no-deps --target`; its entry point is found through the dist-info there, as for any
installed package), then the CLI lists, checks, draws and exports its ops in a fresh process, and the torch
build matches transformers' Mamba2RMSNormGated (through the spec's weight map), a hand-written module, and
ONNX Runtime. tests/unit/test_plugins.py covers the mechanics with fake entry points."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugin-rmsnorm-gated"
NORM = str(EXAMPLE / "gated-norm.yaml")
SWISH = str(EXAMPLE / "swish-mlp.yaml")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("src") / "plugin"
    # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot install the example plugin here: {done.stderr[-500:]}")
    return str(target)


def gf(site: str, *args: str) -> subprocess.CompletedProcess:
    """`graphformer ARGS` in a fresh process that sees the installed plugin."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), site])}
    return subprocess.run([sys.executable, "-m", "graphformer", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.fixture
def loaded(site):
    """The plugin installed in this process too (its dist-info on sys.path), for the torch build."""
    from graphformer.ops import plugins
    sys.path.insert(0, site)
    plugins.reset()
    yield
    sys.path.remove(site)
    plugins.reset()


def test_cli_lists_checks_and_draws_the_plugin_ops(site, tmp_path):
    listed = gf(site, "list", "--ops")
    assert listed.returncode == 0
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "graphformer-rmsnorm-gated 0.1.0" in rows["rmsnorm_gated"] and "builtin" in rows["linear"]
    assert "traits not declared: sequence, tp" in rows["swish_beta"]
    assert gf(site, "check", NORM).returncode == 0 and gf(site, "check", SWISH).returncode == 0
    bad = gf(site, "check", NORM, "--set", "groups=5")
    assert bad.returncode == 1 and "gated-norm.yaml:14:" in bad.stderr and "error[GF123]" in bad.stderr
    summary = gf(site, "summary", NORM, "--format", "json")
    assert summary.returncode == 0 and '"rmsnorm_gated"' in summary.stdout
    dot = tmp_path / "norm.dot"
    assert gf(site, "draw", NORM, "-o", str(dot)).returncode == 0 and "rmsnorm_gated" in dot.read_text()


def test_check_imports_neither_torch_nor_the_plugin_lowerings(site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), site])}
    code = ("import sys; from graphformer.frontend.check import check_file; r = check_file(sys.argv[1]); "
            "print(r.ok, sorted(m for m in sys.modules if m == 'torch' or m.startswith('graphformer_rmsnorm')))")
    done = subprocess.run([sys.executable, "-c", code, NORM], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.stdout.split("\n")[0] == "True ['graphformer_rmsnorm_gated']", done.stderr


def test_without_the_plugin_the_spec_names_the_package(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "graphformer", "check", NORM], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    assert done.returncode == 1 and "error[GF253]" in done.stderr and "graphformer-rmsnorm-gated" in done.stderr


def test_export_refuses_a_plugin_op_without_onnx_lowering_or_writes_a_custom_node(site, tmp_path):
    import onnx
    out = tmp_path / "swish.onnx"
    refused = gf(site, "export", SWISH, "-o", str(out))
    assert refused.returncode == 1 and "error[GF254]" in refused.stderr and "swish_beta" in refused.stderr
    assert not out.exists()
    assert gf(site, "export", SWISH, "-o", str(out), "--custom-ops").returncode == 0
    model = onnx.load(str(out))
    custom = [n for n in model.graph.node if n.op_type == "swish_beta"]
    assert len(custom) == 1 and custom[0].domain == "graphformer.graphformer_rmsnorm_gated"
    assert {o.domain for o in model.opset_import} == {"", "graphformer.graphformer_rmsnorm_gated"}
    refused = gf(site, "summary", SWISH, "--mesh", "dp=1,tp=2")
    assert refused.returncode == 1 and "error[GF256]" in refused.stderr


def test_torch_build_matches_transformers_and_a_hand_written_module(loaded):
    import torch
    from transformers.models.mamba2.modeling_mamba2 import Mamba2RMSNormGated

    import graphformer
    spec = graphformer.load(NORM, preset="tiny")
    model = graphformer.build(spec, seed=0).eval()
    ref = Mamba2RMSNormGated(16, group_size=8, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(16) + 0.5)
    graphformer.load_weights(model, ref.state_dict(), "hf", spec=spec)
    torch.manual_seed(0)
    x, z = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    got = model(x=x, z=z)["y"]
    torch.testing.assert_close(got, ref(x, gate=z), rtol=1e-5, atol=1e-5)
    h = x * torch.nn.functional.silu(z)   # by hand: two groups of 8
    g = h.view(2, 8, 2, 8)
    want = (g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + 1e-6)).view(2, 8, 16) * ref.weight
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_onnx_runtime_reproduces_the_torch_build(loaded):
    import numpy as np
    import onnxruntime as ort
    import torch

    import graphformer
    from graphformer.backends.onnx import to_onnx
    spec = graphformer.load(NORM)
    model = graphformer.build(spec, seed=1).eval()
    proto = to_onnx(spec, model)
    x, z = np.random.default_rng(0).standard_normal((2, 2, 5, 64), dtype=np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(["y"], {"x": x, "z": z})[0]
    want = model(x=torch.from_numpy(x), z=torch.from_numpy(z))["y"].detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_generate_refuses_a_plugin_op_without_its_sequence_trait(loaded, tmp_path):
    from graphformer.analysis.decoding import plan_decoder
    from graphformer.base.diagnostics import SpecError
    from graphformer.frontend.check import check_file
    decoder = Path(SWISH).read_text().replace(
        "  x: {shape: [B, n, d_model]}", "  tokens: {shape: [B, n], dtype: int64}").replace(
        "  up:   {op: linear, out: d_ff}", "  tok:  {op: embedding, in: tokens, vocab: 50, dim: d_model}\n"
        "  attn: {op: attention, heads: 2, causal: true}\n  up:   {op: linear, out: d_ff}").replace(
        "outputs: {y: down}", "outputs: {logits: down}")
    (tmp_path / "decoder.yaml").write_text(decoder)
    result = check_file(str(tmp_path / "decoder.yaml"))
    assert result.ok, result.diagnostics
    with pytest.raises(SpecError) as e:
        plan_decoder(result.ir, ("logits",))
    assert e.value.diagnostics[0].code == "GF255" and e.value.diagnostics[0].node == "act"
