"""Language gaps closed in one round, each against torch.nn: `conv1d`'s padding modes (reflect, replicate,
circular; `conv2d`'s are in test_conv2d.py) as torch.nn.Conv1d's, forward, gradients and ONNX Runtime at two
lengths (a symbolic T); what a padding mode can't take from a known input refused at file:line:col (GF317), and
a padded causal convolution refused for step-by-step decoding (GF293). `linear`'s `weight_norm: AXIS` against
torch.nn.utils.parametrizations.weight_norm (its state-dict names through a map's renames) and the old
torch.nn.utils.weight_norm: count, init, forward, gradients, ONNX Runtime; on a tied linear GF318; left whole by
the tensor-parallel plan."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import graphformer  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.frontend.check import check_file  # noqa: E402
from parity import assert_close, ort_session, randomize  # noqa: E402


def write(tmp_path, text: str, name: str = "case.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def flow(a: dict) -> str:
    return ", ".join(f"{k}: {str(v).lower()}" for k, v in a.items())


def grads_equal(model, ref, x, got, want, names: dict, what: str) -> None:
    """Backward of the same random cotangent through both: the input's and each named parameter's gradient."""
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(1))
    x2 = x[1]
    (got * g).sum().backward()
    (want * g).sum().backward()
    assert_close(x[0].grad, x2.grad, f"{what} grad x")
    params, ref_params = dict(model.named_parameters()), dict(ref.named_parameters())
    for ours_name, ref_name in names.items():
        assert_close(params[ours_name].grad, ref_params[ref_name].grad, f"{what} grad {ours_name}")


# ---------------------------------------------------------------- conv1d padding modes

CONV1D_MODES = [
    dict(out=6, kernel=3, padding=1, padding_mode="reflect"),
    dict(out=4, kernel=5, stride=2, padding=4, dilation=1, padding_mode="replicate", groups=2),
    dict(out=6, kernel=3, padding=3, dilation=2, padding_mode="circular", bias=False),
    dict(out=4, kernel=4, padding=2, padding_mode="reflect", drop_last=1),   # Wav2Vec2's SamePad, mirrored
    dict(out=4, kernel=2, padding=1, padding_mode="circular", drop_last=1),
]


@pytest.mark.parametrize("a", CONV1D_MODES, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_conv1d_padding_modes_equal_torch_and_onnx_runtime(tmp_path, a):
    c = 4
    ref = randomize(nn.Conv1d(c, a["out"], a["kernel"], a.get("stride", 1), a["padding"], a.get("dilation", 1),
                              a.get("groups", 1), a.get("bias", True), a["padding_mode"]))
    drop = a.get("drop_last", 0)
    path = write(tmp_path, f"graphformer: 1\nname: c1\ndims: {{B: 2, T: 9}}\ninputs:\n  x: {{shape: [B, {c}, T]}}\n"
                           f"nodes:\n  conv: {{op: conv1d, {flow(a)}}}\noutputs: {{y: conv}}\n")
    model = graphformer.build(path, seed=0).eval()
    model.load_state_dict({f"conv.{k}": v for k, v in ref.state_dict().items()})

    def reference(x):
        y = ref(x)
        return y[..., :y.shape[-1] - drop] if drop else y

    for t in (9, 14):                                     # any length: T is a symbol
        x = torch.randn(2, c, t, generator=torch.Generator().manual_seed(t), requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        got, want = model(x=x)["y"], reference(x2)
        assert_close(got, want, f"conv1d {a} T={t}")
        grads_equal(model, ref, (x, x2), got, want, {"conv.weight": "weight"}, f"conv1d {a}")
        model.zero_grad(), ref.zero_grad()
    sess = ort_session(load(path), model)
    for b, t in ((2, 9), (1, 14)):
        x = torch.randn(b, c, t, generator=torch.Generator().manual_seed(t + 1))
        (y,) = sess.run(["y"], {"x": x.numpy()})
        with torch.no_grad():
            assert_close(torch.from_numpy(y), reference(x), f"onnx conv1d {a} T={t}")


# ---------------------------------------------------------------- what a padding mode can't take

MODE_SPEC = """graphformer: 1
name: case
dims: {B: 2}
inputs:
  image: {shape: [B, 3, 4, 6]}
  audio: {shape: [B, 3, 5]}
