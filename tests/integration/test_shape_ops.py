"""The shape ops (ops/shape.py): reshape, permute, tile. Shape rules table-driven (symbolic element counts,
the inferred axis, sizes read at run time from `x` or `like`), the dimension algebra's exact quotient they
rest on, the torch lowerings against torch's own reshape / permute / repeat at sizes other than the
checked ones, ONNX Runtime against torch at two sets of sizes (Reshape sizes computed from Shape ops),
and the diagnostics at file:line:col."""
from __future__ import annotations

import pytest

from graphformer.base.dims import parse
from graphformer.frontend.check import check_file
from graphformer.ops import REGISTRY
from graphformer.ops.shape import reshaping
from shape_cases import T, check_case

CASES = [
    # op, attrs, inputs, expected shape (tuple of str) or error code
    ("reshape", {"shape": ["B * T", 3, 8, 8]}, {"x": T("B", "T", 3, 8, 8)}, ("B*T", "3", "8", "8")),
    ("reshape", {"shape": [-1, 3, 8, 8]}, {"x": T("B", "T", 3, 8, 8)}, ("B*T", "3", "8", "8")),
    ("reshape", {"shape": ["B", -1, 16]}, {"x": T("B", "n + 1", 4, 4)}, ("B", "n + 1", "16")),
    ("reshape", {"shape": ["B", "n", 4, -1]}, {"x": T("B", "n", 64)}, ("B", "n", "4", "16")),
    ("reshape", {"shape": ["4 * B", "T", 8]}, {"x": T("B", 4, "T", 8)}, ("4*B", "T", "8")),
    ("reshape", {"shape": [-1]}, {"x": T("B", "n", 3)}, ("3*B*n",)),
    ("reshape", {"shape": ["B", 10, 16]}, {"x": T("B", 9, 16)}, "GF263"),                  # counts differ
    ("reshape", {"shape": ["B", 2, "d"]}, {"x": T("B", "n", "d")}, "GF263"),               # not for every n
    ("reshape", {"shape": ["B", -1, -1]}, {"x": T("B", "n", 4)}, "GF264"),                 # two inferred
    ("reshape", {"shape": ["B", -1, 5]}, {"x": T("B", "n", 6)}, "GF264"),                  # 6n/5 not exact
    ("reshape", {"shape": ["B", 0, 4]}, {"x": T("B", "n", 4)}, "GF264"),                   # size 0
    ("reshape", {"shape": ["B", "T", 4, 8]}, {"x": T("B*T", 4, 8)}, "GF265"),              # B, T merged
    ("reshape", {"shape": ["B", "T", 4, 8]}, {"x": T("B*T", 4, 8), "like": T("B", "T", 3)}, ("B", "T", "4", "8")),
    ("reshape", {"shape": [1] * 9}, {"x": T(1)}, "GF266"),                                  # 9 axes
    ("permute", {"order": [0, 2, 1, 3]}, {"x": T("B", "T", "N", 8)}, ("B", "N", "T", "8")),
    ("permute", {"order": [0, -1, 1, 2]}, {"x": T("B", "T", "N", 8)}, ("B", "8", "T", "N")),
    ("permute", {"order": [0, 2, 2, 3]}, {"x": T("B", "T", "N", 8)}, "GF266"),              # not a permutation
    ("permute", {"order": [0, 1]}, {"x": T("B", "T", "N", 8)}, "GF266"),                    # too few axes
    ("permute", {"order": [0, 1, 2, 4]}, {"x": T("B", "T", "N", 8)}, "GF266"),              # out of range
    ("tile", {"axis": 1, "times": 3}, {"x": T("B", 1, 8)}, ("B", "3", "8")),
    ("tile", {"axis": -1, "times": 2}, {"x": T("B", "n", 8)}, ("B", "n", "16")),
    ("tile", {"axis": 3, "times": 2}, {"x": T("B", "n", 8)}, "GF266"),
    ("tile", {"axis": 1, "times": 0}, {"x": T("B", "n", 8)}, "GF102"),
]


