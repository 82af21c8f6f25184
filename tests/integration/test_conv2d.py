"""`conv2d`, `conv_transpose2d` and `batch_norm` against torch.nn.Conv2d, ConvTranspose2d and BatchNorm1d/2d:
outputs and gradients (pairs [h, w], `padding: same` and padding modes included), BatchNorm's running statistics after
training steps (momentum, the cumulative average, batch statistics only), eval mode on loaded running
statistics, weights loaded by plain renames through a weight map, and ONNX Runtime equal to torch at two image
sizes (symbolic H, W) and batch sizes; pooling, adaptive pooling (and where its export is refused, GF298) and
interpolation against torch and ONNX Runtime."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.backends.torch.weights import load_weights  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from parity import assert_close, randomize  # noqa: E402

CONV_CASES = [
    dict(out=8, kernel=3, padding=1),
    dict(out=6, kernel=3, stride=2, padding=1, dilation=2, groups=3),
    dict(out=12, kernel=3, padding=1, groups=6),                     # depthwise, two per channel
    dict(out=5, kernel=4, stride=3, bias=False),
    dict(out=8, kernel=7, stride=4, padding=3),                      # SegFormer's first patch embedding
    dict(out=6, kernel=[3, 5], stride=[2, 1], padding=[1, 2], dilation=[1, 2]),   # pairs [h, w]
    dict(out=6, kernel=[4, 3], padding="same", dilation=[1, 2]),     # an even extent: one more zero after
    dict(out=6, kernel=7, padding="same", groups=6),                 # ConvNeXt's depthwise conv
    dict(out=8, kernel=3, padding=1, padding_mode="reflect"),        # padding modes, as torch.nn.Conv2d's
    dict(out=6, kernel=[3, 5], stride=[2, 1], padding=[2, 1], padding_mode="replicate", groups=3),
    dict(out=6, kernel=[4, 3], padding="same", dilation=[1, 2], padding_mode="circular"),
    dict(out=4, kernel=5, stride=2, padding=[0, 4], padding_mode="circular", bias=False),
    dict(out=4, kernel=[2, 3], padding="same", padding_mode="reflect"),
]


def torch_conv(c: int, a: dict) -> nn.Conv2d:
    return nn.Conv2d(c, a["out"], a["kernel"], a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1),
                     a.get("groups", 1), a.get("bias", True), a.get("padding_mode", "zeros"))


def spec_text(c: int, nodes: str, outputs: str, rules: str = "") -> str:
    return (f"graphformer: 1\nname: cnn\ndims: {{B: 2, H: 13, W: 11}}\ninputs:\n  x: {{shape: [B, {c}, H, W]}}\n"
            f"nodes:\n{nodes}outputs: {outputs}\n" + (f"weight_maps:\n  torch:\n{rules}" if rules else ""))


def write(tmp_path, text: str, name: str = "cnn.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def flow(a: dict) -> str:
    return "{" + ", ".join(f"{k}: {str(v).lower()}" for k, v in a.items()) + "}"


@pytest.mark.parametrize("a", CONV_CASES, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_conv2d_equals_torch(tmp_path, a):
    c = 6
    ref = randomize(torch_conv(c, a))
    path = write(tmp_path, spec_text(c, f"  conv: {{op: conv2d, {flow(a)[1:-1]}}}\n", "{y: conv}"))
    model = graphformer.build(path, seed=0)
    model.load_state_dict({f"conv.{k}": v for k, v in ref.state_dict().items()})
    assert total_params(load(path).ir) == sum(p.numel() for p in ref.parameters())
    for h, w in ((13, 11), (16, 9)):                 # any size: H and W are symbols
        x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(h), requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        got, want = model(x=x)["y"], ref(x2)
        assert_close(got, want, f"conv2d {a} {h}×{w}")
        g = torch.randn(want.shape, generator=torch.Generator().manual_seed(1))
        (got * g).sum().backward()
        (want * g).sum().backward()
        assert_close(x.grad, x2.grad, "grad x")
        assert_close(model.conv.weight.grad, ref.weight.grad, "grad weight")
        model.zero_grad(), ref.zero_grad()
    sess = _onnx_session(path, model)
    for b, h, w in ((2, 13, 11), (1, 16, 9)):
        x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(h))
        (y,) = sess.run(["y"], {"x": x.numpy()})
        with torch.no_grad():
            assert_close(torch.from_numpy(y), ref(x), f"onnx conv2d {a} {h}×{w}")


CONV_T_CASES = [
    dict(out=8, kernel=2, stride=2),                                              # U-Net's up-convolution
    dict(out=6, kernel=3, stride=2, padding=1, output_padding=1),                 # undoes a 3×3/2 conv's size
    dict(out=6, kernel=[3, 2], stride=[2, 3], padding=[1, 0], output_padding=[1, 2], dilation=[1, 2], groups=2),
    dict(out=4, kernel=4, stride=1, padding=2, dilation=2, output_padding=1, bias=False),   # ≥ ORT's stride bound
    dict(out=4, kernel=3, stride=[3, 1], padding=[0, 1], dilation=[1, 3], output_padding=2),  # bias-only rows
]


@pytest.mark.parametrize("a", CONV_T_CASES, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_conv_transpose2d_equals_torch_and_onnx_runtime(tmp_path, a):
    c = 6
    ref = randomize(nn.ConvTranspose2d(c, a["out"], a["kernel"], a.get("stride", 1), a.get("padding", 0),
                                       a.get("output_padding", 0), a.get("groups", 1), a.get("bias", True),
                                       a.get("dilation", 1)))
    path = write(tmp_path, spec_text(c, f"  up: {{op: conv_transpose2d, {flow(a)[1:-1]}}}\n", "{y: up}"))
    model = graphformer.build(path, seed=0)
    model.load_state_dict({f"up.{k}": v for k, v in ref.state_dict().items()})   # torch's layout, plain renames
    assert total_params(load(path).ir) == sum(p.numel() for p in ref.parameters())
    sess = _onnx_session(path, model)
    for h, w in ((13, 11), (4, 9)):                 # any size: H and W are symbols
        x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(h), requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        got, want = model(x=x)["y"], ref(x2)
        assert_close(got, want, f"conv_transpose2d {a} {h}×{w}")
        g = torch.randn(want.shape, generator=torch.Generator().manual_seed(1))
        (got * g).sum().backward(), (want * g).sum().backward()
        assert_close(x.grad, x2.grad, "grad x")
        assert_close(model.up.weight.grad, ref.weight.grad, "grad weight")
        model.zero_grad(), ref.zero_grad()
        (y,) = sess.run(["y"], {"x": x.detach().numpy()})
        assert_close(torch.from_numpy(y), want, f"onnx conv_transpose2d {a} {h}×{w}")


# ---------------------------------------------------------------- batch norm

NET = """\
  conv: {op: conv2d, out: 8, kernel: 3, padding: 1, bias: false}
  bn:   {op: batch_norm, BN}