nodes:
LINE
outputs: {y: conv}
"""


@pytest.mark.parametrize("line,code", [
    ("  conv: {op: conv2d, in: image, out: 8, kernel: 5, padding: [4, 2], padding_mode: reflect}", "GF317"),
    ("  conv: {op: conv2d, in: image, out: 8, kernel: 5, padding: [1, 6], padding_mode: reflect}", "GF317"),
    ("  conv: {op: conv2d, in: image, out: 8, kernel: 9, padding: [5, 4], padding_mode: circular}", "GF317"),
    ("  conv: {op: conv2d, in: image, out: 8, kernel: 4, padding: same, padding_mode: reflect}", "GF317"),  # 2 after
    ("  conv: {op: conv1d, in: audio, out: 8, kernel: 3, padding: 5, padding_mode: reflect}", "GF317"),
    ("  conv: {op: conv1d, in: audio, out: 8, kernel: 3, padding: 1, padding_mode: mirror}", "GF102"),
])
def test_padding_mode_refusals_point_at_the_mode(tmp_path, line, code):
    path = write(tmp_path, MODE_SPEC.replace("LINE", line).replace("[B, 3, 4, 6]", "[B, 3, 4, 2]"))
    diags = [d for d in check_file(path).diagnostics if d.severity == "error"]
    assert [d.code for d in diags] == [code], [d.message for d in diags]
    col = line.index("padding_mode: ") + len("padding_mode: ") + 1          # the caret on the mode
    assert (diags[0].span.line, diags[0].span.col) == (8, col)


@pytest.mark.parametrize("mode,padding", [("reflect", [3, 5]), ("circular", [4, 6]), ("replicate", [9, 9])])
def test_padding_mode_takes_what_torch_takes(tmp_path, mode, padding):
    """Up to torch's bound (reflect: less than the side, circular: at most it; replicate: any) it checks and
    equals torch.nn.Conv2d."""
    line = f"  conv: {{op: conv2d, in: image, out: 2, kernel: 3, padding: {padding}, padding_mode: {mode}}}"
    path = write(tmp_path, MODE_SPEC.replace("LINE", line).replace("  audio: {shape: [B, 3, 5]}\n", ""))
    model = graphformer.build(path, seed=0)
    ref = randomize(nn.Conv2d(3, 2, 3, padding=tuple(padding), padding_mode=mode))
    model.load_state_dict({f"conv.{k}": v for k, v in ref.state_dict().items()})
    x = torch.randn(2, 3, 4, 6)
    with torch.no_grad():
        assert_close(model(image=x)["y"], ref(x), f"{mode} {padding}")


def test_a_padded_causal_convolution_does_not_decode(tmp_path):
    """A causal conv1d pads the left with the kernel's reach; padded with its own frames instead of zeros, a
    step could not carry what the first steps read: generation's plan refuses it (GF293)."""
    from graphformer.analysis.decoding import plan_decoder
    from graphformer.base.diagnostics import SpecError
    path = write(tmp_path, """graphformer: 1
name: causal
params: {vocab: 11, d: 8}
dims: {B: 2, n: 6}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d}
  t1:     {op: transpose}
  conv:   {op: conv1d, out: d, kernel: 3, padding: 2, drop_last: 2, groups: d, padding_mode: replicate}
  t2:     {op: transpose}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
""")
    with pytest.raises(SpecError) as err:
        plan_decoder(load(path).ir)
    assert err.value.diagnostics[0].code == "GF293"
    assert "padding_mode: replicate" in err.value.diagnostics[0].message


# ---------------------------------------------------------------- linear with weight_norm

def wn_spec(axis: int, bias: bool) -> str:
    """Two weight-normalised linears around a GELU, and a map from torch.nn.Sequential(weight_norm(Linear),
    GELU, weight_norm(Linear)) that renames parametrizations' `original0/1` to weight_g / weight_v."""
    rules = "".join(f"      - {{from: {i}.{p}, to: {ours}.{p}}}\n" for i, ours in ((0, "up"), (2, "down"))
                    for p in ("weight_g", "weight_v", "bias") if bias or (ours, p) != ("up", "bias"))
    return f"""graphformer: 1
name: wn
dims: {{B: 2, n: 5}}
inputs:
  x: {{shape: [B, n, 6]}}
nodes:
  up:   {{op: linear, out: 7, weight_norm: {axis}{"" if bias else ", bias: false"}}}
  act:  {{op: gelu}}
  down: {{op: linear, out: 6, weight_norm: {axis}}}
outputs: {{y: down}}
weight_maps:
  torch:
    doc: torch.nn.utils.parametrizations.weight_norm's state-dict names
    renames:
      - {{from: parametrizations.weight.original0, to: weight_g}}
      - {{from: parametrizations.weight.original1, to: weight_v}}
    rules:
{rules}"""


