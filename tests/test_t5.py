"""T5 (issue 13): the relative position bias against transformers' `T5Attention`, then the spec
(specs/t5-base.yaml) against `T5ForConditionalGeneration`: parameter counts on the meta device, outputs at
tiny odd configurations, the weight map, ONNX."""
from __future__ import annotations

import math

import numpy as np
import pytest

from graphformer.backends.tables import relative_position_buckets

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

from graphformer.dims import Dim  # noqa: E402
from graphformer.ir import IRNode  # noqa: E402
from graphformer.ops import REGISTRY  # noqa: E402
from graphformer.ops.base import TensorType  # noqa: E402
from graphformer.backends.torch import LOWERINGS  # noqa: E402


def their_buckets(rel, buckets, max_distance, causal):
    return T5Attention._relative_position_bucket(torch.as_tensor(rel), not causal, buckets, max_distance).numpy()


@pytest.mark.parametrize("causal", [False, True])
def test_published_buckets_equal_transformers(causal):
    """T5, mT5, Flan-T5: 32 buckets, max distance 128; distances far past it share the end buckets."""
    rel = np.arange(-600, 601)
    ours = relative_position_buckets(32, 128, causal)[np.clip(rel, -128, 128) + 128]
    assert (ours == their_buckets(rel, 32, 128, causal)).all()


def test_buckets_differ_from_transformers_only_where_float32_rounding_decides():
    """Over a grid of small configurations the table equals transformers' buckets, except where the exact
    bucket value is an integer and float32 logarithms (numpy's vs torch's) round it either way."""
    odd = []
    for buckets in range(2, 36):
        for max_distance in (*range(2, 24), 27, 31, 40, 49, 64):
            for causal in (False, True):
                exact = (buckets if causal else buckets // 2) // 2
                if exact < 1 or max_distance <= exact:
                    continue
                rel = np.arange(-max_distance - 3, max_distance + 4)
                ours = relative_position_buckets(buckets, max_distance, causal)[np.clip(rel, -max_distance,
                                                                                         max_distance) + max_distance]
                theirs = their_buckets(rel, buckets, max_distance, causal)
                for r in rel[ours != theirs]:
                    per_side = buckets if causal else buckets // 2
                    real = exact + math.log(abs(r) / exact) / math.log(max_distance / exact) * (per_side - exact)
                    assert abs(real - round(real)) < 1e-5, (buckets, max_distance, causal, r, real)
                    odd.append((buckets, max_distance, causal, int(r)))
    assert len(odd) < 20, odd


def _bias_module(heads, buckets, max_distance, causal, n):
    attrs = REGISTRY["relative_position_bias"].attrs(heads=heads, buckets=buckets, max_distance=max_distance,
                                                     causal=causal)
    types = {"x": TensorType((Dim.const(2), Dim.const(n), Dim.const(8)))}
    return LOWERINGS["relative_position_bias"](IRNode("bias", "relative_position_bias", attrs, {"x": "x"}, None),
                                               types)


def _reference(heads, buckets, max_distance, causal):
    cfg = transformers.T5Config(num_heads=heads, d_model=8, d_kv=4, relative_attention_num_buckets=buckets,
                                relative_attention_max_distance=max_distance, is_decoder=causal)
    return T5Attention(cfg, has_relative_attention_bias=True, layer_idx=0)


@pytest.mark.parametrize("heads,buckets,max_distance,causal,n", [
    (3, 8, 20, False, 27), (5, 7, 11, True, 30), (12, 32, 128, False, 300), (1, 4, 3, True, 9),
])
def test_bias_equals_compute_bias(heads, buckets, max_distance, causal, n):
    ref = _reference(heads, buckets, max_distance, causal)
    mod = _bias_module(heads, buckets, max_distance, causal, n)
    with torch.no_grad():
        mod.weight.copy_(torch.randn(buckets, heads))
        ref.relative_attention_bias.weight.copy_(mod.weight)
        got = mod(torch.zeros(2, n, 8))
        want = ref.compute_bias(n, n)
    assert got.shape == (1, heads, n, n)
    assert torch.equal(got, want)


# ---------------------------------------------------------------- shared tables (`tied:` on embedding)

SHARED = """\
graphformer: 1
name: shared
params: {d: 16, vocab: 50}
dims: {B: 2, n: 5, t: 3}
inputs:
  a: {shape: [B, n], dtype: int64}
  b: {shape: [B, t], dtype: int64}
nodes:
  shared: {op: embedding, in: a, vocab: vocab, dim: d}
  dec:    {op: embedding, in: b, vocab: vocab, dim: d, tied: shared}
  head:   {op: linear, in: dec, out: vocab, bias: false, tied: shared}
outputs: {x: shared, y: head}
"""


def _spec_text(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_one_table_read_by_two_embeddings_and_a_head(tmp_path):
    import graphformer
    from graphformer.summary import total_params
    spec = graphformer.load(_spec_text(tmp_path, SHARED))
    assert total_params(spec.ir) == 50 * 16
    model = graphformer.build(spec, seed=0)
    assert list(model.state_dict()) == ["shared.weight"]
    assert model.node_module("dec").weight is model.node_module("shared").weight
    a, b = torch.randint(0, 50, (2, 5)), torch.randint(0, 50, (2, 3))
    out = model(a=a, b=b)
    w = model.node_module("shared").weight
    torch.testing.assert_close(out["y"], w[b] @ w.T)
    out["y"].sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


@pytest.mark.parametrize("edit,message,on_value", [
    ("WIDTH", "tied weight of `shared` is [50, 16] but this node needs [50, 8]", False),
    ("SELF", "`tied: dec` names this node itself", True),
    ("CHAIN", "`dec` has no table of its own: it is tied to `shared`", True),
])
def test_bad_shared_tables_are_gf125(tmp_path, edit, message, on_value):
    import graphformer
    text = {"SELF": SHARED.replace("dim: d, tied: shared}", "dim: d, tied: dec}"),
            "CHAIN": SHARED.replace("bias: false, tied: shared}", "bias: false, tied: dec}")}.get(
        edit, SHARED.replace("dim: d, tied: shared}", "dim: 8, tied: shared}"))
    with pytest.raises(graphformer.SpecError) as err:
        graphformer.load(_spec_text(tmp_path, text))
    (d,) = err.value.diagnostics
    assert d.code == "GF125" and message in d.message
    if on_value:   # the caret is on the value of `tied`
        line = text.splitlines()[d.span.line - 1]
        assert d.span.col == line.index("tied: ") + len("tied: ") + 1
