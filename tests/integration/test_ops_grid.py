"""The grid ops (Swin's windows, shifted-window bias, patch merging): shape rules (table-driven), and the
torch lowerings against transformers' own Swin functions (window_partition, SwinLayer's padding, shift
and mask, SwinRelativePositionBias, SwinPatchMerging) on grids that the window divides and that it
doesn't, square and not."""
from __future__ import annotations

import pytest

from graphformer.ir import IRNode
from graphformer.ops import REGISTRY
from graphformer.ops.base import ShapeError, TensorType
from graphformer.base.dims import Dim
from shape_cases import T, check_case

G = T("B", 9, 9, 12)
CASES = [
    # op, attrs, inputs, expected shape (tuple of str) or error code
    ("window_partition", {"window": 3}, {"x": G}, ("9*B", "9", "12")),
    ("window_partition", {"window": 3, "shift": 1}, {"x": G}, ("9*B", "9", "12")),
    ("window_partition", {"window": 4}, {"x": T("B", 9, 10, 12)}, ("9*B", "16", "12")),     # padded to 12×12
    ("window_partition", {"window": 7, "shift": 3}, {"x": T("B", 7, 14, 8)}, ("2*B", "49", "8")),
    ("window_partition", {"window": 5}, {"x": T("B", 4, 9, 12)}, "GF190"),                  # larger than the grid
    ("window_partition", {"window": 3, "shift": 3}, {"x": G}, "GF102"),
    ("window_partition", {"window": 0}, {"x": G}, "GF102"),
    ("window_partition", {"window": 3}, {"x": T("B", "H", 9, 12)}, "GF124"),
    ("window_partition", {"window": 3}, {"x": T("B", 81, 12)}, "GF121"),
    ("window_partition", {"window": 3}, {"x": T("B", 9, 9, 12, dtype="int64")}, "GF122"),
    ("window_merge", {"window": 3, "shift": 1}, {"x": T("9*B", 9, 12), "grid": G}, ("B", "9", "9", "12")),
    ("window_merge", {"window": 4}, {"x": T("9*B", 16, 6), "grid": T("B", 9, 10, 12)}, ("B", "9", "10", "6")),
    ("window_merge", {"window": 3}, {"x": T("4*B", 9, 12), "grid": G}, "GF120"),            # not 9 windows
    ("window_merge", {"window": 3}, {"x": T("9*B", 16, 12), "grid": G}, "GF120"),
    ("window_merge", {"window": 3}, {"x": T("9*B", 9, 3, 4), "grid": G}, "GF121"),
    ("window_position_bias", {"window": 3, "heads": 2}, {"grid": G}, ("1", "2", "9", "9")),
    ("window_position_bias", {"window": 3, "shift": 1, "heads": 2}, {"grid": G}, ("9*B", "2", "9", "9")),
    ("window_position_bias", {"window": 7, "shift": 3, "heads": 2}, {"grid": T("B", 7, 7, 8)}, ("1", "2", "49", "49")),
    ("window_position_bias", {"window": 3, "heads": 0}, {"grid": G}, "GF102"),
    ("window_position_bias", {"window": 10, "heads": 2}, {"grid": G}, "GF190"),
    ("patch_merge", {}, {"x": T("B", 8, 6, 12)}, ("B", "4", "3", "48")),
    ("patch_merge", {}, {"x": T("B", 9, 5, 12)}, ("B", "5", "3", "48")),
    ("patch_merge", {}, {"x": T("B", 9, 5, "C")}, "GF124"),
    ("patch_merge", {}, {"x": T("B", 9, 12)}, "GF121"),
    ("flatten_grid", {}, {"x": T("B", 9, 5, 12)}, ("B", "45", "12")),
    ("flatten_grid", {}, {"x": T("B", "H", "W", 12)}, ("B", "H*W", "12")),
    ("flatten_grid", {}, {"x": T("B", 45, 12)}, "GF121"),
    ("patch_embed", {"patch": 4, "dim": 8, "grid": True}, {"x": T("B", 3, 36, 40)}, ("B", "9", "10", "8")),
    ("patch_embed", {"patch": 4, "dim": 8, "remainder": "pad", "grid": True}, {"x": T("B", 3, 37, 42)},
     ("B", "10", "11", "8")),                                                                  # padded to 40×44
    ("patch_embed", {"patch": 4, "dim": 8, "remainder": "pad"}, {"x": T("B", 3, 3, 8)}, ("B", "2", "8")),
    ("patch_embed", {"patch": 5, "stride": 3, "dim": 8, "remainder": "pad"}, {"x": T("B", 1, 10, 11)},
     ("B", "9", "8")),                                                                         # 11×11 → 3×3
    ("patch_embed", {"patch": 4, "dim": 8, "remainder": "pad"}, {"x": T("B", 3, "H", 8)}, "GF124"),
]