@pytest.mark.parametrize("axis,bias", [(0, True), (1, False)])
def test_weight_normalised_linear_equals_torch(tmp_path, axis, bias):
    """Two weight-normalised linears against torch.nn.utils.parametrizations.weight_norm(nn.Linear, dim=AXIS),
    loaded through a map that renames its `parametrizations.weight.original0/1` to weight_g / weight_v: the
    count, forward, every parameter's gradient, ONNX Runtime at two sequence lengths."""
    from torch.nn.utils.parametrizations import weight_norm
    from graphformer.analysis.summary import total_params
    from graphformer.backends.torch.weights import load_weights
    ref = nn.Sequential(weight_norm(nn.Linear(6, 7, bias=bias), dim=axis), nn.GELU(),
                        weight_norm(nn.Linear(7, 6), dim=axis))
    randomize(ref)
    path = write(tmp_path, wn_spec(axis, bias))
    spec = load(path)
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters())
    assert spec.ir.param_shapes()["up.weight_g"] == ((7, 1) if axis == 0 else (1, 6))
    model = graphformer.build(spec, seed=0).eval()
    load_weights(model, ref.state_dict(), "torch", spec)
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    got, want = model(x=x)["y"], ref(x2)
    assert_close(got, want, f"weight-normed linear dim={axis}")
    names = {f"{ours}.{p}": f"{i}.parametrizations.weight.original{k}" for ours, i in (("up", 0), ("down", 2))
             for k, p in enumerate(("weight_g", "weight_v"))}
    grads_equal(model, ref, (x, x2), got, want, names, f"weight-normed linear dim={axis}")
    sess = ort_session(spec, model)
    for b, n in ((2, 5), (1, 9)):
        x = torch.randn(b, n, 6, generator=torch.Generator().manual_seed(n))
        (y,) = sess.run(["y"], {"x": x.numpy()})
        with torch.no_grad():
            assert_close(torch.from_numpy(y), ref(x), f"onnx weight-normed linear dim={axis} n={n}")


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
def test_weight_normalised_linear_initialises_as_torch(tmp_path):
    """g = ‖v‖ at init, so the weight starts equal to its direction (torch's weight_norm init); the state dict
    holds weight_g and weight_v, never `weight`; old-style torch.nn.utils.weight_norm's names load unchanged."""
    path = write(tmp_path, wn_spec(0, True))
    model = graphformer.build(path, seed=3)
    assert set(model.state_dict()) == {f"{m}.{p}" for m in ("up", "down") for p in ("weight_g", "weight_v", "bias")}
    v, g = model.up.weight_v, model.up.weight_g
    assert_close(g, v.norm(dim=1, keepdim=True), "g = ‖v‖")
    old = torch.nn.utils.weight_norm(nn.Linear(6, 7), dim=0)      # stores weight_g / weight_v itself
    randomize(old)
    model.up.load_state_dict(old.state_dict())
    x = torch.randn(3, 6)
    with torch.no_grad():
        assert_close(model.up(x), old(x), "torch.nn.utils.weight_norm's names")


def test_weight_norm_on_a_tied_linear_is_refused_at_the_attribute(tmp_path):
    line = "  logits: {op: linear, out: vocab, tied: tok, weight_norm: 0}"
    path = write(tmp_path, "graphformer: 1\nname: t\nparams: {vocab: 50, d: 16}\ndims: {B: 2, n: 8}\ninputs:\n"
                           "  tokens: {shape: [B, n], dtype: int64}\nnodes:\n"
                           "  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d}\n"
                           f"{line}\noutputs: {{logits: logits}}\n")
    diags = [d for d in check_file(path).diagnostics if d.severity == "error"]
    assert [d.code for d in diags] == ["GF318"]
    assert (diags[0].span.line, diags[0].span.col) == (9, line.index("weight_norm: ") + len("weight_norm: ") + 1)


def test_a_weight_normalised_linear_stays_replicated_under_tensor_parallelism(tmp_path):
    """torch's tensor-parallel styles split nn.Linear's `weight`; a weight-normalised pair is left whole."""
    from graphformer.analysis.tp_plan import derive
    spec = load(write(tmp_path, wn_spec(0, True)))
    plan = {s.module: s for s in derive(spec, 1)}
    assert plan["up"].style == plan["down"].style == "replicate"
    assert "weight-normalised" in plan["up"].why
