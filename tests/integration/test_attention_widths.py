"""`attention` with value heads of another width than the query/key heads (`v_head_dim`) and rotary in
interleaved pairs (`rope_interleaved`), against an independent reference written here with plain torch ops
(einsum, complex multiplication for the rotary; no transformers class has v ≠ q/k widths on plain
multi-head attention): logits, gradients, greedy generation with the KV cache (keys and values of different
widths, `KVCache.nbytes` exact), ONNX Runtime with and without past, and what summary, the memory plan
and the tensor-parallel plan count."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import graphformer  # noqa: E402
from graphformer.analysis.budget import kv_cache_per_token  # noqa: E402
from graphformer.analysis.summary import rows, total_params  # noqa: E402
from graphformer.analysis.tp_plan import derive  # noqa: E402
from graphformer.backends.torch.generation import Decoder  # noqa: E402
from graphformer.backends.torch.kvcache import KVCache  # noqa: E402
from parity import assert_close, assert_onnx_logits, lm_batch, prompts  # noqa: E402
from shape_cases import T as ST, check_case  # noqa: E402

V = 97
SPEC = """\
graphformer: 1
name: widths
params: {vocab: 97, d_model: 24, layers: 2, heads: 4, kv_heads: 2, head_dim: 6, v_head_dim: 10, rope_dims: 4,
         interleaved: true, softcap: 0.0, max_len: 64}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  mask: {shape: [B, n], dtype: int64, optional: true}
blocks:
  layer:
    inputs: {x: [B, n, d_model], mask: [B, n]}
    nodes:
      ln:   {op: norm, in: x}
      attn: {op: attention, in: {x: ln, mask: mask}, heads: heads, kv_heads: kv_heads, head_dim: head_dim,
             v_head_dim: v_head_dim, causal: true, rope: true, rope_dims: rope_dims, rope_theta: 50.0,
             rope_interleaved: interleaved, SOFTCAP max_len: max_len}
      res:  {op: residual, in: [x, attn]}
    outputs: {x: res}
nodes:
  tok:     {op: embedding, in: tokens, vocab: vocab, dim: d_model}
  blocks:  {op: layer, in: {x: tok, mask: mask}, repeat: layers}
  ln_f:    {op: norm}
  lm_head: {op: linear, out: vocab}
outputs: {logits: lm_head}
"""
# wide values, grouped-query, interleaved partial rotary on SDPA; narrow values, rotate-half over the whole
# head, soft-capped (the written-out scores)
CASES = {
    "wide-v-pairs": ({}, None),
    "narrow-v-halves-softcap": ({"kv_heads": 4, "head_dim": 8, "v_head_dim": 3, "rope_dims": 8,
                                 "interleaved": False}, 2.0),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("widths")
    (d / "plain.yaml").write_text(SPEC.replace("SOFTCAP ", ""))
    (d / "capped.yaml").write_text(SPEC.replace("SOFTCAP ", "softcap: 2.0, "))
    return d


def load(files, case):
    sets, cap = CASES[case]
    return graphformer.load(files / ("capped.yaml" if cap else "plain.yaml"), overrides=sets), cap


def build(spec):
    model = graphformer.build(spec, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():   # norm scales and biases away from 1 and 0
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


# ---------------------------------------------------------------- the independent reference

def rotary(x, pos, r: int, theta: float, interleaved: bool):
    """x (B, n, h, w): its first r dims rotated at positions pos (B, n)."""
    inv = 1.0 / theta ** (torch.arange(0, r, 2, dtype=torch.float64) / r)
    ang = (pos[..., None].double() * inv).float()[:, :, None, :]                    # (B, n, 1, r/2)
    rot, rest = x[..., :r], x[..., r:]
    if interleaved:    # pairs (x₂ᵢ, x₂ᵢ₊₁) as complex numbers times e^{i·angle}
        z = torch.view_as_complex(rot.reshape(*rot.shape[:-1], r // 2, 2).contiguous())
        rot = torch.view_as_real(z * torch.polar(torch.ones_like(ang), ang)).flatten(-2)
    else:              # dim i turns with dim i + r/2
        a, b = rot[..., :r // 2], rot[..., r // 2:]
        rot = torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], dim=-1)
    return torch.cat([rot, rest], dim=-1)


def reference(w: dict, p: dict, cap, ids, mask=None):
    """The model written out: w holds our parameters by name, p the spec's params."""
    h, kv, hd, vd, r = p["heads"], p["kv_heads"], p["head_dim"], p["v_head_dim"], p["rope_dims"]
    b, n = ids.shape
    mask = torch.ones(b, n, dtype=torch.long) if mask is None else mask
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    keep = torch.ones(n, n, dtype=torch.bool).tril()[None, None] & mask.bool()[:, None, None, :]
    keep = keep | ~keep.any(-1, keepdim=True)      # a pad row with no key attends to all (transformers)
    x = w["tok.weight"][ids]
    for i in range(p["layers"]):
        def lin(t, name):
            return t @ w[f"blocks.{i}.attn.{name}.weight"].T + w[f"blocks.{i}.attn.{name}.bias"]
        t = torch.nn.functional.layer_norm(x, (x.shape[-1],), w[f"blocks.{i}.ln.weight"], w[f"blocks.{i}.ln.bias"])
        q, k, v = lin(t, "q").view(b, n, h, hd), lin(t, "k").view(b, n, kv, hd), lin(t, "v").view(b, n, kv, vd)
        q, k = rotary(q, pos, r, 50.0, p["interleaved"]), rotary(k, pos, r, 50.0, p["interleaved"])
        k, v = k.repeat_interleave(h // kv, dim=2), v.repeat_interleave(h // kv, dim=2)
        s = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(hd)
        if cap:
            s = torch.tanh(s / cap) * cap
        att = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1)
        y = torch.einsum("bhnm,bmhe->bnhe", att, v).reshape(b, n, h * vd)
        x = x + lin(y, "o")
    x = torch.nn.functional.layer_norm(x, (x.shape[-1],), w["ln_f.weight"], w["ln_f.bias"])
    return x @ w["lm_head.weight"].T + w["lm_head.bias"]


