"""Each torch lowering on its own: parameter names and shapes equal the op registry's, output shapes
equal the shape rule's, and the numerics equal naive reference math (masked softmax attention, RMS
norm, the sinusoids of Vaswani et al., ...)."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from graphformer.backends.torch import LOWERINGS  # noqa: E402
from graphformer.backends.tables import sinusoids  # noqa: E402
from graphformer.base.dims import Dim  # noqa: E402
from graphformer.ir import IRNode  # noqa: E402
from graphformer.ops import REGISTRY  # noqa: E402
from graphformer.ops.base import TensorType  # noqa: E402


# ---------------------------------------------------------------- each lowering against the registry

def T(*dims, dtype="float32") -> TensorType:
    return TensorType(tuple(Dim.const(d) for d in dims), dtype)


OP_CASES = {
    "embedding": [({"vocab": 11, "dim": 8}, {"ids": T(2, 5, dtype="int64")}),
                  ({"vocab": 11, "dim": 8, "scale": True}, {"ids": T(2, 5, dtype="int64")})],
    "positional": [({"kind": "learned", "max_len": 9}, {"x": T(2, 5, 8)}),
                   ({"kind": "sinusoidal", "max_len": 9}, {"x": T(2, 5, 8)}),
                   ({"kind": "sinusoidal", "sinusoid": "halves", "max_len": 9}, {"x": T(2, 5, 8)}),
                   ({"kind": "sinusoidal", "sinusoid": "halves", "stored": True, "max_len": 9}, {"x": T(2, 5, 8)})],
    "linear": [({"out": 6}, {"x": T(2, 5, 8)}), ({"out": 6, "bias": False}, {"x": T(3, 8)}),
               ({"out": 11, "tied": "emb"}, {"x": T(2, 5, 8)})],
    "attention": [({"heads": 2}, {"x": T(2, 5, 8)}),
                  ({"heads": 4, "causal": True, "bias": False}, {"x": T(2, 5, 8), "mask": T(2, 5, dtype="bool")}),
                  ({"heads": 6, "kv_heads": 2, "head_dim": 4, "causal": True, "rope": True, "q_bias": True,
                    "k_bias": True, "v_bias": True, "o_bias": False, "bias": False},
                   {"x": T(2, 5, 12), "positions": T(2, 5, dtype="int64")}),
                  ({"heads": 3, "kv_heads": 1, "causal": True, "window": 2, "qk_norm": "rms", "rope": True,
                    "rope_dims": 2, "scale": 0.5}, {"x": T(2, 5, 12), "mask": T(2, 5, dtype="int64")}),
                  ({"heads": 3, "kv_heads": 1, "head_dim": 5, "window": 2, "qk_norm": "rms_full", "softcap": 1.5},
                   {"x": T(2, 5, 12), "mask": T(2, 5, dtype="bool")})],
    "cross_attend": [({"heads": 2}, {"query": T(2, 5, 8), "context": T(2, 3, 12)}),
                     ({"heads": 2, "dim": 4, "out": 6}, {"query": T(2, 5, 8), "context": T(2, 3, 12),
                                                       "mask": T(2, 3, dtype="int64")})],
    "norm": [({}, {"x": T(2, 5, 8)}), ({"kind": "rms", "eps": 1e-6}, {"x": T(2, 5, 8)}),
             ({"bias": False}, {"x": T(2, 5, 8)}), ({"kind": "rms", "unit_offset": True}, {"x": T(2, 5, 8)}),
             ({"unit_offset": True}, {"x": T(2, 5, 8)}), ({"kind": "rms", "groups": 2}, {"x": T(2, 5, 8)})],
    "softcap": [({"cap": 2.0}, {"x": T(2, 5, 8)})],
    "residual": [({}, {"xs0": T(2, 5, 8), "xs1": T(2, 5, 8), "xs2": T(2, 5, 8)})],
    "relu": [({}, {"x": T(2, 5, 8)})], "silu": [({}, {"x": T(2, 5, 8)})], "tanh": [({}, {"x": T(2, 5, 8)})],
    "sigmoid": [({}, {"x": T(2, 5, 8)})],
    "gelu": [({}, {"x": T(2, 5, 8)}), ({"approximate": "tanh"}, {"x": T(2, 5, 8)})],
    "dropout": [({"p": 0.5}, {"x": T(2, 5, 8)})],
    "activation": [({"kind": k}, {"x": T(2, 5, 8)}) for k in
                   ("relu", "gelu", "gelu_tanh", "silu", "tanh", "sigmoid", "quick_gelu")],
    "mul": [({}, {"xs0": T(2, 5, 8), "xs1": T(2, 5, 8)})],
    "softmax": [({"axis": 1}, {"x": T(2, 5, 8)})],
    "concat": [({"axis": 1}, {"xs0": T(2, 5, 8), "xs1": T(2, 3, 8)})],
    "pool": [({"kind": "cls", "index": 1}, {"x": T(2, 5, 8)}), ({"kind": "mean"}, {"x": T(2, 5, 8)})],
    "learned_scale": [({"init": 0.5}, {"x": T(2, 5, 8)}), ({"per": "scalar", "act": "tanh"}, {"x": T(2, 5, 8)})],
    "offset": [({"by": -1.5}, {"x": T(2, 5, 8)})],
    "clamp": [({"min": -0.5, "max": 0.5}, {"x": T(2, 5, 8)}), ({"min": 0.0}, {"x": T(2, 5, 8)})],
    "mask_tokens": [({}, {"x": T(2, 5, 8)}), ({}, {"x": T(2, 5, 8), "mask": T(2, 5, dtype="bool")})],
    "apply_mask": [({}, {"x": T(2, 5, 8)}), ({}, {"x": T(2, 5, 8), "mask": T(2, 5, dtype="int64")}),
                   ({"axis": -1}, {"x": T(2, 4, 3, 5), "mask": T(2, 5, dtype="bool")})],
    "conv2d": [({"out": 6, "kernel": 3, "padding": 1}, {"x": T(2, 4, 7, 9)}),
               ({"out": 8, "kernel": 2, "stride": 2, "dilation": 2, "groups": 4, "bias": False}, {"x": T(2, 4, 9, 8)}),
               ({"out": 4, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 2]},
                {"x": T(2, 4, 9, 8)}),
               ({"out": 4, "kernel": [4, 3], "padding": "same"}, {"x": T(2, 4, 7, 9)})],
    "conv_transpose2d": [({"out": 6, "kernel": 2, "stride": 2}, {"x": T(2, 4, 7, 9)}),
                         ({"out": 6, "kernel": [3, 2], "stride": [2, 3], "padding": 1, "output_padding": [1, 0],
                           "groups": 2, "bias": False}, {"x": T(2, 4, 5, 3)})],
    "batch_norm": [({}, {"x": T(2, 4, 7, 9)}), ({"affine": False}, {"x": T(3, 4)}),
                   ({"track_running_stats": False}, {"x": T(2, 4, 5)})],
    "interpolate": [({"size": [5, 11], "mode": "bilinear"}, {"x": T(2, 4, 7, 9)}),
                    ({"scale": 2}, {"x": T(2, 4, 3, 5)}),
                    ({"mode": "bicubic", "align_corners": True}, {"x": T(2, 4, 3, 5), "like": T(2, 1, 8, 6)})],
    "pool2d": [({"kind": "max", "kernel": 3, "stride": 2, "padding": 1}, {"x": T(2, 4, 7, 9)}),
               ({"kind": "avg", "kernel": 2, "ceil_mode": True, "count_include_pad": False}, {"x": T(2, 4, 7, 9)}),
               ({"kind": "avg", "output": [3, 4]}, {"x": T(2, 4, 7, 9)}),
               ({"kind": "max", "output": 1}, {"x": T(2, 4, 7, 9)})],
    "grid_positions": [({"table": 3, "patch": 4}, {"x": T(2, 10, 8), "image": T(2, 3, 12, 12)}),
                       ({"table": 3, "patch": 4, "antialias": True}, {"x": T(2, 9, 8), "image": T(2, 3, 8, 19)})],
    "selective_scan": [({"state": 3}, {"x": T(2, 5, 6), "delta": T(2, 5, 6), "B": T(2, 5, 3), "C": T(2, 5, 3)}),
                       ({"state": 3, "heads": 4, "groups": 2, "delta_bias": True, "delta_softplus": True},
                        {"x": T(2, 5, 8), "delta": T(2, 5, 4), "B": T(2, 5, 6), "C": T(2, 5, 6)})],
    "token_shift": [({}, {"x": T(2, 5, 6)}), ({"mix": True}, {"x": T(2, 5, 6)})],
    "wkv": [({}, {"k": T(2, 5, 6), "v": T(2, 5, 6)})],
    "relative_embeddings": [({"rows": 8, "dim": 6}, {"like": T(2, 5, 6)})],
    "disentangled_attention": [
        ({"heads": 2, "position_buckets": 4, "max_relative_positions": 6}, {"x": T(2, 5, 8), "rel": T(8, 8)}),
        ({"heads": 2, "position_buckets": 0, "max_relative_positions": 3, "share_att_key": False,
          "pos_att_type": ["c2p"]}, {"x": T(2, 5, 8), "rel": T(7, 8), "mask": T(2, 5, dtype="int64")})],
}


def random_input(t: TensorType, gen) -> torch.Tensor:
    shape = tuple(d.value for d in t.shape)
    if t.dtype == "float32":
        return torch.randn(shape, generator=gen)
    if t.dtype == "bool":
        return torch.arange(shape[-1]).expand(shape) < 2   # at least one kept key per row
    return torch.randint(0, 4, shape, generator=gen)


def lower(op: str, attrs: dict, types: dict):
    node = IRNode("n", op, REGISTRY[op].attrs.model_validate(attrs), {p: f"in.{p}" for p in types}, None)
    module = LOWERINGS[op](node, types)
    if attrs.get("tied"):
        owner = LOWERINGS["embedding"](IRNode("emb", "embedding", REGISTRY["embedding"].attrs(vocab=11, dim=8),
                                              {}, None), {"ids": T(2, 5, dtype="int64")})
        module.tie(owner)
    gen = torch.Generator().manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.3, generator=gen)
    return module, node


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # the tests draw random inputs: the same ones every run


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_every_op_has_a_torch_lowering(op):
    assert op in LOWERINGS, f"op `{op}` has no torch lowering: add one with @lowers({op!r})"


CASE_IDS = [(op, i) for op, cases in OP_CASES.items() for i in range(len(cases))]


@pytest.mark.parametrize("op,i", CASE_IDS, ids=[f"{op}-{i}" for op, i in CASE_IDS])
def test_lowering_params_and_shape_match_registry(op, i):
    attrs, types = OP_CASES[op][i]
    module, node = lower(op, attrs, types)
    want = {k: tuple(v) for k, v in REGISTRY[op].params(node.attrs, types).items()}
    trained = {k: tuple(v) for k, v in REGISTRY[op].trained(node.attrs, types).items()}
    assert {k: tuple(p.shape) for k, p in module.named_parameters()} == trained   # running statistics: buffers
    assert set(module.state_dict()) == set(want)  # tied weights and sinusoid tables are not state
    gen = torch.Generator().manual_seed(0)
    args = [random_input(t, gen) for t in types.values()]
    positional = len(args) if REGISTRY[op].variadic else len(REGISTRY[op].required_ports)
    y = module.eval()(*args[:positional], **dict(list(zip(types, args))[positional:]))
    out = REGISTRY[op].shape(node.attrs, types)
    assert tuple(y.shape) == tuple(d.value for d in out.shape)


def test_core_op_cases_cover_the_core_registry():
    core = {name for name, op in REGISTRY.items() if op.shape.__module__.endswith("ops.core")}
    assert core <= set(OP_CASES), sorted(core - set(OP_CASES))


# ---------------------------------------------------------------- numerics against naive math

def naive_attention(mod, xq, xkv, keep):
    """softmax(QKᵀ/√d_head + mask)V with explicit heads; `keep` [B, h|1, n, m] bool or None."""
    b, n, _ = xq.shape
    m, h = xkv.shape[1], mod.heads
    q = (xq @ mod.q.weight.T + mod.q.bias).view(b, n, h, -1).transpose(1, 2)
    k = (xkv @ mod.k.weight.T + mod.k.bias).view(b, m, h, -1).transpose(1, 2)
    v = (xkv @ mod.v.weight.T + mod.v.bias).view(b, m, h, -1).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    y = torch.softmax(scores, -1) @ v
    return y.transpose(1, 2).reshape(b, n, -1) @ mod.o.weight.T + mod.o.bias


@pytest.mark.parametrize("mask_dtype", [None, torch.bool, torch.int64])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_naive(causal, mask_dtype):
    mod, _ = lower("attention", {"heads": 4, "causal": causal}, {"x": T(3, 6, 16)})
    x = torch.randn(3, 6, 16)
    lengths = torch.tensor([6, 2, 4])
    pad = torch.arange(6)[None] < lengths[:, None]                        # [B, n]
    keep = None
    if causal:
        keep = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]
    if mask_dtype is not None:
        keep = pad[:, None, None, :] if keep is None else keep & pad[:, None, None, :]
    mask = None if mask_dtype is None else pad.to(mask_dtype)
    got = mod(x) if mask is None else mod(x, mask)
    torch.testing.assert_close(got, naive_attention(mod, x, x, keep), rtol=1e-5, atol=1e-5)


def test_cross_attention_equals_naive_with_other_widths():
    mod, _ = lower("cross_attend", {"heads": 2, "dim": 12, "out": 10},
                   {"query": T(2, 5, 8), "context": T(2, 7, 6), "mask": T(2, 7, dtype="int64")})
    q, c = torch.randn(2, 5, 8), torch.randn(2, 7, 6)
    mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0]])
    got = mod(q, c, mask)
    assert got.shape == (2, 5, 10)
    want = naive_attention(mod, q, c, (mask != 0)[:, None, None, :])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_multi_head_scan_and_the_grouped_norm_equal_formulas():
    """Mamba-2's recurrence written out per sequence, head and position (head h reads group h // 2's B and
    C), against the chunked form in one block and in several; and the RMS norm of each half of the width on
    its own."""
    scan, _ = lower("selective_scan", {"state": 3, "heads": 4, "groups": 2, "delta_bias": True,
                                       "delta_softplus": True},
                    {"x": T(2, 5, 8), "delta": T(2, 5, 4), "B": T(2, 5, 6), "C": T(2, 5, 6)})
    g = torch.Generator().manual_seed(3)
    x, dt, b, c = (torch.randn(2, 5, w, generator=g) for w in (8, 4, 6, 6))
    want = torch.zeros(2, 5, 8)
    for i in range(2):
        for h in range(4):
            state, grp = torch.zeros(2, 3), slice(3 * (h // 2), 3 * (h // 2) + 3)
            for t in range(5):
                step = torch.nn.functional.softplus(dt[i, t, h] + scan.dt_bias[h])
                xs = x[i, t, 2 * h:2 * h + 2]                                            # the head's 2 channels
                state = torch.exp(-step * torch.exp(scan.A_log[h])) * state + step * torch.outer(xs, b[i, t, grp])
                want[i, t, 2 * h:2 * h + 2] = state @ c[i, t, grp] + scan.D[h] * xs
    torch.testing.assert_close(scan(x, dt, b, c), want, rtol=1e-5, atol=1e-6)
    scan.chunk = 2                                        # three blocks, the last one padded: the same sums
    torch.testing.assert_close(scan(x, dt, b, c), want, rtol=1e-5, atol=1e-6)
    y = torch.autograd.grad(scan(x, dt, b, c).square().sum(), scan.A_log)[0]
    assert torch.isfinite(y).all()                        # the masked exponents leave no NaN in the gradient
    norm, _ = lower("norm", {"kind": "rms", "groups": 2, "eps": 1e-6}, {"x": T(2, 5, 8)})
    halves = x.view(2, 5, 2, 4)
    want = (halves * torch.rsqrt(halves.pow(2).mean(-1, keepdim=True) + 1e-6)).view(2, 5, 8) * norm.weight
    torch.testing.assert_close(norm(x), want, rtol=1e-5, atol=1e-6)


def test_norms_positions_embeddings_and_pool_equal_formulas():
    x = torch.randn(2, 5, 8)
    rms, _ = lower("norm", {"kind": "rms", "eps": 1e-6}, {"x": T(2, 5, 8)})
    want = rms.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(rms(x), want, rtol=1e-5, atol=1e-6)
    ln, _ = lower("norm", {"eps": 1e-12}, {"x": T(2, 5, 8)})
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(ln(x), (x - mu) / torch.sqrt(var + 1e-12) * ln.weight + ln.bias, rtol=1e-5, atol=1e-5)

    table = torch.from_numpy(sinusoids(9, 8))  # Vaswani et al. 3.5, element by element
    for pos in range(9):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    sin, _ = lower("positional", {"kind": "sinusoidal", "max_len": 9}, {"x": T(2, 5, 8)})
    torch.testing.assert_close(sin(x), x + table[:5])
    assert "table" not in sin.state_dict()
    # tensor2tensor / Whisper: [sin | cos] halves, frequencies 10000^(-i/(d/2 - 1)), the last exactly 1/10000
    halves = torch.from_numpy(sinusoids(9, 8, "halves"))
    for pos in range(9):
        for i in range(4):
            angle = pos / 10000 ** (i / 3)
            assert halves[pos, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert halves[pos, 4 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)
    stored, _ = lower("positional", {"kind": "sinusoidal", "sinusoid": "halves", "stored": True, "max_len": 9},
                      {"x": T(2, 5, 8)})
    with torch.no_grad():
        stored.init_parameters()
    assert not stored.weight.requires_grad and set(stored.state_dict()) == {"weight"}
    torch.testing.assert_close(stored(x), x + halves[:5])

    emb, _ = lower("embedding", {"vocab": 11, "dim": 8, "scale": True}, {"ids": T(2, 5, dtype="int64")})
    ids = torch.tensor([[1, 2, 3, 4, 5], [0, 10, 0, 10, 0]])
    torch.testing.assert_close(emb(ids), emb.weight[ids] * math.sqrt(8))
    gelu, _ = lower("gelu", {"approximate": "tanh"}, {"x": T(2, 5, 8)})
    want = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(gelu(x), want, rtol=1e-5, atol=1e-6)
    cls, _ = lower("pool", {"kind": "cls", "index": 1}, {"x": T(2, 5, 8)})
    mean, _ = lower("pool", {"kind": "mean"}, {"x": T(2, 5, 8)})
    torch.testing.assert_close(cls(x), x[:, 1])
    torch.testing.assert_close(mean(x), x.sum(1) / 5)


def naive_gqa(mod, x, keep, positions):
    """Grouped-query attention with explicit K/V repetition, rotary by complex multiplication (the
    interleaved-pairs form, converted from rotate-half by a permutation of the head's dims)."""
    b, n, _ = x.shape
    h, kv, hd = mod.heads, mod.kv_heads, mod.head_dim
    lin = lambda m, t: t @ m.weight.T + (m.bias if m.bias is not None else 0)  # noqa: E731
    q = lin(mod.q, x).view(b, n, h, hd).transpose(1, 2)
    k = lin(mod.k, x).view(b, n, kv, hd).transpose(1, 2)
    v = lin(mod.v, x).view(b, n, kv, hd).transpose(1, 2)
    r = mod.rotary.dims
    inv = mod.rotary.inv_freq

    def rot(t):
        half = r // 2
        z = torch.complex(t[..., :half], t[..., half:r])                      # rotate-half pairs (i, i + r/2)
        ang = positions[:, None, :, None].float() * inv
        z = z * torch.polar(torch.ones_like(ang), ang)
        return torch.cat([z.real, z.imag, t[..., r:]], dim=-1)
    q, k = rot(q), rot(k)
    k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(~keep, float("-inf"))
    y = torch.softmax(scores, -1) @ v
    return lin(mod.o, y.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize("window", [None, 3])
def test_grouped_query_rotary_window_attention_equals_naive(window):
    attrs = {"heads": 6, "kv_heads": 2, "causal": True, "rope": True, "rope_theta": 500.0, "rope_dims": 2,
             "window": window, "o_bias": False}
    mod, _ = lower("attention", attrs, {"x": T(2, 7, 24)})
    x = torch.randn(2, 7, 24)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8, 9]])
    i, j = torch.arange(7)[:, None], torch.arange(7)[None]
    keep = (j <= i) & ((j > i - window) if window else True)
    torch.testing.assert_close(mod(x, positions=positions), naive_gqa(mod, x, keep[None, None], positions),
                               rtol=1e-5, atol=1e-5)


def test_mul_and_activation_by_name():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mul, _ = lower("mul", {}, {"xs0": T(2, 3, 4), "xs1": T(2, 3, 4)})
    torch.testing.assert_close(mul(a, b), a * b)
    silu, _ = lower("activation", {"kind": "silu"}, {"x": T(2, 3, 4)})
    torch.testing.assert_close(silu(a), a * torch.sigmoid(a))
    gelu, _ = lower("activation", {"kind": "gelu_tanh"}, {"x": T(2, 3, 4)})
    torch.testing.assert_close(gelu(a), torch.nn.functional.gelu(a, approximate="tanh"))
