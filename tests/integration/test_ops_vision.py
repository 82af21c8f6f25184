"""The vision, audio, sequence and multimodal ops: shape rules (table-driven), parameters, and the torch
lowerings against independent computations (torch.nn.Conv2d, transformers' numpy audio_utils, the
Decision Transformer reference's own stack/reshape, plain formulas)."""
from __future__ import annotations

import math

import pytest

from graphformer.base.dims import Dim
from graphformer.ir import IRNode
from graphformer.ops import REGISTRY
from graphformer.ops.base import ShapeError, TensorType
from shape_cases import T, check_case

FAMILIES = ("vision", "audio", "sequence", "multimodal")


CASES = [
    # op, attrs, inputs, expected shape (tuple of str) or error code
    ("patch_embed", {"patch": 16, "dim": 768}, {"x": T("B", 3, 224, 224)}, ("B", "196", "768")),
    ("patch_embed", {"patch": 16, "dim": 8}, {"x": T("B", 3, 225, 224)}, "GF123"),          # does not tile
    ("patch_embed", {"patch": 16, "dim": 8, "remainder": "drop"}, {"x": T("B", 3, 225, 224)}, ("B", "196", "8")),
    ("patch_embed", {"patch": 16, "stride": 10, "dim": 8, "remainder": "drop"}, {"x": T("B", 1, 128, 1024)},
     ("B", "1212", "8")),                                                                     # AST: 12 × 101
    ("patch_embed", {"patch": 16, "stride": 10, "dim": 8}, {"x": T("B", 1, 128, 1024)}, "GF123"),
    ("patch_embed", {"patch": 4, "stride": 2, "stride_w": 4, "dim": 8}, {"x": T("B", 1, 10, 12)}, ("B", "12", "8")),
    ("patch_embed", {"patch": 32, "dim": 8}, {"x": T("B", 3, 16, 64)}, "GF120"),             # patch > input
    ("patch_embed", {"patch": 16, "dim": 8}, {"x": T("B", 3, "H", "W")}, ("B", "(H // 16)*(W // 16)", "8")),
    ("patch_embed", {"patch": 16, "dim": 8}, {"x": T("B", "C", 32, 32)}, "GF124"),           # channels unknown
    ("patch_embed", {"patch": 16, "dim": 8}, {"x": T("B", 32, 32)}, "GF121"),
    ("patch_embed", {"patch": 0, "dim": 8}, {"x": T("B", 3, 32, 32)}, "GF102"),
    # tubelets of a video [B, C, T, H, W]: time-major tokens, symbolic sides, frames that don't tile
    ("patch_embed", {"tubelet": 2, "patch": 16, "dim": 768}, {"x": T("B", 3, 32, 224, 224)}, ("B", "3136", "768")),
    ("patch_embed", {"tubelet": 2, "patch": 16, "dim": 8}, {"x": T("B", 3, "T", "H", "W")},
     ("B", "(T // 2)*(H // 16)*(W // 16)", "8")),
    ("patch_embed", {"tubelet": 2, "patch": 4, "stride": 2, "dim": 8}, {"x": T("B", 1, 4, 8, 6)}, ("B", "12", "8")),
    ("patch_embed", {"tubelet": 2, "patch": 16, "dim": 8}, {"x": T("B", 3, 7, 32, 32)}, "GF274"),
    ("patch_embed", {"tubelet": 4, "patch": 16, "dim": 8}, {"x": T("B", 3, 3, 32, 32)}, "GF274"),     # < 1 tubelet
    ("patch_embed", {"tubelet": 2, "patch": 16, "dim": 8, "remainder": "drop"}, {"x": T("B", 3, 7, 32, 32)},
     ("B", "12", "8")),
    ("patch_embed", {"tubelet": 2, "patch": 16, "dim": 8}, {"x": T("B", 3, 8, 33, 32)}, "GF123"),
    ("patch_embed", {"tubelet": 2, "patch": 16, "dim": 8, "grid": True}, {"x": T("B", 3, 8, 32, 32)}, "GF275"),
    ("patch_embed", {"tubelet": 2, "patch": 16, "dim": 8, "remainder": "pad"}, {"x": T("B", 3, 8, 32, 32)}, "GF275"),
    ("patch_embed", {"tubelet": 2, "patch": 16, "dim": 8}, {"x": T("B", 3, 32, 32)}, "GF121"),        # an image
    ("patch_embed", {"patch": 16, "dim": 8}, {"x": T("B", 3, 8, 32, 32)}, "GF121"),                  # no tubelet
    ("patch_embed", {"tubelet": 0, "patch": 16, "dim": 8}, {"x": T("B", 3, 8, 32, 32)}, "GF102"),
    ("prepend_tokens", {"count": 1}, {"x": T("B", "n", 8)}, ("B", "n + 1", "8")),
    ("prepend_tokens", {"count": 2}, {"x": T("B", 1212, 8)}, ("B", "1214", "8")),
    ("prepend_tokens", {"count": 1}, {"x": T("B", 8)}, "GF121"),
    ("prepend_tokens", {"count": 4, "at": 1}, {"x": T("B", "n", 8)}, ("B", "n + 4", "8")),   # DINOv2's registers
    ("prepend_tokens", {"count": 0, "at": 1}, {"x": T("B", 5, 8)}, ("B", "5", "8")),         # switched off
    ("prepend_tokens", {"count": 2, "at": 6}, {"x": T("B", 5, 8)}, "GF102"),
    ("prepend_tokens", {"count": -1}, {"x": T("B", 5, 8)}, "GF102"),
    ("mask_tokens", {}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("mask_tokens", {}, {"x": T("B", "n", 8), "mask": T("B", "n", dtype="bool")}, ("B", "n", "8")),
    ("mask_tokens", {}, {"x": T("B", "n", 8), "mask": T("B", "m", dtype="bool")}, "GF120"),
    ("mask_tokens", {}, {"x": T("B", "n", 8), "mask": T("B", "n")}, "GF122"),
    # DINOv2's positions: a 4×4 table (patch 7) resized to the grid of a 35×49 image (5 × 7 patches)
    ("grid_positions", {"table": 4, "patch": 7}, {"x": T("B", 17, 8), "image": T("B", 3, 28, 28)}, ("B", "17", "8")),
    ("grid_positions", {"table": 4, "patch": 7}, {"x": T("B", 36, 8), "image": T("B", 3, 35, 49)}, ("B", "36", "8")),
    ("grid_positions", {"table": 4, "patch": 7, "prefix": 0}, {"x": T("B", 35, 8), "image": T("B", 3, 37, 50)},
     ("B", "35", "8")),                                                                       # remainders dropped
    ("grid_positions", {"table": 4, "patch": 7}, {"x": T("B", "(H // 7)*(W // 7) + 1", 8),
                                                  "image": T("B", 3, "H", "W")}, ("B", "(H // 7)*(W // 7) + 1", "8")),
    ("grid_positions", {"table": 4, "patch": 7}, {"x": T("B", 17, 8), "image": T("B", 3, 35, 49)}, "GF232"),
    ("grid_positions", {"table": 4, "patch": 7}, {"x": T("B", 1, 8), "image": T("B", 3, 5, 28)}, "GF232"),
    ("grid_positions", {"table": 4, "patch": 7}, {"x": T("B", 17, 8), "image": T("B", 28, 28)}, "GF121"),
    ("grid_positions", {"table": 0, "patch": 7}, {"x": T("B", 1, 8), "image": T("B", 3, 28, 28)}, "GF102"),
    ("latents", {"count": 16, "dim": 32}, {"like": T("B", "m", 3)}, ("B", "16", "32")),
    ("latents", {"count": 0, "dim": 32}, {"like": T("B", "m", 3)}, "GF102"),
    ("spectrogram", {"n_fft": 400, "hop": 160, "mels": 128}, {"x": T("B", 163680)}, ("B", "128", "1024")),
    ("spectrogram", {"n_fft": 400, "hop": 160, "mels": 80}, {"x": T("B", "s")}, ("B", "80", "s // 160 + 1")),
    ("spectrogram", {"n_fft": 64, "hop": 16, "mels": 8, "center": False}, {"x": T("B", 160)}, ("B", "8", "7")),
    ("spectrogram", {"n_fft": 64, "mels": 8, "center": False}, {"x": T("B", 63)}, "GF120"),
    ("spectrogram", {"n_fft": 64, "win_length": 128, "mels": 8}, {"x": T("B", 640)}, "GF102"),
    ("spectrogram", {"n_fft": 64, "mels": 8}, {"x": T("B", 2, 640)}, "GF121"),
    # conv1d: Whisper's front end (k3 p1, then k3 s2 p1), symbolic and concrete lengths, too short an input
    ("conv1d", {"out": 512, "kernel": 3, "padding": 1}, {"x": T("B", 80, 3000)}, ("B", "512", "3000")),
    ("conv1d", {"out": 512, "kernel": 3, "stride": 2, "padding": 1}, {"x": T("B", 512, 3000)}, ("B", "512", "1500")),
    ("conv1d", {"out": 8, "kernel": 3, "stride": 2, "padding": 1}, {"x": T("B", 4, "2*S")}, ("B", "8", "S")),
    ("conv1d", {"out": 8, "kernel": 3, "stride": 2, "padding": 1}, {"x": T("B", 4, "T")}, ("B", "8", "(T - 1) // 2 + 1")),
    ("conv1d", {"out": 8, "kernel": 5, "dilation": 2}, {"x": T("B", 4, "T")}, ("B", "8", "T - 8")),
    ("conv1d", {"out": 8, "kernel": 4, "stride": 3, "padding": 2, "dilation": 2}, {"x": T("B", 4, 10)}, ("B", "8", "3")),
    ("conv1d", {"out": 8, "kernel": 3}, {"x": T("B", 4, 3)}, ("B", "8", "1")),
    ("conv1d", {"out": 8, "kernel": 3}, {"x": T("B", 4, 2)}, "GF195"),                # one frame short
    ("conv1d", {"out": 8, "kernel": 5, "dilation": 2, "padding": 1}, {"x": T("B", 4, 6)}, "GF195"),
    ("conv1d", {"out": 8, "kernel": 3, "stride": 0}, {"x": T("B", 4, 9)}, "GF102"),
    ("conv1d", {"out": 8, "kernel": 3, "padding": -1}, {"x": T("B", 4, 9)}, "GF102"),
    ("conv1d", {"out": 8, "kernel": 3}, {"x": T("B", "C", 9)}, "GF124"),                # channels unknown
    ("conv1d", {"out": 8, "kernel": 3}, {"x": T("B", 9)}, "GF121"),
    ("conv1d", {"out": 8, "kernel": 3}, {"x": T("B", 4, 9, dtype="int64")}, "GF122"),
    # grouped, weight-normalised, frames dropped: Wav2Vec2's positional convolution (k 128, p 64, one dropped)
    ("conv1d", {"out": 768, "kernel": 128, "padding": 64, "groups": 16, "weight_norm": 2, "drop_last": 1},
     {"x": T("B", 768, "t")}, ("B", "768", "t")),
    ("conv1d", {"out": 8, "kernel": 3, "groups": 3}, {"x": T("B", 4, 9)}, "GF267"),       # 4 channels
    ("conv1d", {"out": 6, "kernel": 3, "groups": 4}, {"x": T("B", 12, 9)}, "GF267"),      # 6 outputs
    ("conv1d", {"out": 8, "kernel": 3, "groups": 0}, {"x": T("B", 4, 9)}, "GF102"),
    ("conv1d", {"out": 8, "kernel": 3, "drop_last": 7}, {"x": T("B", 4, 9)}, "GF268"),    # 7 of 7 frames
    ("conv1d", {"out": 8, "kernel": 3, "drop_last": -1}, {"x": T("B", 4, 9)}, "GF102"),
    ("group_norm", {"groups": 512}, {"x": T("B", 512, "t")}, ("B", "512", "t")),
    ("group_norm", {"groups": 2}, {"x": T("B", 6, "H", "W")}, ("B", "6", "H", "W")),
    ("group_norm", {"groups": 4}, {"x": T("B", 6, "t")}, "GF267"),
    ("group_norm", {"groups": 2}, {"x": T("B", 6)}, "GF121"),                             # no positions
    ("group_norm", {"groups": 2}, {"x": T("B", "C", 5)}, "GF124"),
    ("slice", {"axis": 1, "start": 0, "stop": 2}, {"x": T("B", "n", 8)}, ("B", "2", "8")),
    ("slice", {"axis": -1, "start": 3}, {"x": T("B", "n", 8)}, ("B", "n", "5")),
    ("slice", {"axis": 1, "start": 1}, {"x": T("B", "n", 8)}, ("B", "n - 1", "8")),
    ("slice", {"axis": 1, "start": 0, "stop": 9}, {"x": T("B", 4, 8)}, "GF120"),
    ("slice", {"axis": 3}, {"x": T("B", 4, 8)}, "GF102"),
    ("transpose", {"axes": [1, 2]}, {"x": T("B", "frames", 128)}, ("B", "128", "frames")),
    ("transpose", {}, {"x": T("N", "M")}, ("M", "N")),
    ("transpose", {"axes": [0, 2]}, {"x": T("N", "M")}, "GF102"),
    ("unsqueeze", {"axis": 1}, {"x": T("B", 128, 1024)}, ("B", "1", "128", "1024")),
    ("unsqueeze", {"axis": -1}, {"x": T("B", 5)}, ("B", "5", "1")),
    ("unsqueeze", {"axis": 4}, {"x": T("B", 5)}, "GF102"),
    ("interleave", {}, {"xs0": T("B", "T", 8), "xs1": T("B", "T", 8), "xs2": T("B", "T", 8)}, ("B", "3*T", "8")),
    ("interleave", {}, {"xs0": T("B", "T", 8), "xs1": T("B", "S", 8)}, "GF120"),
    ("interleave", {}, {"xs0": T("B", "T", dtype="int64"), "xs1": T("B", "T", dtype="int64")},   # masks
     ("B", "2*T")),
    ("interleave", {}, {"xs0": T("B", "T", dtype="int64"), "xs1": T("B", "T")}, "GF122"),
    ("interleave", {}, {"xs0": T("B"), "xs1": T("B")}, "GF121"),
    ("logical_not", {}, {"x": T("B", "n", dtype="bool")}, ("B", "n")),
    ("logical_not", {}, {"x": T("B", "n", dtype="int64")}, ("B", "n")),
    ("logical_not", {}, {"x": T("B", "n")}, "GF122"),
    ("apply_mask", {}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("apply_mask", {}, {"x": T("B", "n", 8), "mask": T("B", "n", dtype="int64")}, ("B", "n", "8")),
    ("apply_mask", {"axis": -1}, {"x": T("B", 4, "n"), "mask": T("B", "n", dtype="bool")}, ("B", "4", "n")),
    ("apply_mask", {}, {"x": T("B", "n", 8), "mask": T("B", "m", dtype="bool")}, "GF120"),
    ("apply_mask", {}, {"x": T("B", "n", 8), "mask": T("B", "n")}, "GF122"),
    ("apply_mask", {}, {"x": T("B", "n", 8), "mask": T("B", "n", 1, dtype="bool")}, "GF121"),
    ("apply_mask", {"axis": 0}, {"x": T("B", "n", 8)}, "GF102"),
    ("apply_mask", {"axis": 3}, {"x": T("B", "n", 8)}, "GF102"),
    ("deinterleave", {"streams": 3, "index": 1}, {"x": T("B", "3*T", 8)}, ("B", "T", "8")),
    ("deinterleave", {"streams": 3, "index": 2}, {"x": T("B", 12, 8)}, ("B", "4", "8")),
    ("deinterleave", {"streams": 3, "index": 0}, {"x": T("B", 10, 8)}, "GF123"),
    ("deinterleave", {"streams": 3, "index": 0}, {"x": T("B", "n", 8)}, "GF123"),
    ("deinterleave", {"streams": 3, "index": 3}, {"x": T("B", "3*T", 8)}, "GF102"),
    ("table_row", {"rows": 1024, "index": 0}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("table_row", {"rows": 4, "index": 4}, {"x": T("B", "n", 8)}, "GF102"),
    ("vestigial", {"rows": 1, "cols": 8}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("relative_position_bias", {"heads": 12}, {"x": T("B", "n", 8)}, ("1", "12", "n", "n")),
    ("relative_position_bias", {"heads": 3, "buckets": 2, "causal": True}, {"x": T("B", "t", dtype="int64")},
     ("1", "3", "t", "t")),
    ("relative_position_bias", {"heads": 3, "buckets": 3}, {"x": T("B", "n", 8)}, "GF102"),   # 1 per side
    ("relative_position_bias", {"heads": 3, "buckets": 32, "max_distance": 8}, {"x": T("B", "n", 8)}, "GF102"),
    ("relative_position_bias", {"heads": 3}, {"x": T("n")}, "GF121"),
    ("token_at", {}, {"x": T("B", "n", 8), "ids": T("B", "n", dtype="int64")}, ("B", "8")),
    ("token_at", {"select": "first", "token": 7}, {"x": T("B", "n", 8), "ids": T("B", "n", dtype="int64")},
     ("B", "8")),
    ("token_at", {}, {"x": T("B", "n", 8), "ids": T("B", "m", dtype="int64")}, "GF120"),
    ("token_at", {}, {"x": T("B", "n", 8), "ids": T("B", "n")}, "GF122"),
    ("l2_normalize", {}, {"x": T("B", 8)}, ("B", "8")),
    ("equal", {"to": 5}, {"x": T("B", "n", dtype="int64")}, ("B", "n")),
    ("equal", {"to": 5}, {"x": T("B", "n")}, "GF122"),
    ("scatter_tokens", {}, {"x": T("B", "n", 8), "mask": T("B", "n", dtype="bool"), "features": T("B", 4, 8)},
     ("B", "n", "8")),
    ("scatter_tokens", {}, {"x": T("B", "n", 8), "mask": T("B", "n", dtype="int64"), "features": T("N", 8)},
     ("B", "n", "8")),
    ("scatter_tokens", {}, {"x": T("B", "n", 8), "mask": T("B", "n", dtype="bool"), "features": T("B", 4, 6)},
     "GF120"),
    ("scatter_tokens", {}, {"x": T("B", 8, 8), "mask": T("B", 8, dtype="bool"), "features": T("B", 9, 8)},
     "GF239"),
    ("scatter_tokens", {}, {"x": T("B", "n", 8), "mask": T("B", "m", dtype="bool"), "features": T("N", 8)},
     "GF120"),
    ("l2_normalize", {}, {"x": T("B", 8, dtype="int64")}, "GF122"),
    ("cosine_logits", {}, {"a": T("Bt", 8), "b": T("Bi", 8)}, ("Bt", "Bi")),
    ("cosine_logits", {}, {"a": T("Bt", 8), "b": T("Bi", 6)}, "GF120"),
    ("cosine_logits", {}, {"a": T("Bt", "n", 8), "b": T("Bi", 8)}, "GF121"),
    ("quick_gelu", {}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
    ("scale", {"by": 0.5}, {"x": T("B", "n", 8)}, ("B", "n", "8")),
]


@pytest.mark.parametrize("op,attrs,ins,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_shape_rule(op, attrs, ins, expected):
    check_case(op, attrs, ins, expected)


def test_every_op_of_these_families_has_shape_cases():
    ours = {n for n, o in REGISTRY.items() if o.family in FAMILIES}
    assert ours - {c[0] for c in CASES} == set()


def test_non_tiling_patch_message_has_the_numbers():
    op = REGISTRY["patch_embed"]
    with pytest.raises(ShapeError) as err:
        op.shape(op.attrs(patch=16, dim=8), {"x": T("B", 3, 225, 224)})
    assert "patch size 16 with stride 16 does not tile height 225: (225 - 16) / 16 is not an integer" in err.value.message
    assert "224 or 240" in err.value.help and "remainder: drop" in err.value.help


@pytest.mark.parametrize("op,attrs", [
    ("token_at", {"select": "first"}), ("slice", {"start": 3, "stop": 2}),
    ("spectrogram", {"f_max": 9000.0}), ("spectrogram", {"f_min": 100.0, "f_max": 50.0}),
    ("patch_embed", {"patch": 16, "dim": 8, "remainder": "wrap"}), ("scale", {"by": 0.5, "extra": 1}),
])
def test_bad_attrs_are_rejected(op, attrs):
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        REGISTRY[op].attrs.model_validate(attrs)


def test_parameters_are_named_and_sized_like_the_references():
    x = T("B", 3, 224, 224)
    pe = REGISTRY["patch_embed"]
    assert pe.params(pe.attrs(patch=16, dim=768), {"x": x}) == {"weight": (768, 3, 16, 16), "bias": (768,)}
    assert pe.params(pe.attrs(patch=32, dim=768, bias=False), {"x": x}) == {"weight": (768, 3, 32, 32)}
    assert pe.params(pe.attrs(tubelet=2, patch=16, dim=768), {"x": T("B", 3, 32, 224, 224)}) \
        == {"weight": (768, 3, 2, 16, 16), "bias": (768,)}             # torch.nn.Conv3d's
    cos = REGISTRY["cosine_logits"]
    assert cos.params(cos.attrs(), {"a": T(2, 8), "b": T(3, 8)}) == {"logit_scale": ()}
    assert cos.params(cos.attrs(scale="none"), {"a": T(2, 8), "b": T(3, 8)}) == {}
    assert cos.params(cos.attrs(bias=True), {"a": T(2, 8), "b": T(3, 8)}) == {"logit_scale": (), "logit_bias": ()}
    assert REGISTRY["prepend_tokens"].params(REGISTRY["prepend_tokens"].attrs(count=2), {"x": T("B", 5, 8)}) \
        == {"tokens": (2, 8)}
    assert REGISTRY["spectrogram"].params(REGISTRY["spectrogram"].attrs(), {"x": T("B", 1000)}) == {}
    conv = REGISTRY["conv1d"]
    assert conv.params(conv.attrs(out=512, kernel=3), {"x": T("B", 80, "T")}) == {"weight": (512, 80, 3),
                                                                                  "bias": (512,)}
    assert conv.params(conv.attrs(out=6, kernel=5, bias=False), {"x": T("B", 4, "T")}) == {"weight": (6, 4, 5)}


def test_short_conv_input_message_has_the_numbers():
    op = REGISTRY["conv1d"]
    with pytest.raises(ShapeError) as err:
        op.shape(op.attrs(out=8, kernel=5, dilation=2, padding=1), {"x": T("B", 4, 6)})
    assert err.value.port == "x"
    assert "output length 0 ≤ 0: 6 input frames + 2·1 padding are fewer than the 9 frames" in err.value.message
    assert "floor((6 + 2·1 − 9) / 1) + 1 = 0" in err.value.help


def test_conv1d_flops_are_the_convolution():
    op = REGISTRY["conv1d"]
    a, x = op.attrs(out=512, kernel=3, stride=2, padding=1), T("B", 80, 3000)
    assert op.flops(a, {"x": x}, op.shape(a, {"x": x})).evaluate({"B": 1}) == 2 * 512 * 1500 * 80 * 3


def test_patch_embed_flops_are_the_convolution():
    pe = REGISTRY["patch_embed"]
    a, x = pe.attrs(patch=16, dim=768), T("B", 3, 224, 224)
    f = pe.flops(a, {"x": x}, pe.shape(a, {"x": x}))
    assert f.evaluate({"B": 1}) == 2 * 196 * 768 * 3 * 16 * 16
    a, x = pe.attrs(tubelet=2, patch=16, dim=768), T("B", 3, 32, 224, 224)
    f = pe.flops(a, {"x": x}, pe.shape(a, {"x": x}))
    assert f.evaluate({"B": 1}) == 2 * 3136 * 768 * 3 * 2 * 16 * 16


def test_tubelet_messages_have_the_numbers():
    pe = REGISTRY["patch_embed"]
    with pytest.raises(ShapeError) as err:
        pe.shape(pe.attrs(tubelet=2, patch=16, dim=8), {"x": T("B", 3, 7, 32, 32)})
    assert err.value.message == "a tubelet of 2 frames does not tile 7 frames: 7 / 2 is not an integer"
    assert err.value.help == ("make the frames 6 or 8, or set `remainder: drop` to drop the last 1 frame as "
                              "torch.nn.Conv3d does") and err.value.attr == "tubelet"
    with pytest.raises(ShapeError) as err:
        pe.shape(pe.attrs(patch=16, dim=8), {"x": T("B", 3, 8, 32, 32)})
    assert "a video `[B, C, T, H, W]` needs `tubelet`" in err.value.message


# ---------------------------------------------------------------- torch lowerings

torch = pytest.importorskip("torch")
from graphformer.backends.torch import LOWERINGS  # noqa: E402
from graphformer.backends.torch.audio import mel_filters  # noqa: E402


def lower(op: str, attrs: dict, types: dict):
    node = IRNode("n", op, REGISTRY[op].attrs.model_validate(attrs), {p: f"in.{p}" for p in types}, None)
    module = LOWERINGS[op](node, types)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return module.eval()


def C(*dims, dtype="float32") -> TensorType:
    return TensorType(tuple(Dim.const(d) for d in dims), dtype)


@pytest.mark.parametrize("patch,stride,stride_w,h,w,bias", [
    (4, None, None, 16, 12, True), (4, 2, None, 10, 11, True), (5, 3, 4, 17, 23, False), (16, 10, 10, 40, 101, True),
])
def test_patch_embed_equals_conv2d(patch, stride, stride_w, h, w, bias):
    attrs = {"patch": patch, "dim": 6, "bias": bias, "remainder": "drop"}
    if stride:
        attrs["stride"] = stride
    if stride_w:
        attrs["stride_w"] = stride_w
    types = {"x": C(2, 3, h, w)}
    mod = lower("patch_embed", attrs, types)
    conv = torch.nn.Conv2d(3, 6, patch, stride=(stride or patch, stride_w or stride or patch), bias=bias)
    with torch.no_grad():
        conv.weight.copy_(mod.weight)
        if bias:
            conv.bias.copy_(mod.bias)
        x = torch.randn(2, 3, h, w)
        want = conv(x).flatten(2).transpose(1, 2)
        got = mod(x)
    out = REGISTRY["patch_embed"].shape(REGISTRY["patch_embed"].attrs(**attrs), types)
    assert tuple(got.shape) == tuple(d.value for d in out.shape)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tubelet,patch,stride,frames,h,w,bias", [
    (2, 4, None, 4, 8, 12, True), (3, 5, 3, 7, 11, 13, False), (1, 4, None, 3, 8, 8, True),
])
def test_tubelet_patch_embed_equals_conv3d(tubelet, patch, stride, frames, h, w, bias):
    attrs = {"tubelet": tubelet, "patch": patch, "dim": 6, "bias": bias, "remainder": "drop"}
    if stride:
        attrs["stride"] = stride
    types = {"x": C(2, 3, frames, h, w)}
    mod = lower("patch_embed", attrs, types)
    conv = torch.nn.Conv3d(3, 6, (tubelet, patch, patch), stride=(tubelet, stride or patch, stride or patch),
                           bias=bias)
    with torch.no_grad():
        conv.load_state_dict(mod.state_dict())              # the same names and shapes as Conv3d's
        x = torch.randn(2, 3, frames, h, w)
        want = conv(x).flatten(2).transpose(1, 2)
        got = mod(x)
    out = REGISTRY["patch_embed"].shape(REGISTRY["patch_embed"].attrs(**attrs), types)
    assert tuple(got.shape) == tuple(d.value for d in out.shape)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding,dilation,t,bias", [
    (3, 1, 1, 1, 11, True), (3, 2, 1, 1, 11, True), (4, 3, 2, 2, 17, False), (1, 1, 0, 1, 5, True), (5, 2, 0, 3, 13, True),
])
def test_conv1d_equals_torch_conv1d(kernel, stride, padding, dilation, t, bias):
    attrs = {"out": 6, "kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation, "bias": bias}
    types = {"x": C(2, 5, t)}
    mod = lower("conv1d", attrs, types)
    conv = torch.nn.Conv1d(5, 6, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias)
    with torch.no_grad():
        conv.load_state_dict(mod.state_dict())
        x = torch.randn(2, 5, t)
        want, got = conv(x), mod(x)
    out = REGISTRY["conv1d"].shape(REGISTRY["conv1d"].attrs(**attrs), types)
    assert tuple(got.shape) == tuple(d.value for d in out.shape)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale,center,win", [("htk", True, None), ("slaney", True, 48), ("htk", False, None)])
def test_spectrogram_equals_transformers_numpy_reference(scale, center, win):
    audio_utils = pytest.importorskip("transformers.audio_utils")
    import numpy as np
    sr, n_fft, hop, mels = 8000, 64, 16, 12
    attrs = {"sample_rate": sr, "n_fft": n_fft, "hop": hop, "mels": mels, "mel_scale": scale, "center": center,
             "f_min": 50.0, "f_max": 3500.0}
    if win:
        attrs["win_length"] = win
    wave = torch.randn(2, 1000, generator=torch.Generator().manual_seed(3))
    mod = lower("spectrogram", attrs, {"x": C(2, 1000)})
    got = mod(wave)
    out = REGISTRY["spectrogram"].shape(REGISTRY["spectrogram"].attrs(**attrs), {"x": C(2, 1000)})
    assert tuple(got.shape) == tuple(d.value for d in out.shape)
    fb = audio_utils.mel_filter_bank(n_fft // 2 + 1, mels, 50.0, 3500.0, sr, norm=None, mel_scale=scale)
    torch.testing.assert_close(mel_filters(n_fft // 2 + 1, mels, sr, 50.0, 3500.0, scale),
                               torch.from_numpy(fb).float(), rtol=1e-5, atol=1e-6)
    # transformers takes a window of frame_length; torch.stft centres a shorter window inside n_fft
    w = win or n_fft
    window = np.zeros(n_fft)
    left = (n_fft - w) // 2
    window[left:left + w] = audio_utils.window_function(w, "hann", periodic=True)
    for b in range(2):
        want = audio_utils.spectrogram(wave[b].double().numpy(), window, n_fft, hop, power=2.0, center=center,
                                       pad_mode="reflect", mel_filters=fb, mel_floor=1e-10, log_mel="log",
                                       dtype=np.float64)
        torch.testing.assert_close(got[b].double(), torch.from_numpy(want), rtol=1e-4, atol=1e-4)


def test_interleave_and_deinterleave_match_the_decision_transformer_layout():
    r, s, a = (torch.randn(2, 5, 4) for _ in range(3))
    stacked = lower("interleave", {}, {f"xs{i}": C(2, 5, 4) for i in range(3)})(r, s, a)
    # the reference's own construction (transformers DecisionTransformerModel.forward)
    want = torch.stack((r, s, a), dim=1).permute(0, 2, 1, 3).reshape(2, 15, 4)
    assert torch.equal(stacked, want)
    assert torch.equal(stacked[:, 3], r[:, 1]) and torch.equal(stacked[:, 4], s[:, 1])
    for j, stream in enumerate((r, s, a)):
        back = lower("deinterleave", {"streams": 3, "index": j}, {"x": C(2, 15, 4)})(stacked)
        assert torch.equal(back, stream)


def test_token_at_picks_the_argmax_or_first_match():
    x = torch.randn(3, 6, 4)
    ids = torch.tensor([[5, 9, 2, 0, 0, 0], [1, 2, 3, 9, 9, 0], [9, 1, 1, 1, 1, 1]])
    types = {"x": C(3, 6, 4), "ids": C(3, 6, dtype="int64")}
    got = lower("token_at", {}, types)(x, ids)
    assert torch.equal(got, torch.stack([x[0, 1], x[1, 3], x[2, 0]]))
    got = lower("token_at", {"select": "first", "token": 2}, types)(x, ids)
    assert torch.equal(got, torch.stack([x[0, 2], x[1, 1], x[2, 0]]))  # no match in row 2: position 0


def test_cosine_logits_l2_normalize_and_scale():
    a, b = torch.randn(3, 8), torch.randn(2, 8)
    mod = lower("cosine_logits", {}, {"a": C(3, 8), "b": C(2, 8)})
    want = torch.exp(mod.logit_scale) * torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1)
    torch.testing.assert_close(mod(a, b), want)
    mod.init_parameters()
    assert mod.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    unit = lower("l2_normalize", {}, {"x": C(3, 8)})(a)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3))
    plain = lower("cosine_logits", {"normalize": False, "scale": "none"}, {"a": C(3, 8), "b": C(2, 8)})
    torch.testing.assert_close(plain(a, b), a @ b.T)
    siglip = lower("cosine_logits", {"normalize": False, "bias": True}, {"a": C(3, 8), "b": C(2, 8)})
    siglip.init_parameters()   # the paper's bias −10; SigLIP's logits are exp(logit_scale) · a·b + logit_bias
    assert siglip.logit_bias.item() == -10.0
    torch.testing.assert_close(siglip(a, b), torch.exp(siglip.logit_scale) * (a @ b.T) + siglip.logit_bias)
    torch.testing.assert_close(lower("scale", {"by": 0.5}, {"x": C(3, 8)})(a), a / 2)


def test_layout_ops_prepend_latents_and_rows():
    x = torch.randn(2, 5, 4)
    cls = lower("prepend_tokens", {"count": 2}, {"x": C(2, 5, 4)})
    y = cls(x)
    assert torch.equal(y[:, 2:], x) and torch.equal(y[1, :2], cls.tokens)
    lat = lower("latents", {"count": 3, "dim": 7}, {"like": C(2, 9, 1)})
    assert torch.equal(lat(torch.randn(2, 9, 1)), lat.latents.expand(2, 3, 7))
    row = lower("table_row", {"rows": 6, "index": 2}, {"x": C(2, 5, 4)})
    torch.testing.assert_close(row(x), x + row.weight[2])
    assert lower("vestigial", {"rows": 1, "cols": 4}, {"x": C(2, 5, 4)})(x) is x
    assert torch.equal(lower("slice", {"axis": 1, "start": 1, "stop": 3}, {"x": C(2, 5, 4)})(x), x[:, 1:3])
    assert torch.equal(lower("slice", {"axis": -1, "start": 2}, {"x": C(2, 5, 4)})(x), x[..., 2:])
    assert torch.equal(lower("transpose", {"axes": [1, 2]}, {"x": C(2, 5, 4)})(x), x.transpose(1, 2))
    assert lower("unsqueeze", {"axis": 1}, {"x": C(2, 5, 4)})(x).shape == (2, 1, 5, 4)
    torch.testing.assert_close(lower("quick_gelu", {}, {"x": C(2, 5, 4)})(x), x * torch.sigmoid(1.702 * x))


def test_inlined_expressions_equal_the_modules():
    """The execution plan inlines a parameter-free op's template; it must compute what `forward` does."""
    import torch.nn.functional as F
    x, ids = torch.randn(2, 6, 4), torch.randint(0, 9, (2, 6))
    cases = [("slice", {"axis": 1, "start": 1, "stop": 3}, {"x": C(2, 6, 4)}, [x]),
             ("transpose", {"axes": [1, 2]}, {"x": C(2, 6, 4)}, [x]),
             ("unsqueeze", {"axis": -1}, {"x": C(2, 6, 4)}, [x]),
             ("interleave", {}, {"xs0": C(2, 6, 4), "xs1": C(2, 6, 4)}, [x, x + 1]),
             ("deinterleave", {"streams": 3, "index": 2}, {"x": C(2, 6, 4)}, [x]),
             ("token_at", {}, {"x": C(2, 6, 4), "ids": C(2, 6, dtype="int64")}, [x, ids]),
             ("token_at", {"select": "first", "token": 3}, {"x": C(2, 6, 4), "ids": C(2, 6, dtype="int64")}, [x, ids]),
             ("l2_normalize", {}, {"x": C(2, 6, 4)}, [x]),
             ("quick_gelu", {}, {"x": C(2, 6, 4)}, [x]),
             ("scale", {"by": 0.5}, {"x": C(2, 6, 4)}, [x]),
             ("equal", {"to": 3}, {"x": C(2, 6, dtype="int64")}, [ids])]
    for op, attrs, types, args in cases:
        mod = lower(op, attrs, types)
        names = [f"a{i}" for i in range(len(args))]
        expr = mod.inline(names, False)
        got = eval(expr, {"torch": torch, "F": F}, dict(zip(names, args)))  # noqa: S307 — our own template
        assert torch.equal(got, mod(*args)), (op, expr)
