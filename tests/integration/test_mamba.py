"""Parity of specs/mamba.yaml (selective_scan, a causal depthwise conv1d, softplus step sizes) with transformers'
MambaModel and MambaForCausalLM.

References are built offline from a tiny odd config with random weights (transformers runs its pure-torch
path: no CUDA kernels here), every parameter perturbed (so no bias is 0, no norm scale 1, A_log not the S4D
init): width 20, inner 40, state 5, dt_rank 3, two layers, conv bias on, in/out projections with biases in
one case. fp32, eval mode, max abs error ≤ 1e-5 × the output's scale, forward and every parameter's gradient.
ONNX Runtime's run of the export against the reference too. At the published state-spaces/mamba-130m-hf config, on the meta device: the parameter counts equal the
references' and the weight map covers their whole state dicts. Decoding (`generate`, `export --with-past`) is
test_mamba_generate.py's.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import assert_close, assert_lm_grads, assert_ort_close, imported, ort_session, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/mamba.yaml"
SMALL = dict(vocab_size=97, hidden_size=20, num_hidden_layers=2, state_size=5, expand=2, conv_kernel=4,
             time_step_rank=3, layer_norm_epsilon=1e-5)
OVERRIDES = dict(vocab=97, d_model=20, layers=2, state=5, dt_rank=3)
# state-spaces/mamba-130m-hf's config.json (its other fields are MambaConfig's defaults)
PUBLISHED = dict(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2,
                 conv_kernel=4, time_step_rank=48, use_bias=False, use_conv_bias=True, tie_word_embeddings=True)


def reference(head: bool = True, bias: bool = False):
    config = T.MambaConfig(use_bias=bias, **SMALL)
    return randomize((T.MambaForCausalLM if head else T.MambaModel)(config))


def spec(head: bool = True, bias: bool = False):
    return load(SPEC, overrides={**OVERRIDES, "head": head, "bias": bias})


def tokens(b: int = 3, n: int = 9, seed: int = 1):
    return torch.randint(0, 97, (b, n), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- counts and maps at the published config

@pytest.mark.parametrize("head,make", [(True, T.MambaForCausalLM), (False, T.MambaModel)])
def test_published_counts_and_maps_equal_the_references(head, make):
    with torch.device("meta"):
        ref = make(T.MambaConfig(**PUBLISHED))
    s = load(SPEC, overrides={"head": head})
    count = sum(p.numel() for p in ref.parameters())
    assert total_params(s.ir) == count == 129_135_360
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == count


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("bias", [False, True])
def test_logits_equal_transformers(bias):
    ref = reference(bias=bias)
    model = ours(spec(bias=bias), ref)
    for b, n in ((1, 1), (3, 9)):
        ids = tokens(b, n, seed=n)
        with torch.no_grad():
            assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits, f"mamba logits B={b} n={n}")


def test_hidden_states_equal_the_backbone():
    ref = reference(head=False)
    model = ours(spec(head=False), ref)
    ids = tokens()
    with torch.no_grad():
        assert_close(model(tokens=ids)["hidden"], ref(input_ids=ids).last_hidden_state, "mamba hidden")


def test_right_padding_leaves_the_real_positions_alone():
    """The scan and the convolution are causal: what follows a sequence's last real token cannot reach it,
    so right-padded batches need no mask (transformers' attention_mask zeroes the pads, with the same result)."""
    ref = reference()
    model = ours(spec(), ref)
    ids = tokens(2, 9)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        got = model(tokens=ids)["logits"]
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert_close(got[mask.bool()], want[mask.bool()], "mamba logits, right-padded")


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padding_mask_equals_transformers_at_every_position(side):
    """With `attention_mask` both zero the padding's states before in_proj and after the convolution
    (`apply_mask`), so left padding (pads before the tokens) is exact too, pads included."""
    ref = reference()
    model = ours(spec(), ref)
    ids = tokens(3, 9)
    mask = torch.ones_like(ids)
    pads = (slice(None, 3), slice(None, 5)) if side == "left" else (slice(6, None), slice(4, None))
    mask[1, pads[0]], mask[2, pads[1]] = 0, 0
    with torch.no_grad():
        got = model(tokens=ids, attention_mask=mask)["logits"]
        want = ref(input_ids=ids, attention_mask=mask).logits
        unpadded = model(tokens=ids[1:2, 3:] if side == "left" else ids[1:2, :6])["logits"]
    assert_close(got, want, f"mamba logits, {side}-padded, every position")
    real = got[1:2, 3:] if side == "left" else got[1:2, :6]
    assert_close(real, unpadded, f"mamba logits, {side}-padded row against the row alone")


def test_gradients_equal_transformers():
    s, ref = spec(bias=True), reference(bias=True)
    model = ours(s, ref)
    assert_lm_grads(model.train(), ref.train(), s, tokens(2, 7), "mamba")


def test_onnx_runtime_equals_transformers():
    """The export (one ONNX Scan per layer) at two batch sizes and lengths, against the reference itself."""
    ref = reference()
    s = spec()
    sess = ort_session(s, ours(s, ref))
    for b, n in ((1, 2), (3, 13)):
        ids = tokens(b, n, seed=b)
        with torch.no_grad():
            want = ref(input_ids=ids).logits
        assert_ort_close(sess, {"tokens": ids}, {"logits": want}, f"mamba onnx B={b} n={n}")


# ---------------------------------------------------------------- import hf

@pytest.mark.parametrize("head", [True, False])
def test_import_hf_reads_a_saved_model(head, tmp_path, capsys):
    """save_pretrained → `import hf` → the spec with the checkpoint's weights equals the reference (dt_rank
    given, intermediate_size derived from expand; the backbone alone when the checkpoint is MambaModel's)."""
    ref = reference(head=head, bias=head)
    s, model = imported(ref, tmp_path, capsys)
    assert s.params["dt_rank"] == 3 and s.params["inner"] == 40 and s.params["head"] is head
    ids = tokens()
    with torch.no_grad():
        if head:
            assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits, "import hf logits")
        else:
            assert_close(model(tokens=ids)["hidden"], ref(input_ids=ids).last_hidden_state, "import hf hidden")
