"""torch.compile(fullgraph=True) of a built model: the generated forward has no graph breaks, and the
compiled module computes what eager does."""
from __future__ import annotations

import os
import shutil

import pytest

torch = pytest.importorskip("torch")

import graphformer as gf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _compile_or_skip(fn, *args, **kwargs):
    """Run a compiled call; skip (with the reason) when Inductor can't build kernels on this machine."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # Inductor wraps toolchain failures in its own exception types
        text = f"{type(e).__name__}: {e}"
        no_compiler = shutil.which("cc") is None and shutil.which("gcc") is None
        if no_compiler or any(s in text for s in ("CppCompileError", "C compiler", "Python.h")):
            pytest.skip(f"torch.compile needs a working C/C++ toolchain here: {text[:200]}")
        raise


@pytest.mark.slow
def test_compiled_gpt2_equals_eager():
    spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"), "tiny")
    model = gf.build(spec, seed=0).eval()
    inputs = gf.example_inputs(spec)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break is an error
    with torch.no_grad():
        want = model(**inputs)
        got = _compile_or_skip(compiled, **inputs)
    assert list(got) == ["hidden", "logits"]
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-5)


def test_block_exports_without_graph_breaks():
    """One repetition traces to a single graph (what FSDP / checkpointing / export see), no compiler needed."""
    spec = gf.load(os.path.join(ROOT, "specs", "bert-base.yaml"), "tiny")
    model = gf.build(spec, seed=0).eval()
    x = torch.randn(2, 8, 32)
    mask = torch.ones(2, 8, dtype=torch.int64)
    exported = torch.export.export(model["encoder"][0], (x, mask))
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any("scaled_dot_product_attention" in o for o in ops), ops
    torch.testing.assert_close(exported.module()(x, mask)[0], model["encoder"][0](x, mask)[0])


def test_export_keeps_the_padding_mask():
    """The all-kept-mask shortcut reads data, so tracing must not bake it in: a model exported with an
    all-ones mask still masks padding."""
    spec = gf.load(os.path.join(ROOT, "specs", "bert-base.yaml"), "tiny")
    model = gf.build(spec, seed=0).eval()
    x = gf.example_inputs(spec)
    x["attention_mask"] = torch.ones_like(x["attention_mask"])
    exported = torch.export.export(model, (), kwargs=x)
    x["attention_mask"][1, 3:] = 0
    torch.testing.assert_close(exported.module()(**x)["last_hidden_state"], model(**x)["last_hidden_state"])