def params_of(spec):
    return {k: spec.ir.params[k] for k in ("heads", "kv_heads", "head_dim", "v_head_dim", "rope_dims", "layers",
                                           "interleaved")}


# ---------------------------------------------------------------- forward, backward, generation

@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_the_reference_with_and_without_padding(files, case):
    spec, cap = load(files, case)
    model = build(spec)
    w = {k: v.detach() for k, v in model.named_parameters()}
    ids, mask = lm_batch(V)
    with torch.no_grad():
        assert_close(model(tokens=ids)["logits"], reference(w, params_of(spec), cap, ids), f"{case} logits")
        got = model(tokens=ids, mask=mask)["logits"]
    want = reference(w, params_of(spec), cap, ids, mask)
    assert_close(got[mask.bool()], want[mask.bool()], f"{case} logits, left-padded")


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_the_reference(files, case):
    spec, cap = load(files, case)
    model = build(spec)
    w = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    ids, mask = lm_batch(V)
    weight = torch.randn(V, generator=torch.Generator().manual_seed(2))
    (model(tokens=ids, mask=mask)["logits"][mask.bool()] * weight).sum().backward()
    (reference(w, params_of(spec), cap, ids, mask)[mask.bool()] * weight).sum().backward()
    for k, p in model.named_parameters():
        assert_close(p.grad, w[k].grad, f"{case} grad {k}")


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_generation_with_the_cache_equals_the_reference_recomputed(files, case):
    spec, cap = load(files, case)
    model = build(spec)
    w = {k: v.detach() for k, v in model.named_parameters()}
    ids, mask = prompts(padded=True)
    got = graphformer.generate(model, ids, 12, mask=mask)
    seq, full = ids, mask
    with torch.no_grad():
        for _ in range(12):   # no cache: the whole sequence again at every step
            nxt = reference(w, params_of(spec), cap, seq, full)[:, -1].argmax(-1, keepdim=True)
            seq, full = torch.cat([seq, nxt], 1), torch.cat([full, torch.ones_like(nxt)], 1)
    assert torch.equal(got, seq)


def test_the_cache_holds_keys_and_values_of_their_own_widths(files):
    spec, _ = load(files, "wide-v-pairs")
    model = build(spec)
    dec = Decoder(model, 3, 20)
    assert [(tuple(s.k.shape), tuple(s.v.shape)) for s in dec.cache.slots] == [((3, 2, 20, 6), (3, 2, 20, 10))] * 2
    allocated = sum(t.numel() * t.element_size() for s in dec.cache.slots for t in (s.k, s.v))
    allocated += sum(m.numel() * m.element_size() for m in dec.cache.valid.values())
    layers = [(2, 6, None, 10)] * 2
    assert KVCache.nbytes(layers, 3, 20, 4) == allocated == 3 * 20 * 2 * 2 * (6 + 10) * 4 + 3 * 20
    ids, mask = prompts(padded=True)
    seq = graphformer.generate(model, ids, 6, mask=mask)
    with torch.no_grad():   # every cached step equals a full recompute
        steps = [dec.prompt(ids, mask)] + [dec.step(seq[:, t]) for t in range(8, seq.shape[1] - 1)]
        for t, got in enumerate(steps, start=8):
            full = torch.cat([mask, torch.ones(3, t - 8, dtype=torch.long)], dim=1)
            assert_close(got, model(tokens=seq[:, :t], mask=full)["logits"][:, -1], f"step {t}")


# ---------------------------------------------------------------- ONNX

