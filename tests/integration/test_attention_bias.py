"""The attention logit bias (T5's relative positions, Swin's windows), cross-attention's per-projection
biases and `scale`, and real-valued attributes written as expressions over params.

The torch build is checked against attention written out by hand (softmax(q·kᵀ·scale + bias + mask)·v),
and ONNX Runtime against the torch build, with padding and causality mixed in.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphformer as gf
from graphformer.base.diagnostics import SpecError

torch = pytest.importorskip("torch")

SPEC = """
graphformer: 1
name: bias-zoo
params: {d: 16, heads: 2, temp: 2.0}
dims: {B: 2, n: 5, m: 3}
inputs:
  x:    {shape: [B, n, d]}
  c:    {shape: [B, m, d]}
  sb:   {shape: [1, heads, n, n]}
  cb:   {shape: [B, 1, n, m]}
  keep: {shape: [B, n], dtype: int64}
nodes:
  causal: {op: attention, in: {x: x, bias: sb, mask: keep}, heads: heads, causal: true, scale: 1.0}
  plain:  {op: attention, in: {x: x, bias: sb}, heads: heads, bias: false, scale: "(d // heads) ** -0.5 / temp"}
  cross:  {op: cross_attend, in: {query: x, context: c, bias: cb}, heads: heads, k_bias: false,
           scale: "d ** -0.25"}
outputs: {causal: causal, plain: plain, cross: cross}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("bias") / "bias-zoo.yaml"
    path.write_text(SPEC)
    spec = gf.load(str(path))
    module = gf.build(spec, seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return spec, module


def _inputs(b=2, n=5, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(b, n, dtype=torch.long)
    keep[0, :2] = 0                                       # left padding in row 0
    return {"x": torch.randn(b, n, 16, generator=g), "c": torch.randn(b, m, 16, generator=g),
            "sb": torch.randn(1, 2, n, n, generator=g), "cb": torch.randn(b, 1, n, m, generator=g), "keep": keep}


def _by_hand(mod, query, context, bias, scale, causal=False, keep=None):
    b, n, _ = query.shape
    m = context.shape[1]
    h = 2
    q = mod.q(query).view(b, n, h, -1).transpose(1, 2)
    k = mod.k(context).view(b, m, h, -1).transpose(1, 2)
    v = mod.v(context).view(b, m, h, -1).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) * scale + bias
    allowed = torch.ones(b, 1, n, m, dtype=torch.bool)
    if keep is not None:
        allowed = allowed & keep.bool()[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(n, m, dtype=torch.bool).tril()
    allowed = allowed | ~allowed.any(-1, keepdim=True)    # a row with no key left sees every key
    logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    y = torch.softmax(logits, -1) @ v
    return mod.o(y.transpose(1, 2).reshape(b, n, -1))


def test_scale_expressions_follow_params(built):
    spec, _ = built
    attrs = {n.name: n.attrs for n in spec.ir.nodes() if n.op != "input"}
    assert attrs["plain"].scale == pytest.approx(8 ** -0.5 / 2.0)
    assert attrs["cross"].scale == pytest.approx(16 ** -0.25)
    assert attrs["cross"].biases() == {"q": True, "k": False, "v": True, "o": True}


def test_torch_equals_attention_written_out(built):
    spec, module = built
    ins = _inputs()
    with torch.no_grad():
        out = module(**ins)
        mods = dict(module.named_modules())
        ref = {"causal": _by_hand(mods["causal"], ins["x"], ins["x"], ins["sb"], 1.0, True, ins["keep"]),
               "plain": _by_hand(mods["plain"], ins["x"], ins["x"], ins["sb"], 8 ** -0.5 / 2),
               "cross": _by_hand(mods["cross"], ins["x"], ins["c"], ins["cb"], 16 ** -0.25)}
    for name, r in ref.items():
        torch.testing.assert_close(out[name], r, rtol=1e-5, atol=1e-5, msg=name)
    assert "k.bias" not in dict(mods["cross"].named_parameters())


def test_onnx_runtime_equals_torch(built, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from graphformer.backends.onnx import to_onnx
    spec, module = built
    sess = ort.InferenceSession(to_onnx(spec, module).SerializeToString(), providers=["CPUExecutionProvider"])
    for dims in ((2, 5, 3), (3, 7, 4)):
        ins = _inputs(*dims, seed=dims[1])
        with torch.no_grad():
            ref = module(**ins)
        got = sess.run(list(spec.outputs), {k: v.numpy() for k, v in ins.items()})
        for name, y in zip(spec.outputs, got):
            np.testing.assert_allclose(y, ref[name].numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("shape, where", [("[1, 3, n, n]", "dimension 1 (heads, or 1) of `bias` is `3`, expected `2`"),
                                          ("[1, heads, n, 4]", "dimension 3 (keys) of `bias` is `4`, expected `n`"),
                                          ("[heads, n, n]", "`bias` must have rank 4")])
def test_a_bias_that_does_not_fit_is_an_error_at_the_attention(tmp_path, shape, where):
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC.replace("sb:   {shape: [1, heads, n, n]}", f"sb:   {{shape: {shape}}}"))
    with pytest.raises(SpecError) as e:
        gf.load(str(path))
    d = e.value.diagnostics[0]
    assert where in d.message, d.message
    assert SPEC.splitlines()[d.span.line - 1].lstrip().startswith("causal:"), d.span   # at the consumer


def test_a_bad_expression_points_into_it(tmp_path):
    path = tmp_path / "bad.yaml"
    text = SPEC.replace('"d ** -0.25"', '"d ** -0.25 / nope"')
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        gf.load(str(path))
    d = e.value.diagnostics[0]
    assert d.code == "GF130" and "`nope` is not a numeric param" in d.message
    line = text.splitlines()[d.span.line - 1]
    assert line[d.span.col - 1:].startswith("nope"), (line, d.span)
    assert len(e.value.diagnostics) == 1   # not also "invalid value" from validation


def test_tensor_parallel_keeps_a_per_head_bias_whole(built):
    """A bias [1, heads, n, n] would need splitting with the heads: such attention stays replicated."""
    from graphformer.analysis.tp_plan import derive
    spec, _ = built
    plan = {s.module: s.style for s in derive(spec, 2)}
    assert plan["causal"] == plan["plain"] == plan["cross"] == "replicate"
    assert not any(m.startswith(("causal.", "plain.")) for m in plan)