@pytest.mark.parametrize("op,attrs,ins,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_shape_rule(op, attrs, ins, expected):
    attrs = {k: tuple(str(v) if isinstance(v, str) else v for v in val) if isinstance(val, list) else val
             for k, val in attrs.items()}
    check_case(op, attrs, ins, expected)


def test_every_shape_op_has_cases():
    ours = {n for n, o in REGISTRY.items() if o.family == "shape"}
    assert ours == {c[0] for c in CASES}


@pytest.mark.parametrize("num,den,want", [
    ("4*B*T", "B", "4*T"), ("B*n*D + B*D", "B*n + B", "D"), ("(n + 1)*(n + 1)", "n + 1", "n + 1"),
    ("B*T", "3*T", None), ("12", "5", None), ("B*n", "B*n*n", None), ("B*(n // 2)*4", "n // 2", "4*B"),
])
def test_exact_quotient(num, den, want):
    q = parse(num).quotient(parse(den))
    assert (q is None and want is None) or q == parse(want)


def test_run_time_sizes_read_symbols_in_order():
    """[B, 4, T, 8] → [4·B, T, 8]: B and T are read off x (the first symbolic axis is inferred, T is
    computed); from [B·T·N, 8], B and N are read off `like` and T, in neither, is the inferred axis."""
    a = REGISTRY["reshape"].attrs(shape=("4*B", "T", 8))
    plan = reshaping(a, T("B", 4, "T", 8))
    assert plan.sizes == (-1, None, 8) and [(s, p, ax) for s, p, ax, _ in plan.reads] == [("T", "x", 2)]
    a = REGISTRY["reshape"].attrs(shape=("B", "T", "N", 8))
    plan = reshaping(a, T("B*T*N", 8), like=T("B", "N", 3))
    assert plan.sizes == (None, -1, None, 8)
    assert [(s, p, ax, str(div)) for s, p, ax, div in plan.reads] == [("B", "like", 0, "1"), ("N", "like", 1, "1")]


# ---------------------------------------------------------------- backends

ZOO = """
graphformer: 1
name: shape-zoo
params: {c: 3, img: 8, p: 4, d: 8}
dims: {B: 2, T: 3}
inputs:
  video: {shape: [B, T, c, img, img]}
nodes:
  frames:  {op: reshape, shape: [B * T, c, img, img]}
  patches: {op: patch_embed, patch: p, dim: d}
  split:   {op: reshape, in: {x: patches, like: video}, shape: [B, T, 4, d]}
  by_patch: {op: permute, order: [0, 2, 1, 3]}
  rows:    {op: reshape, shape: [B * 4, T, d]}
  flat:    {op: reshape, in: rows, shape: [B, -1, d]}
  heads:   {op: reshape, in: by_patch, shape: [B, 4 * T, 2, d // 2]}
  first:   {op: slice, in: flat, axis: 1, start: 0, stop: 1}
  tiled:   {op: tile, in: first, axis: 1, times: T + 0}
outputs: {flat: flat, heads: heads, tiled: tiled, rows: rows}
"""


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    pytest.importorskip("torch")
    import graphformer as gf
    path = tmp_path_factory.mktemp("shape") / "zoo.yaml"
    path.write_text(ZOO.replace("times: T + 0", "times: 3"))
    spec = gf.load(str(path))
    return spec, gf.build(spec, seed=0).eval()


@pytest.mark.parametrize("b,t", [(2, 3), (3, 5), (1, 1)])
def test_torch_equals_torch_reshapes(zoo, b, t):
    import torch
    spec, model = zoo
    x = torch.randn(b, t, 3, 8, 8, generator=torch.Generator().manual_seed(b * 10 + t))
    with torch.no_grad():
        got = model(video=x)
        w, bias = model.state_dict()["patches.weight"], model.state_dict()["patches.bias"]
        p = torch.nn.functional.conv2d(x.reshape(b * t, 3, 8, 8), w, bias, stride=4).flatten(2).transpose(1, 2)
        by_patch = p.reshape(b, t, 4, 8).permute(0, 2, 1, 3)
        rows = by_patch.reshape(b * 4, t, 8)
        flat = rows.reshape(b, 4 * t, 8)
    assert torch.equal(got["rows"], rows) and torch.equal(got["flat"], flat)
    assert torch.equal(got["heads"], by_patch.reshape(b, 4 * t, 2, 4))
    assert torch.equal(got["tiled"], flat[:, :1].repeat(1, 3, 1))


def test_onnx_runtime_equals_torch_at_two_sizes(zoo):
    torch = pytest.importorskip("torch")
    from parity import checked_onnx, onnx_session   # parity needs torch: imported once it is known present
    spec, model = zoo
    exported = checked_onnx(spec, model)
    ops = {n.op_type for n in exported.graph.node}
    assert {"Reshape", "Transpose", "Tile", "Shape", "Gather"} <= ops   # sizes computed from Shape ops
    sess = onnx_session(exported)
    for b, t in ((2, 3), (3, 5)):
        x = torch.randn(b, t, 3, 8, 8)
        with torch.no_grad():
            want = model(video=x)
        got = dict(zip(spec.outputs, sess.run(list(spec.outputs), {"video": x.numpy()})))
        for k in spec.outputs:
            assert got[k].shape == tuple(want[k].shape), k
            assert abs(got[k] - want[k].numpy()).max() <= 1e-6, k


def test_a_built_model_with_a_computed_reshape_pickles(zoo):
    import pickle
    import torch
    spec, model = zoo
    again = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(again(video=x)["rows"], model(video=x)["rows"])


# ---------------------------------------------------------------- diagnostics

def _diags(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return [d for d in check_file(str(path)).diagnostics if d.is_error]


HEAD = """graphformer: 1
name: s
params: {d: 8}
dims: {B: 2, T: 3}
inputs:
  x: {shape: [B, T, 4, d]}
nodes:
"""


@pytest.mark.parametrize("node,code,col", [
    ("  y: {op: reshape, shape: [B * T, 5, d]}", "GF263", 27),
    ("  y: {op: reshape, shape: [-1, -1, d]}", "GF264", 27),
    ("  y: {op: reshape, shape: [B * T, 4, dd]}", "GF131", 27),
    ("  y: {op: permute, order: [0, 1, 1, 3]}", "GF266", 27),
])
def test_diagnostics_point_at_the_attribute(tmp_path, node, code, col):
    (d,) = _diags(tmp_path, HEAD + node + "\noutputs: {y: y}\n")
    assert d.code == code and d.span.line == 8 and d.span.col == col, (d.code, d.span, d.message)


def test_an_input_of_more_than_eight_axes_is_refused(tmp_path):
    text = HEAD.replace("[B, T, 4, d]", "[B, T, 1, 1, 1, 1, 1, 1, d]") + "  y: {op: norm}\noutputs: {y: y}\n"
    (d,) = _diags(tmp_path, text)
    assert d.code == "GF266" and d.span.line == 6 and "9 axes" in d.message
    eight = HEAD.replace("[B, T, 4, d]", "[B, T, 1, 1, 1, 1, 1, d]") + "  y: {op: norm}\noutputs: {y: y}\n"
    assert _diags(tmp_path, eight) == []


def test_the_cli_reports_a_bad_reshape_without_a_traceback(tmp_path, capsys):
    import cli
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "  y: {op: reshape, shape: [B, 5, d]}\noutputs: {y: y}\n")
    assert cli.main(["check", str(path)]) == 1
    err = capsys.readouterr()
    text = err.out + err.err
    assert "GF263" in text and "Traceback" not in text