@pytest.mark.parametrize("case", list(CASES))
def test_onnx_runtime_equals_torch(files, case):
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, _ = load(files, case)
    model = build(spec)
    ids, mask = lm_batch(V)
    with torch.no_grad():
        want = model(tokens=ids, mask=mask)["logits"]
    assert_onnx_logits(to_onnx(spec, model, inputs=["mask"]), ids, mask, want, f"{case} onnx")


def test_onnx_with_past_has_both_widths_and_steps_equal_torch(files):
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from test_onnx_past import OrtDecoder, session
    spec, _ = load(files, "wide-v-pairs")
    model = build(spec)
    sess = session(to_onnx(spec, model, with_past=True))
    shapes = {i.name: (i.shape[1], i.shape[3]) for i in sess.get_inputs() if i.name.startswith("past_key_values")}
    assert shapes["past_key_values.1.key"] == (2, 6) and shapes["past_key_values.1.value"] == (2, 10)
    ids, mask = prompts(padded=True)
    dec, ref = OrtDecoder(sess), Decoder(model, 3, 16)
    with torch.no_grad():
        token = dec.prompt(ids.numpy(), mask.numpy())[:, -1]
        assert_close(torch.from_numpy(token), ref.prompt(ids, mask), "onnx prompt")
        for t in range(6):
            nxt = token.argmax(-1)
            token = dec.step(nxt[:, None])[:, -1]
            assert_close(torch.from_numpy(token), ref.step(torch.from_numpy(nxt)), f"onnx step {t}")


# ---------------------------------------------------------------- what the analyses count

def test_summary_memory_plan_and_tensor_parallel_plan_count_both_widths(files):
    spec, _ = load(files, "wide-v-pairs")
    d, h, kv, hd, vd = 24, 4, 2, 6, 10
    attn = d * h * hd + h * hd + d * kv * hd + kv * hd + d * kv * vd + kv * vd + h * vd * d + d
    table = {r.node: r for r in rows(spec.ir)}
    assert table["blocks.0.attn"].params == attn
    assert total_params(spec.ir) == sum(p.numel() for p in graphformer.build(spec, device="meta").parameters())
    n = 8   # the spec's dims: B = 2, n = 8; projections, q·kᵀ (hd) and p·v (vd)
    flops = 2 * 2 * n * (d * h * hd + d * kv * hd + d * kv * vd + h * vd * d) + 2 * 2 * n * n * h * (hd + vd)
    assert table["blocks.0.attn"].flops.evaluate({"B": 2, "n": n}) == flops
    assert kv_cache_per_token(spec.ir, 4) == 2 * kv * (hd + vd) * 4
    plan = {s.module: s.style for s in derive(spec, 2)}
    assert [plan[f"blocks.1.attn.{p}"] for p in "qkvo"] == ["colwise"] * 3 + ["rowwise"]


# ---------------------------------------------------------------- the shape rule and its codes

X = {"x": ST("B", "n", 24)}


@pytest.mark.parametrize("attrs,expected", [
    ({"heads": 4, "v_head_dim": 10}, ("B", "n", "24")),
    ({"heads": 4, "v_head_dim": 3, "head_dim": 8, "kv_heads": 2}, ("B", "n", "24")),
    ({"heads": 4, "v_head_dim": 0}, "GF272"),
    ({"heads": 4, "v_head_dim": -2}, "GF272"),
    ({"heads": 4, "rope": True, "rope_interleaved": True, "rope_dims": 4}, ("B", "n", "24")),
    ({"heads": 4, "rope": True, "rope_interleaved": True, "rope_dims": 5}, "GF273"),
    ({"heads": 8, "rope": True, "rope_interleaved": True}, "GF273"),         # a 3-wide head, rotated whole
    ({"heads": 4, "rope": True, "rope_interleaved": True, "rope_dims": 8}, "GF102"),   # wider than the head
    ({"heads": 4, "rope_interleaved": True}, "GF102"),                        # rotary is off
])
def test_shape_rule(attrs, expected):
    check_case("attention", attrs, X, expected)


def test_codes_are_reported_at_the_attribute(files):
    from graphformer.frontend.check import check_file
    for sets, code in [({"v_head_dim": 0}, "GF272"), ({"rope_dims": 3}, "GF273")]:
        diags = [d for d in check_file(str(files / "plain.yaml"), overrides=sets).diagnostics if d.is_error]
        assert [d.code for d in diags][:1] == [code]
        assert diags[0].span.line > 0


def test_torch_module_and_diagram_say_what_they_do(files):
    from graphformer.render.diagram import attr_detail
    spec, _ = load(files, "wide-v-pairs")
    attn = graphformer.build(spec, device="meta").node_module("blocks.0.attn")
    assert "value_dim=10" in repr(attn) and "interleaved pairs" in repr(attn)
    label = attr_detail("attention", spec.ir.node("blocks.0.attn").attrs)
    assert "v heads 10 wide" in label and "on 4 dims in pairs" in label