"""
# a reference's state dict (nn.Sequential: 0 = conv, 1 = bn) mapped by plain renames; the step counter ignored
RULES = """\
    rules:
      - {from: 0.weight, to: conv.weight}
      - {from: "1.{w}", to: "bn.{w}"}
    ignore: [1.num_batches_tracked]
"""


def bn_pair(tmp_path, bn: dict):
    attrs = ", ".join(f"{k}: {'null' if v is None else str(v).lower()}" for k, v in bn.items()) or "eps: 1e-5"
    names = [n for n, on in (("weight", bn.get("affine", True)), ("bias", bn.get("affine", True)),
                             ("running_mean", bn.get("track_running_stats", True)),
                             ("running_var", bn.get("track_running_stats", True))) if on]
    rules = RULES.replace('      - {from: "1.{w}", to: "bn.{w}"}\n',
                          "".join(f"      - {{from: 1.{n}, to: bn.{n}}}\n" for n in names))
    if not bn.get("track_running_stats", True):
        rules = rules.replace("    ignore: [1.num_batches_tracked]\n", "")
    path = write(tmp_path, spec_text(4, NET.replace("BN", attrs), "{y: bn}", rules))
    ref = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False),
                        nn.BatchNorm2d(8, eps=bn.get("eps", 1e-5), momentum=bn.get("momentum", 0.1),
                                       affine=bn.get("affine", True),
                                       track_running_stats=bn.get("track_running_stats", True)))
    randomize(ref)
    if bn.get("track_running_stats", True):
        with torch.no_grad():   # running statistics that are not the initial ones
            ref[1].running_mean.uniform_(-1, 1, generator=torch.Generator().manual_seed(5))
            ref[1].running_var.uniform_(0.5, 2, generator=torch.Generator().manual_seed(6))
    model = graphformer.build(path, seed=0)
    load_weights(model, ref.state_dict(), "torch")
    return path, model, ref


BN_CASES = [{}, {"momentum": 0.3, "eps": 1e-3}, {"momentum": None}, {"affine": False},
            {"track_running_stats": False}]


@pytest.mark.parametrize("bn", BN_CASES, ids=lambda b: "-".join(f"{k}{v}" for k, v in b.items()) or "default")
def test_batch_norm_trains_and_evaluates_as_torch(tmp_path, bn):
    path, model, ref = bn_pair(tmp_path, bn)
    assert total_params(load(path).ir) == sum(p.numel() for p in ref.parameters())
    opt_ours = torch.optim.SGD(model.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    model.train(), ref.train()
    for step in range(3):                                            # training: batch statistics, updated
        x = torch.randn(3, 4, 7, 6, generator=torch.Generator().manual_seed(step))
        got, want = model(x=x)["y"], ref(x)
        assert_close(got, want, f"train step {step}")
        g = torch.randn(want.shape, generator=torch.Generator().manual_seed(10 + step))
        (got * g).sum().backward(), (want * g).sum().backward()
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            assert_close(p.grad, q.grad, f"grad {name} step {step}")
        opt_ours.step(), opt_ref.step(), opt_ours.zero_grad(), opt_ref.zero_grad()
        if bn.get("track_running_stats", True):
            assert_close(model.bn.running_mean, ref[1].running_mean, f"running_mean step {step}")
            assert_close(model.bn.running_var, ref[1].running_var, f"running_var step {step}")
            assert int(model.bn.num_batches_tracked) == int(ref[1].num_batches_tracked) == step + 1
    model.eval(), ref.eval()
    x = torch.randn(2, 4, 5, 9, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert_close(model(x=x)["y"], ref(x), "eval")                # running statistics (or batch ones)


def test_state_dict_holds_the_running_statistics_under_torchs_names(tmp_path):
    _, model, ref = bn_pair(tmp_path, {})
    ours, theirs = model.state_dict(), ref.state_dict()
    assert set(ours) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"}
    for k in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(ours[f"bn.{k}"], theirs[f"1.{k}"])
    assert [n for n, _ in model.named_parameters()] == ["conv.weight", "bn.weight", "bn.bias"]


@pytest.mark.parametrize("shape", [(5, 6), (4, 6, 7)], ids=["rank2", "rank3"])
def test_batch_norm_1d_equals_torch(tmp_path, shape):
    dims = ", ".join(["B", "6", "t"][:len(shape)])
    text = (f"graphformer: 1\nname: bn1d\ndims: {{B: 2, t: 7}}\ninputs:\n  x: {{shape: [{dims}]}}\n"
            "nodes:\n  bn: {op: batch_norm, momentum: 0.2}\noutputs: {y: bn}\n")
    model = graphformer.build(write(tmp_path, text), seed=0)
    ref = randomize(nn.BatchNorm1d(6, momentum=0.2))
    model.load_state_dict({f"bn.{k}": v for k, v in ref.state_dict().items() if k != "num_batches_tracked"})
    model.train(), ref.train()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    assert_close(model(x=x)["y"], ref(x), "bn1d train")
    assert_close(model.bn.running_var, ref.running_var, "bn1d running_var")
    model.eval(), ref.eval()
    with torch.no_grad():
        assert_close(model(x=x)["y"], ref(x), "bn1d eval")


@pytest.mark.parametrize("bn", [{}, {"affine": False}, {"track_running_stats": False}],
                         ids=["default", "no-affine", "batch-stats"])
def test_onnx_runtime_equals_torch(tmp_path, bn):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    path, model, ref = bn_pair(tmp_path, bn)
    text = open(path).read().replace("outputs: {y: bn}", "  dw: {op: conv2d, out: 8, kernel: 3, stride: 2, "
                                     "padding: 2, dilation: 2, groups: 8}\noutputs: {y: dw}")
    trained = model                                                  # holds the reference's weights and statistics
    model = graphformer.build(write(tmp_path, text, "net.yaml"), seed=0).eval()
    model.load_state_dict({**model.state_dict(), **trained.state_dict()})
    with torch.no_grad():
        model.dw.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(4))
    exported = to_onnx(load(str(tmp_path / "net.yaml")), model)
    onnx.checker.check_model(exported, full_check=True)
    sess = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    for b, h, w in ((1, 13, 11), (3, 8, 15)):
        x = torch.randn(b, 4, h, w, generator=torch.Generator().manual_seed(h))
        (y,) = sess.run(["y"], {"x": x.numpy()})
        with torch.no_grad():
            assert_close(torch.from_numpy(y), model(x=x)["y"], f"onnx {bn} B={b} {h}×{w}")


# ---------------------------------------------------------------- resampling: pool2d and interpolate

POOL_CASES = [
    dict(kind="max", kernel=3, stride=2, padding=1),                                   # a ResNet stem
    dict(kind="max", kernel=2),
    dict(kind="max", kernel=3, stride=2, ceil_mode=True),
    dict(kind="max", kernel=2, stride=3, padding=1, ceil_mode=True),                 # a window in the padding
    dict(kind="avg", kernel=3, stride=2, padding=1),
    dict(kind="avg", kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kind="avg", kernel=2, stride=3, padding=1, ceil_mode=True),
    dict(kind="max", kernel=[3, 2], stride=[2, 1], padding=[1, 0]),                    # pairs [h, w]
    dict(kind="max", kernel=3, stride=2, padding=1, dilation=2),
    dict(kind="max", kernel=[2, 3], stride=[1, 2], padding=[1, 1], dilation=[2, 1], ceil_mode=True),
    dict(kind="avg", kernel=[3, 1], stride=[2, 1], padding=[1, 0], count_include_pad=False),
    dict(kind="avg", kernel=[2, 4], stride=[3, 2], padding=[1, 2], ceil_mode=True),
]


def torch_pool(a: dict) -> nn.Module:
    stride, padding, ceil = a.get("stride"), a.get("padding", 0), a.get("ceil_mode", False)
    if a["kind"] == "max":
        return nn.MaxPool2d(a["kernel"], stride, padding, a.get("dilation", 1), ceil_mode=ceil)
    return nn.AvgPool2d(a["kernel"], stride, padding, ceil_mode=ceil, count_include_pad=a.get("count_include_pad", True))


def _onnx_session(path, model):
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort
    from graphformer.backends.onnx import to_onnx
    exported = to_onnx(load(path), model)
    onnx.checker.check_model(exported, full_check=True)
    return ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("a", POOL_CASES, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_pool2d_equals_torch_and_onnx_runtime(tmp_path, a):
    ref = torch_pool(a)
    path = write(tmp_path, spec_text(3, f"  pool: {{op: pool2d, {flow(a)[1:-1]}}}\n", "{y: pool}"))
    model = graphformer.build(path, seed=0)
    sess = _onnx_session(path, model)
    for h, w in ((13, 11), (16, 9), (7, 8)):          # any size: H and W are symbols
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h), requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        got, want = model(x=x)["y"], ref(x2)
        assert_close(got, want, f"pool2d {a} {h}×{w}")
        (got * want.detach()).sum().backward()
        (want * want.detach()).sum().backward()
        assert_close(x.grad, x2.grad, "grad x")
        (y,) = sess.run(["y"], {"x": x.detach().numpy()})
        assert_close(torch.from_numpy(y), want, f"onnx pool2d {a} {h}×{w}")


INTERP_CASES = [   # (attrs, target): target (h, w) for `size`, "like" for the `like` input, an int for `scale`
    (dict(mode="nearest"), "like"),
    (dict(mode="bilinear"), "like"),                                               # SegFormer's decode head
    (dict(mode="bilinear", align_corners=True), "like"),
    (dict(mode="bicubic"), "like"),
    (dict(mode="bicubic", align_corners=True), "like"),
    (dict(mode="nearest", size=[5, 17]), (5, 17)),
    (dict(mode="bilinear", size=[9, 4]), (9, 4)),
    (dict(mode="nearest", scale=3), 3),
    (dict(mode="bilinear", scale=2), 2),
    (dict(mode="bicubic", scale=2, align_corners=True), 2),
]


@pytest.mark.parametrize("a,target", INTERP_CASES, ids=lambda c: str(c))
def test_interpolate_equals_torch_and_onnx_runtime(tmp_path, a, target):
    """Against F.interpolate, forward and backward; ONNX Runtime at sizes where Resize's own nearest rounding
    would pick another pixel than torch (14 → 2, 4 → 6, 20 → 7)."""
    import torch.nn.functional as F
    ins = "{x: x, like: g}" if target == "like" else "x"
    text = spec_text(3, f"  up: {{op: interpolate, in: {ins}, {flow(a)[1:-1]}}}\n", "{y: up}")
    text = text.replace("dims: {B: 2, H: 13, W: 11}", "dims: {B: 2, H: 13, W: 11, h: 5, w: 4}")
    text = text.replace("inputs:\n", "inputs:\n  g: {shape: [B, 1, h, w]}\n")
    path = write(tmp_path, text)
    model = graphformer.build(path, seed=0)
    sess = _onnx_session(path, model)
    mode, corners = a["mode"], a.get("align_corners") if a["mode"] != "nearest" else None
    for (h, w), like in (((13, 11), (5, 4)), ((14, 4), (2, 6)), ((20, 3), (7, 8))):
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h), requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        g = torch.zeros(2, 1, *like)
        kw = (dict(size=like) if target == "like" else dict(size=target) if isinstance(target, tuple)
              else dict(scale_factor=target))
        want = F.interpolate(x2, mode=mode, align_corners=corners, **kw)
        got = model(x=x, g=g)["y"]
        assert_close(got, want, f"interpolate {a} {h}×{w}")
        (got * want.detach()).sum().backward()
        (want * want.detach()).sum().backward()
        assert_close(x.grad, x2.grad, "grad x")
        (y,) = sess.run(["y"], {"x": x.detach().numpy(), "g": g.numpy()})
        assert_close(torch.from_numpy(y), want, f"onnx interpolate {a} {h}×{w}")


# ---------------------------------------------------------------- adaptive pooling

@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("output", [[3, 5], 1, 7])
def test_adaptive_pool2d_equals_torch(tmp_path, kind, output):
    """Against AdaptiveAvgPool2d / AdaptiveMaxPool2d, forward and backward, at sizes the output divides, does
    not divide, and exceeds (rows repeat); ONNX Runtime for a global pool at any (symbolic) size."""
    ref = (nn.AdaptiveAvgPool2d if kind == "avg" else nn.AdaptiveMaxPool2d)(output)
    path = write(tmp_path, spec_text(3, f"  pool: {{op: pool2d, kind: {kind}, output: {output}}}\n", "{y: pool}"))
    model = graphformer.build(path, seed=0)
    for h, w in ((13, 11), (6, 15), (3, 4)):
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h), requires_grad=True)
        x2 = x.detach().clone().requires_grad_(True)
        got, want = model(x=x)["y"], ref(x2)
        assert_close(got, want, f"adaptive {kind} {output} {h}×{w}")
        (got * want.detach()).sum().backward(), (want * want.detach()).sum().backward()
        assert_close(x.grad, x2.grad, "grad x")
    if output == 1:
        sess = _onnx_session(path, model)
        for h, w in ((13, 11), (6, 15)):
            x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h))
            (y,) = sess.run(["y"], {"x": x.numpy()})
            assert_close(torch.from_numpy(y), ref(x), f"onnx global {kind} {h}×{w}")


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_adaptive_pool2d_exports_where_the_output_divides_the_input(tmp_path, kind):
    from graphformer.base.diagnostics import SpecError
    from graphformer.backends.onnx import to_onnx
    ref = (nn.AdaptiveAvgPool2d if kind == "avg" else nn.AdaptiveMaxPool2d)((3, 2))
    text = spec_text(3, f"  pool: {{op: pool2d, kind: {kind}, output: [3, 2]}}\n", "{y: pool}")
    path = write(tmp_path, text.replace("[B, 3, H, W]", "[B, 3, 12, 8]"))
    model = graphformer.build(path, seed=0)
    sess = _onnx_session(path, model)                     # 12 × 8 → 3 × 2: a plain 4 × 4 pool
    x = torch.randn(2, 3, 12, 8, generator=torch.Generator().manual_seed(0))
    (y,) = sess.run(["y"], {"x": x.numpy()})
    assert_close(torch.from_numpy(y), ref(x), f"onnx adaptive {kind}")
    for shape in ("[B, 3, 13, 8]", "[B, 3, H, W]"):        # 3 ∤ 13, or sizes only known at run time: refused
        path = write(tmp_path, text.replace("[B, 3, H, W]", shape), "refused.yaml")
        with pytest.raises(SpecError) as err:
            to_onnx(load(path), graphformer.build(path, seed=0))
        assert [d.code for d in err.value.diagnostics] == ["GF298"]
        assert err.value.diagnostics[0].span.line == 7