@pytest.mark.parametrize("op,attrs,ins,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_shape_rule(op, attrs, ins, expected):
    check_case(op, attrs, ins, expected)


def test_every_grid_op_has_shape_cases():
    ours = {n for n, o in REGISTRY.items() if o.family == "grid"}
    assert ours - {c[0] for c in CASES} == set()


def test_a_window_larger_than_the_grid_says_what_fits():
    op = REGISTRY["window_partition"]
    with pytest.raises(ShapeError) as err:
        op.shape(op.attrs(window=7), {"x": T("B", 4, 9, 8)})
    assert "window 7 is larger than the 4×9 grid of `x`" in err.value.message
    assert "at most 4" in err.value.help


def test_bias_table_is_sized_by_the_window():
    op = REGISTRY["window_position_bias"]
    assert op.params(op.attrs(window=7, heads=3), {"grid": T("B", 56, 56, 96)}) == {"table": (169, 3)}


# ---------------------------------------------------------------- torch, against transformers' Swin

torch = pytest.importorskip("torch")
swin = pytest.importorskip("transformers.models.swin.modeling_swin")
from graphformer.backends.torch import LOWERINGS  # noqa: E402


def lower(op: str, attrs: dict, types: dict):
    node = IRNode("n", op, REGISTRY[op].attrs.model_validate(attrs), {p: f"in.{p}" for p in types}, None)
    module = LOWERINGS[op](node, types)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    return module.eval()


def C(*dims) -> TensorType:
    return TensorType(tuple(Dim.const(d) for d in dims))


def reference_layer(h: int, w: int, window: int, shift: int, heads: int = 2, dim: int = 8):
    from transformers import SwinConfig
    layer = swin.SwinLayer(SwinConfig(window_size=window, embed_dim=dim), dim, (h, w), heads, shift_size=shift)
    layer.set_shift_and_window_size((h, w))        # what its forward does first
    return layer


# (H, W, window, shift): divides; pads; not square; a grid one window across (no shift in effect)
GRIDS = [(6, 6, 3, 1), (9, 10, 4, 2), (5, 11, 3, 1), (7, 12, 7, 3), (8, 8, 4, 0)]


@pytest.mark.parametrize("h,w,window,shift", GRIDS)
def test_windows_round_trip_like_swin_layer(h, w, window, shift):
    """partition = SwinLayer's pad, roll and window_partition; merge = its window_reverse, roll back, crop."""
    ref = reference_layer(h, w, window, shift)
    x = torch.randn(2, h, w, 8)
    attrs, types = {"window": window, "shift": shift}, {"x": C(2, h, w, 8)}
    part = lower("window_partition", attrs, types)
    padded, _ = ref.maybe_pad(x, h, w)
    want = swin.window_partition(ref.cyclic_shift(padded), ref.window_size).reshape(-1, window * window, 8)
    torch.testing.assert_close(part(x), want, rtol=0, atol=0)
    merge = lower("window_merge", attrs, {"x": C(*want.shape), "grid": types["x"]})
    torch.testing.assert_close(merge(want, x), x, rtol=0, atol=0)


@pytest.mark.parametrize("h,w,window,shift", GRIDS)
def test_position_bias_is_swins_table_plus_its_shift_mask(h, w, window, shift):
    ref = reference_layer(h, w, window, shift, heads=3)
    bias_mod = lower("window_position_bias", {"window": window, "shift": shift, "heads": 3}, {"grid": C(2, h, w, 8)})
    with torch.no_grad():
        ref.attention.relative_position_bias.relative_position_bias_table.copy_(bias_mod.table)
        want = ref.attention.relative_position_bias()                        # (1, heads, w², w²)
        ph, pw = -(-h // window) * window, -(-w // window) * window
        mask = ref.get_attn_mask(ph, pw, torch.float32, "cpu")               # (nW, w², w²) or None
        if mask is not None:
            want = (want + mask[:, None]).repeat(2, 1, 1, 1)                 # batch-major, like the windows
        got = bias_mod(torch.zeros(2, h, w, 8))
    assert (mask is not None) == bool(shift and min(h, w) > window)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("h,w", [(8, 6), (9, 5), (7, 7)])
def test_patch_merge_is_swins_without_norm_and_reduction(h, w):
    ref = swin.SwinPatchMerging(dim=4)
    ref.norm, ref.reduction = torch.nn.Identity(), torch.nn.Identity()
    x = torch.randn(2, h, w, 4)
    got = lower("patch_merge", {}, {"x": C(2, h, w, 4)})(x)
    torch.testing.assert_close(got.flatten(1, 2), ref(x.flatten(1, 2), (h, w)), rtol=0, atol=0)
    assert tuple(got.shape) == (2, -(-h // 2), -(-w // 2), 16)


def test_patch_embed_grid_is_the_sequence_on_its_grid():
    attrs, types = {"patch": 4, "dim": 6}, {"x": C(2, 3, 12, 16)}
    seq = lower("patch_embed", attrs, types)
    grid = lower("patch_embed", {**attrs, "grid": True}, types)
    x = torch.randn(2, 3, 12, 16)
    flat = lower("flatten_grid", {}, {"x": C(2, 3, 4, 6)})
    torch.testing.assert_close(flat(grid(x)), seq(x), rtol=0, atol=0)


@pytest.mark.parametrize("h,w", [(30, 30), (37, 42), (3, 9)])
def test_padded_patch_embed_is_swins(h, w):
    from transformers import SwinConfig
    ref = swin.SwinPatchEmbeddings(SwinConfig(image_size=(h, w), patch_size=4, embed_dim=6))
    mod = lower("patch_embed", {"patch": 4, "dim": 6, "remainder": "pad"}, {"x": C(2, 3, h, w)})
    with torch.no_grad():
        ref.projection.weight.copy_(mod.weight)
        ref.projection.bias.copy_(mod.bias)
        x = torch.randn(2, 3, h, w)
        want, _ = ref(x)
        torch.testing.assert_close(mod(x), want, rtol=0, atol=0)
