"""The conv family (graphformer/ops/conv.py) without torch: the shape rules of conv2d, conv_transpose2d,
batch_norm, interpolate and pool2d (table-driven: symbolic sizes, pairs [h, w], `padding: same`, adaptive
pooling, every diagnostic), pooling's output size against torch's formula, adaptive windows, parameters,
FLOPs, and running statistics kept out of the parameter count; the diagnostics at file:line:col through
`check`; diagram labels."""
from __future__ import annotations

import pytest

from graphformer.analysis.budget import budget
from graphformer.analysis.summary import total_params
from graphformer.frontend.api import load
from graphformer.frontend.check import check_file
from graphformer.ops import REGISTRY
from shape_cases import T, check_case

CASES = [
    # op, attrs, inputs, expected shape (tuple of str) or error code
    ("conv2d", {"out": 8, "kernel": 3, "padding": 1}, {"x": T("B", 4, 10, 12)}, ("B", "8", "10", "12")),
    ("conv2d", {"out": 8, "kernel": 7, "stride": 4, "padding": 3}, {"x": T("B", 3, 45, 45)}, ("B", "8", "12", "12")),
    ("conv2d", {"out": 6, "kernel": 3, "stride": 2, "padding": 1, "dilation": 2, "groups": 3},
     {"x": T("B", 6, 11, 9)}, ("B", "6", "5", "4")),
    # symbolic sides: torch's formula, kept symbolic
    ("conv2d", {"out": 8, "kernel": 7, "stride": 4, "padding": 3}, {"x": T("B", 3, "H", "W")},
     ("B", "8", "(H - 1) // 4 + 1", "(W - 1) // 4 + 1")),
    ("conv2d", {"out": 8, "kernel": 3, "padding": 1, "groups": 8}, {"x": T("B", 8, "H", "W")}, ("B", "8", "H", "W")),
    ("conv2d", {"out": 8, "kernel": 8, "stride": 8}, {"x": T("B", 3, 5, 16)}, "GF276"),    # 5 rows < kernel
    ("conv2d", {"out": 8, "kernel": 3, "dilation": 4}, {"x": T("B", 3, 16, 8)}, "GF276"),  # width: extent 9 > 8
    ("conv2d", {"out": 8, "kernel": 3, "groups": 3}, {"x": T("B", 4, 8, 8)}, "GF267"),     # groups ∤ channels
    ("conv2d", {"out": 8, "kernel": 3, "groups": 3}, {"x": T("B", 3, 8, 8)}, "GF267"),     # groups ∤ out
    ("conv2d", {"out": 8, "kernel": 0}, {"x": T("B", 3, 8, 8)}, "GF102"),
    ("conv2d", {"out": 8, "kernel": 3, "stride": 0}, {"x": T("B", 3, 8, 8)}, "GF102"),
    ("conv2d", {"out": 0, "kernel": 3}, {"x": T("B", 3, 8, 8)}, "GF102"),
    ("conv2d", {"out": 8, "kernel": 3, "padding": -1}, {"x": T("B", 3, 8, 8)}, "GF102"),
    ("conv2d", {"out": 8, "kernel": 3}, {"x": T("B", 8, 8)}, "GF121"),                     # not [B, C, H, W]
    ("conv2d", {"out": 8, "kernel": 3}, {"x": T("B", "C", 8, 8)}, "GF124"),                # channels unknown
    ("conv2d", {"out": 8, "kernel": 3}, {"x": T("B", 3, 8, 8, dtype="int64")}, "GF122"),
    # pairs [h, w] and `padding: same`
    ("conv2d", {"out": 4, "kernel": [3, 1], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 3]},
     {"x": T("B", 4, "H", 10)}, ("B", "4", "(H - 1) // 2 + 1", "10")),
    ("conv2d", {"out": 4, "kernel": [4, 3], "padding": "same", "dilation": [1, 2]}, {"x": T("B", 4, "H", "W")},
     ("B", "4", "H", "W")),
    ("conv2d", {"out": 4, "kernel": 3, "stride": [1, 2], "padding": "same"}, {"x": T("B", 4, 8, 8)}, "GF295"),
    ("conv2d", {"out": 4, "kernel": [3, 0]}, {"x": T("B", 4, 8, 8)}, "GF102"),
    ("conv2d", {"out": 4, "kernel": 3, "padding": [0, -1]}, {"x": T("B", 4, 8, 8)}, "GF102"),
    ("conv2d", {"out": 4, "kernel": [1, 9]}, {"x": T("B", 4, 8, 8)}, "GF276"),               # width 8 < 9
    # conv_transpose2d: torch's output size, symbolic
    ("conv_transpose2d", {"out": 8, "kernel": 2, "stride": 2}, {"x": T("B", 4, "H", "W")}, ("B", "8", "2*H", "2*W")),
    ("conv_transpose2d", {"out": 6, "kernel": [3, 2], "stride": [2, 3], "padding": 1, "output_padding": [1, 0],
                          "dilation": [1, 2], "groups": 2}, {"x": T("B", 4, 5, "W")}, ("B", "6", "10", "3*W - 2")),
    ("conv_transpose2d", {"out": 8, "kernel": 3, "stride": 2, "output_padding": 2}, {"x": T("B", 4, 8, 8)}, "GF296"),
    ("conv_transpose2d", {"out": 8, "kernel": 3, "output_padding": [0, 1]}, {"x": T("B", 4, 8, 8)}, "GF296"),
    ("conv_transpose2d", {"out": 8, "kernel": 3, "stride": 1, "dilation": 2, "output_padding": 1},
     {"x": T("B", 4, 8, 8)}, ("B", "8", "13", "13")),                                      # below the dilation
    ("conv_transpose2d", {"out": 8, "kernel": 1, "padding": 1}, {"x": T("B", 4, 2, 8)}, "GF296"),  # all cropped
    ("conv_transpose2d", {"out": 8, "kernel": 2, "groups": 3}, {"x": T("B", 6, 8, 8)}, "GF267"),
    ("conv_transpose2d", {"out": 8, "kernel": 0}, {"x": T("B", 4, 8, 8)}, "GF102"),
    ("conv_transpose2d", {"out": 8, "kernel": 2, "padding": -1}, {"x": T("B", 4, 8, 8)}, "GF102"),
    ("conv_transpose2d", {"out": 8, "kernel": 2}, {"x": T("B", 4, 8)}, "GF121"),
    ("conv_transpose2d", {"out": 8, "kernel": 2}, {"x": T("B", "C", 8, 8)}, "GF124"),
    ("conv_transpose2d", {"out": 8, "kernel": 2}, {"x": T("B", 4, 8, 8, dtype="int64")}, "GF122"),
    ("batch_norm", {}, {"x": T("B", 8, "H", "W")}, ("B", "8", "H", "W")),
    ("batch_norm", {}, {"x": T("B", 8, "t")}, ("B", "8", "t")),                            # BatchNorm1d
    ("batch_norm", {}, {"x": T("B", 8)}, ("B", "8")),
    ("batch_norm", {}, {"x": T(1, 8)}, "GF277"),                                           # one value per channel
    ("batch_norm", {}, {"x": T(1, 8, 1, 1)}, "GF277"),
    ("batch_norm", {}, {"x": T(2, 8, 1, 1)}, ("2", "8", "1", "1")),
    ("batch_norm", {}, {"x": T("B")}, "GF121"),
    ("batch_norm", {}, {"x": T("B", "C", 4)}, "GF124"),
    ("batch_norm", {}, {"x": T("B", 8, 4, dtype="int64")}, "GF122"),
    # interpolate: one target, from size, scale or like; symbolic where the input or `like` is
    ("interpolate", {"size": [7, 9], "mode": "bilinear"}, {"x": T("B", 8, "H", "W")}, ("B", "8", "7", "9")),
    ("interpolate", {"scale": 2}, {"x": T("B", 8, "H", "W")}, ("B", "8", "2*H", "2*W")),
    ("interpolate", {"mode": "bilinear"}, {"x": T("B", 8, 3, 3), "like": T("B", 16, "h", "w")}, ("B", "8", "h", "w")),
    ("interpolate", {"mode": "bicubic", "align_corners": True, "scale": 3}, {"x": T(1, 2, 4, 5)}, ("1", "2", "12", "15")),
    ("interpolate", {}, {"x": T("B", 8, 4, 4)}, "GF278"),                                   # no target
    ("interpolate", {"scale": 2}, {"x": T("B", 8, 4, 4), "like": T("B", 8, 8, 8)}, "GF278"),  # two targets
    ("interpolate", {"size": ["H", 4]}, {"x": T("B", 8, "H", 4)}, "GF278"),                # symbolic size
    ("interpolate", {"size": [4, 4, 4]}, {"x": T("B", 8, 4, 4)}, "GF278"),
    ("interpolate", {"size": [4, 4], "align_corners": True}, {"x": T("B", 8, 4, 4)}, "GF278"),  # nearest
    ("interpolate", {"size": [0, 4]}, {"x": T("B", 8, 4, 4)}, "GF102"),
    ("interpolate", {"scale": 0}, {"x": T("B", 8, 4, 4)}, "GF102"),
    ("interpolate", {"scale": 2}, {"x": T("B", 8, 4)}, "GF121"),
    ("interpolate", {}, {"x": T("B", 8, 4, 4), "like": T("B", 16)}, "GF121"),
    ("interpolate", {"scale": 2}, {"x": T("B", 8, 4, 4, dtype="int64")}, "GF122"),
    # pool2d: torch's formula, symbolic; ceil mode's two closed forms
    ("pool2d", {"kind": "max", "kernel": 3, "stride": 2, "padding": 1}, {"x": T("B", 64, "H", 112)},
     ("B", "64", "(H + 1) // 2", "56")),                                                    # a ResNet stem
    ("pool2d", {"kind": "avg", "kernel": 2}, {"x": T("B", 4, "H", "W")}, ("B", "4", "H // 2", "W // 2")),
    ("pool2d", {"kind": "max", "kernel": 3, "stride": 2, "ceil_mode": True}, {"x": T("B", 4, "H", 6)},
     ("B", "4", "H // 2", "3")),                                                            # p + s ≤ k
    ("pool2d", {"kind": "avg", "kernel": 2, "stride": 3, "padding": 1, "ceil_mode": True}, {"x": T("B", 4, "H", 7)},
     ("B", "4", "(H + 3) // 3", "3")),                                                      # p + s > k
    ("pool2d", {"kind": "max", "kernel": 3, "padding": 2}, {"x": T("B", 4, 8, 8)}, "GF290"),  # padding > k // 2
    ("pool2d", {"kind": "max", "kernel": 5}, {"x": T("B", 4, 8, 4)}, "GF290"),                # no output
    ("pool2d", {"kind": "max", "kernel": 2, "count_include_pad": False}, {"x": T("B", 4, 8, 8)}, "GF290"),
    ("pool2d", {"kind": "avg", "kernel": 0}, {"x": T("B", 4, 8, 8)}, "GF102"),
    ("pool2d", {"kind": "avg", "kernel": 2, "stride": 0}, {"x": T("B", 4, 8, 8)}, "GF102"),
    ("pool2d", {"kind": "avg", "kernel": 2, "padding": -1}, {"x": T("B", 4, 8, 8)}, "GF102"),
    ("pool2d", {"kind": "avg", "kernel": 2}, {"x": T("B", 4, 8)}, "GF121"),
    # pairs [h, w] and dilation (max only, as torch's MaxPool2d)
    ("pool2d", {"kind": "max", "kernel": [3, 1], "stride": [2, 1], "padding": [1, 0]}, {"x": T("B", 4, "H", "W")},
     ("B", "4", "(H + 1) // 2", "W")),
    ("pool2d", {"kind": "max", "kernel": 3, "dilation": [1, 2]}, {"x": T("B", 4, 9, 9)}, ("B", "4", "3", "2")),
    ("pool2d", {"kind": "avg", "kernel": [1, 4]}, {"x": T("B", 4, 6, 8)}, ("B", "4", "6", "2")),
    ("pool2d", {"kind": "avg", "kernel": 3, "dilation": 2}, {"x": T("B", 4, 8, 8)}, "GF290"),
    ("pool2d", {"kind": "max", "kernel": [3, 1], "padding": [1, 1]}, {"x": T("B", 4, 8, 8)}, "GF290"),
    ("pool2d", {"kind": "max", "kernel": 3, "dilation": 4}, {"x": T("B", 4, 8, 8)}, "GF290"),   # 9-pixel window
    ("pool2d", {"kind": "max", "kernel": 3, "dilation": [1, 0]}, {"x": T("B", 4, 8, 8)}, "GF102"),
    ("pool2d", {"kind": "max", "kernel": 2, "stride": [2, 0]}, {"x": T("B", 4, 8, 8)}, "GF102"),
    # adaptive: any input size to `output`
    ("pool2d", {"kind": "avg", "output": [3, 5]}, {"x": T("B", 4, "H", "W")}, ("B", "4", "3", "5")),
    ("pool2d", {"kind": "max", "output": 7}, {"x": T("B", 4, 3, 20)}, ("B", "4", "7", "7")),     # rows repeat
    ("pool2d", {"kind": "avg"}, {"x": T("B", 4, 8, 8)}, "GF297"),
    ("pool2d", {"kind": "avg", "kernel": 2, "output": 1}, {"x": T("B", 4, 8, 8)}, "GF297"),
    ("pool2d", {"kind": "avg", "output": 1, "padding": 1}, {"x": T("B", 4, 8, 8)}, "GF297"),
    ("pool2d", {"kind": "max", "output": 1, "ceil_mode": True}, {"x": T("B", 4, 8, 8)}, "GF297"),
    ("pool2d", {"kind": "avg", "output": [2, 0]}, {"x": T("B", 4, 8, 8)}, "GF102"),
]


@pytest.mark.parametrize("op,attrs,ins,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_shape_rule(op, attrs, ins, expected):
    check_case(op, attrs, ins, expected)


def test_every_op_of_the_family_has_cases():
    ours = {n for n, o in REGISTRY.items() if o.family == "conv"}
    assert ours == {c[0] for c in CASES}


def test_params_are_torchs():
    conv, bn = REGISTRY["conv2d"], REGISTRY["batch_norm"]
    a = conv.attrs.model_validate({"out": 12, "kernel": 3, "groups": 3})
    assert conv.params(a, {"x": T("B", 6, 8, 8)}) == {"weight": (12, 2, 3, 3), "bias": (12,)}
    a = conv.attrs.model_validate({"out": 12, "kernel": 3, "bias": False})
    assert conv.params(a, {"x": T("B", 6, 8, 8)}) == {"weight": (12, 6, 3, 3)}
    ins = {"x": T("B", 6, 8, 8)}
    full = bn.attrs.model_validate({})
    assert bn.params(full, ins) == {"weight": (6,), "bias": (6,), "running_mean": (6,), "running_var": (6,)}
    assert bn.trained(full, ins) == {"weight": (6,), "bias": (6,)}          # running statistics: state
    assert bn.params(bn.attrs.model_validate({"affine": False, "track_running_stats": False}), ins) == {}


def test_flops():
    conv = REGISTRY["conv2d"]
    a = conv.attrs.model_validate({"out": 8, "kernel": 3, "padding": 1, "groups": 2})
    ins = {"x": T(2, 4, 5, 6)}
    out = conv.shape(a, ins)
    assert conv.flops(a, ins, out).value == 2 * (2 * 8 * 5 * 6) * (4 // 2) * 9   # 2 · outputs · taps
    a = conv.attrs.model_validate({"out": 8, "kernel": [3, 1], "padding": "same"})
    assert conv.flops(a, ins, conv.shape(a, ins)).value == 2 * (2 * 8 * 5 * 6) * 4 * 3
    t = REGISTRY["conv_transpose2d"]
    a = t.attrs.model_validate({"out": 6, "kernel": [3, 2], "stride": 2, "groups": 2})
    assert t.flops(a, ins, t.shape(a, ins)).value == 2 * (2 * 4 * 5 * 6) * 3 * 3 * 2   # 2 · inputs · out/g · taps


def test_pairs_and_same_padding():
    conv, t = REGISTRY["conv2d"], REGISTRY["conv_transpose2d"]
    a = conv.attrs.model_validate({"out": 4, "kernel": [4, 3], "padding": "same", "dilation": [1, 2]})
    assert a.pads == ((1, 2), (2, 2))              # torch's: d·(k − 1) in all, the odd zero after
    assert conv.params(a, {"x": T("B", 6, 8, 8)}) == {"weight": (4, 6, 4, 3), "bias": (4,)}
    a = t.attrs.model_validate({"out": 6, "kernel": [3, 2], "groups": 2, "bias": False})
    assert t.params(a, {"x": T("B", 4, 8, 8)}) == {"weight": (4, 3, 3, 2)}            # [C, out / groups, kh, kw]


def torch_conv_transpose_size(n, k, s, p, op, d):
    """torch.nn.ConvTranspose2d's documented output size."""
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


def test_adaptive_windows_and_flops():
    from graphformer.ops.conv import adaptive_windows
    assert adaptive_windows(7, 3) == [(0, 3), (2, 5), (4, 7)]              # overlapping where 3 ∤ 7
    assert adaptive_windows(3, 7) == [(0, 1), (0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 3)]
    pool = REGISTRY["pool2d"]
    a = pool.attrs.model_validate({"kind": "avg", "output": [3, 2]})
    ins = {"x": T(2, 4, 7, 6)}
    assert pool.flops(a, ins, pool.shape(a, ins)).value == 2 * 4 * (3 + 3 + 3) * 6
    ins = {"x": T(2, 4, "H", 6)}
    assert str(pool.flops(a, ins, pool.shape(a, ins))) == "48*H"   # symbolic: the windows tile H


def torch_pool_size(n: int, k: int, s: int, p: int, ceil: bool, d: int = 1) -> int:
    """aten's pooling_output_shape, as written there."""
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def test_pool_size_is_torchs_formula_symbolically():
    op = REGISTRY["pool2d"]
    for k in range(1, 6):
        for s in range(1, 6):
            for p in range(0, k // 2 + 1):
                for ceil in (False, True):
                    a = op.attrs.model_validate({"kind": "max", "kernel": k, "stride": s, "padding": p,
                                                 "ceil_mode": ceil})
                    sym = op.shape(a, {"x": T("B", 1, "H", 1 + 2 * k)}).shape[2]   # kept symbolic, then bound
                    for n in range(max(k - 2 * p, 1), 30):
                        want = torch_pool_size(n, k, s, p, ceil)
                        assert sym.evaluate({"H": n}) == want, (k, s, p, ceil, n)
                        assert op.shape(a, {"x": T("B", 1, n, n)}).shape[2].value == want


def test_dilated_pool_size_is_torchs_formula_symbolically():
    """Dilated windows along the width, plain ones along the height: each axis its own formula."""
    op = REGISTRY["pool2d"]
    for k in range(1, 5):
        for d in range(1, 4):
            for s in range(1, 5):
                for p in range(0, k // 2 + 1):
                    for ceil in (False, True):
                        a = op.attrs.model_validate({"kind": "max", "kernel": [2, k], "stride": [1, s],
                                                     "padding": [0, p], "dilation": [1, d], "ceil_mode": ceil})
                        e = d * (k - 1) + 1
                        sym = op.shape(a, {"x": T("B", 1, 4, "W")}).shape[3]
                        for n in range(max(e - 2 * p, 1), 30):
                            want = torch_pool_size(n, k, s, p, ceil, d)
                            assert sym.evaluate({"W": n}) == want, (k, d, s, p, ceil, n)
                            assert op.shape(a, {"x": T("B", 1, 4, n)}).shape[3].value == want


def test_resampling_flops():
    up, pool = REGISTRY["interpolate"], REGISTRY["pool2d"]
    ins = {"x": T(2, 4, 5, 6)}
    for mode, taps in (("nearest", 0), ("bilinear", 4), ("bicubic", 16)):
        a = up.attrs.model_validate({"scale": 2, "mode": mode})
        assert up.flops(a, ins, up.shape(a, ins)) == 2 * taps * (2 * 4 * 10 * 12)
    a = pool.attrs.model_validate({"kind": "avg", "kernel": 2})
    assert pool.flops(a, ins, pool.shape(a, ins)).value == 4 * (2 * 4 * 2 * 3)


SPEC = """\
graphformer: 1
name: cnn
params: {c: 3, width: 8}
dims: {B: 2, H: 16, W: 16}
inputs:
  x: {shape: [B, c, H, W]}
nodes:
  conv: {op: conv2d, out: width, kernel: 3, stride: 2, padding: 1, bias: false}
  bn:   {op: batch_norm}
  dw:   {op: conv2d, out: width, kernel: 3, padding: 1, groups: width}
outputs: {y: dw}
"""


def test_summary_counts_parameters_as_torch_does(tmp_path):
    path = tmp_path / "cnn.yaml"
    path.write_text(SPEC)
    s = load(str(path))
    # conv 8·3·3·3, bn 8 + 8 (its running statistics are buffers, not parameters), dw 8·1·3·3 + 8
    assert total_params(s.ir) == 216 + 16 + 80
    assert set(s.ir.param_shapes()) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                        "dw.weight", "dw.bias"}
    assert [str(d) for d in s.ir.node("dw").shape.shape] == ["B", "8", "(H - 1) // 2 + 1", "(W - 1) // 2 + 1"]
    plan = budget(s.ir, {"B": 2, "H": 16, "W": 16})
    assert plan.params == plan.trainable_params == 312             # no gradient or optimizer state for the statistics
    assert plan.memory["optimizer"] == 8 * 312


@pytest.mark.parametrize("line,code,col", [
    ("  conv: {op: conv2d, out: width, kernel: 32, stride: 2, padding: 1, bias: false}", "GF276", 3),
    ("  conv: {op: conv2d, out: width, kernel: 3, groups: 5}", "GF267", 53),    # the caret on `groups: 5`
    ("  conv: {op: interpolate, in: {x: x, like: x}, scale: 2}", "GF278", 3),
    ("  conv: {op: interpolate, size: [8, 8], align_corners: true}", "GF278", 56),   # on `align_corners`
    ("  conv: {op: pool2d, kind: max, kernel: 3, padding: 2}", "GF290", 53),         # on `padding: 2`
    ("  conv: {op: pool2d, kind: avg, kernel: 17}", "GF290", 3),
    ("  conv: {op: pool2d, kind: avg, kernel: 3, dilation: [1, 2]}", "GF290", 54),    # on `dilation`'s value
    ("  conv: {op: conv2d, out: width, kernel: 3, stride: 2, padding: same}", "GF295", 65),   # on `same`
    ("  conv: {op: conv_transpose2d, out: width, kernel: 3, stride: 2, output_padding: [0, 2]}", "GF296", 82),
    ("  conv: {op: pool2d, kind: avg, output: 1, stride: 2}", "GF297", 52),                  # on `stride`'s value
    ("  conv: {op: pool2d, kind: avg}", "GF297", 3),
    ("  conv: {op: conv2d, out: width, kernel: [3, 3, 3]}", "GF102", 42),
    ("  conv: {op: conv2d, out: [width, 2], kernel: 3}", "GF102", 27),                        # a pair for an int
    ("  conv: {op: conv2d, out: width, kernel: [3, nope]}", "GF131", 46),                     # on the entry
])
def test_diagnostics_point_at_the_node(tmp_path, line, code, col):
    text = SPEC.replace("dims: {B: 2, H: 16, W: 16}", "dims: {B: 2}").replace("[B, c, H, W]", "[B, c, 16, 16]")
    text = text.replace("  conv: {op: conv2d, out: width, kernel: 3, stride: 2, padding: 1, bias: false}", line)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    diags = [d for d in check_file(str(path)).diagnostics if d.severity == "error"]
    assert [d.code for d in diags] == [code]
    assert (diags[0].span.line, diags[0].span.col) == (8, col)


def test_resampling_labels():
    from graphformer.render.diagram import attr_detail
    up, pool = REGISTRY["interpolate"].attrs, REGISTRY["pool2d"].attrs
    assert attr_detail("interpolate", up.model_validate({"mode": "bilinear"})) == "bilinear → like"
    assert attr_detail("interpolate", up.model_validate({"size": [7, 9]})) == "nearest → 7×9"
    assert attr_detail("interpolate", up.model_validate({"scale": 2, "mode": "bicubic", "align_corners": True})) \
        == "bicubic × 2 · align corners"
    assert attr_detail("pool2d", pool.model_validate({"kind": "max", "kernel": 3, "stride": 2, "padding": 1})) \
        == "max 3×3 · stride 2 · pad 1"
    assert attr_detail("pool2d", pool.model_validate({"kind": "avg", "kernel": 2, "ceil_mode": True,
                                                      "count_include_pad": False})) == "avg 2×2 · ceil · pad not counted"
    assert attr_detail("pool2d", pool.model_validate({"kind": "max", "output": [7, 5]})) == "max → 7×5"
    assert attr_detail("pool2d", pool.model_validate({"kind": "max", "kernel": [3, 1], "padding": [1, 0],
                                                      "dilation": 2})) \
        == "max 3×1 · pad 1×0 · dilation 2"
    conv, t = REGISTRY["conv2d"].attrs, REGISTRY["conv_transpose2d"].attrs
    assert attr_detail("conv2d", conv.model_validate({"out": 8, "kernel": [4, 3], "padding": "same"})) \
        == "→ 8 · kernel 4×3 · padding same"
    assert attr_detail("conv_transpose2d", t.model_validate({"out": 8, "kernel": 2, "stride": 2,
                                                             "output_padding": [1, 0]})) \
        == "→ 8 · kernel 2 · stride 2 · output_padding 1×0"


def test_at_dims_binds_symbols_with_sizes_left_out(tmp_path):
    """`build --dims` re-infers at concrete sizes: an `interpolate` without `size` (a shape field) included."""
    from graphformer.frontend.infer import at_dims
    path = tmp_path / "up.yaml"
    path.write_text(SPEC.replace("  dw:   {op: conv2d, out: width, kernel: 3, padding: 1, groups: width}\n",
                                 "  dw:   {op: interpolate, scale: 2}\n  sz: {op: interpolate, in: x, size: [4, 5]}\n")
                    .replace("outputs: {y: dw}", "outputs: {y: dw, z: sz}"))
    ir = at_dims(load(str(path)).ir, {"H": 16, "W": 12})
    assert ir.node("dw").attrs.size is None and ir.node("sz").attrs.size == (4, 5)


def test_pairs_are_expressions_over_params_and_same_is_a_word(tmp_path):
    """`kernel: [k, 1]`, `padding: [k // 2, 0]`: each entry evaluated as a dimension; `same` passed through, and a
    word it doesn't know named with the one it does."""
    path = tmp_path / "pairs.yaml"
    path.write_text(SPEC.replace("params: {c: 3, width: 8}", "params: {c: 3, width: 8, k: 5}")
                    .replace("  dw:   {op: conv2d, out: width, kernel: 3, padding: 1, groups: width}",
                             "  dw:   {op: conv2d, out: width, kernel: [k, 1], padding: [k // 2, 0], stride: [1, 2]}\n"
                             "  same: {op: conv2d, out: width, kernel: [k, 2], padding: same}")
                    .replace("outputs: {y: dw}", "outputs: {y: same}"))
    s = load(str(path))
    a = s.ir.node("dw").attrs
    assert (a.kernel, a.padding, a.stride) == ((5, 1), (2, 0), (1, 2))
    assert s.ir.node("same").attrs.padding == "same"
    assert [str(d) for d in s.ir.node("same").shape.shape] == ["B", "8", "(H - 1) // 2 + 1", "(W - 1) // 2 // 2 + 1"]
    path.write_text(path.read_text().replace("padding: same", "padding: valid"))
    (d,) = [d for d in check_file(str(path)).diagnostics if d.severity == "error"]
    assert d.code == "GF131" and "`valid` for `padding` (a number or `same`)" in d.message
