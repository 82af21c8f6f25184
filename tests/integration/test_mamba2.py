"""Parity of specs/mamba2.yaml (`selective_scan` with heads and groups, `norm` with groups) with transformers'
Mamba2Model and Mamba2ForCausalLM.

References are built offline from a tiny odd config with random weights (every parameter perturbed, so no
bias is 0, no norm scale 1, A_log and dt_bias not their init): width 24, inner 48 = 6 heads × 8, 3 groups,
state 5, two layers, chunk_size 4 (so the reference's chunked SSD crosses chunk boundaries at n = 9). No
mamba_ssm, causal_conv1d or `kernels` package is installed, so transformers runs its torch-only path. fp32,
eval mode, max abs error ≤ 1e-5 × the output's scale: logits (with and without padding masks), every
parameter's gradient, ONNX Runtime, greedy `generate` against Mamba2ForCausalLM.generate and each cached step
against a full recompute. At the published configs (Mamba-Codestral-7B: transformers' defaults; mamba2-130m),
on the meta device: parameter counts equal and the weight map covers the whole state dicts.
"""
from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import (assert_cached_steps, assert_close, assert_greedy_tokens, assert_lm_grads, assert_ort_close,  # noqa: E402
                    imported, lm_batch, ort_session, ours, randomize)

T.logging.set_verbosity_error()

SPEC = "specs/mamba2.yaml"
SMALL = dict(vocab_size=97, hidden_size=24, num_hidden_layers=2, state_size=5, expand=2, num_heads=6, head_dim=8,
             n_groups=3, conv_kernel=4, chunk_size=4, layer_norm_epsilon=1e-5, tie_word_embeddings=False)
OVERRIDES = dict(vocab=97, d_model=24, layers=2, state=5, heads=6, groups=3)
# state-spaces/mamba2-130m as transformers converts it (vocab padded to 50288, ngroups 1, tied embeddings)
MAMBA2_130M = dict(vocab_size=50288, hidden_size=768, num_hidden_layers=24, state_size=128, expand=2,
                   num_heads=24, head_dim=64, n_groups=1, tie_word_embeddings=True)


def reference(head: bool = True, bias: bool = False):
    config = T.Mamba2Config(use_bias=bias, **SMALL)
    return randomize((T.Mamba2ForCausalLM if head else T.Mamba2Model)(config))


def spec(head: bool = True, bias: bool = False):
    return load(SPEC, overrides={**OVERRIDES, "head": head, "bias": bias})


def tokens(b: int = 3, n: int = 9, seed: int = 1):
    return torch.randint(0, 97, (b, n), generator=torch.Generator().manual_seed(seed))


def test_the_reference_runs_its_torch_path(monkeypatch):
    """No mamba_ssm or causal_conv1d: transformers' kernel wrappers fall back to their torch functions on CPU,
    so the prompt runs the chunked SSD scan, whose segment sums (two per layer) we count."""
    from transformers.models.mamba2 import modeling_mamba2 as hf
    for package in ("mamba_ssm", "causal_conv1d"):
        assert importlib.util.find_spec(package) is None, package
    calls, segment_sum = [], hf.segment_sum
    monkeypatch.setattr(hf, "segment_sum", lambda t: calls.append(t.shape) or segment_sum(t))
    with torch.no_grad():
        reference()(input_ids=tokens())
    assert len(calls) == 2 * 2


# ---------------------------------------------------------------- counts and maps at the published configs

@pytest.mark.parametrize("preset,config,count", [
    ("mamba-codestral-7b", {}, 7_285_403_648),
    ("mamba2-130m", MAMBA2_130M, 128_989_632)])
@pytest.mark.parametrize("head", [True, False])
def test_published_counts_and_maps_equal_the_references(preset, config, count, head):
    with torch.device("meta"):
        ref = (T.Mamba2ForCausalLM if head else T.Mamba2Model)(T.Mamba2Config(**config))
    s = load(SPEC, preset=preset, overrides={"head": head})
    want = sum(p.numel() for p in ref.parameters())
    assert total_params(s.ir) == want
    if head:
        assert want == count
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == want


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("bias", [False, True])
def test_logits_equal_transformers(bias):
    ref = reference(bias=bias)
    model = ours(spec(bias=bias), ref)
    for b, n in ((1, 1), (3, 9)):
        ids = tokens(b, n, seed=n)
        with torch.no_grad():
            assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits, f"mamba2 logits B={b} n={n}")


def test_hidden_states_equal_the_backbone():
    ref = reference(head=False)
    model = ours(spec(head=False), ref)
    ids = tokens()
    with torch.no_grad():
        assert_close(model(tokens=ids)["hidden"], ref(input_ids=ids).last_hidden_state, "mamba2 hidden")


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padding_mask_equals_transformers_at_every_position(side):
    """Both zero the padding's states before in_proj and after the convolution (`apply_mask`); the step sizes
    are not masked, in either."""
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
    assert_close(got, want, f"mamba2 logits, {side}-padded, every position")
    real = got[1:2, 3:] if side == "left" else got[1:2, :6]
    assert_close(real, unpadded, f"mamba2 logits, {side}-padded row against the row alone")


def test_gradients_equal_transformers():
    """Every parameter's gradient; the reference in train mode still runs its torch path (its fused
    training kernel is absent)."""
    s, ref = spec(bias=True), reference(bias=True)
    model = ours(s, ref)
    assert_lm_grads(model.train(), ref.train(), s, tokens(2, 7), "mamba2")


def test_onnx_runtime_equals_transformers():
    """The export (one ONNX Scan per layer over [B, H, P, N] states) at two batch sizes and lengths."""
    ref = reference()
    s = spec()
    sess = ort_session(s, ours(s, ref))
    for b, n in ((1, 2), (3, 13)):
        ids = tokens(b, n, seed=b)
        with torch.no_grad():
            want = ref(input_ids=ids).logits
        assert_ort_close(sess, {"tokens": ids}, {"logits": want}, f"mamba2 onnx B={b} n={n}")


# ---------------------------------------------------------------- generation

@pytest.fixture(scope="module")
def pair():
    ref = reference()
    return ours(spec(), ref), ref


@pytest.mark.parametrize("padded", [False, True])
def test_greedy_tokens_equal_transformers(pair, padded):
    model, ref = pair
    ids, mask = lm_batch(b=3, n=7)
    assert_greedy_tokens(model, ref, ids, mask if padded else None, 12,
                         f"mamba2 greedy{', left-padded' if padded else ''}")


def test_each_step_equals_a_full_recompute(pair):
    model, _ = pair
    ids, mask = lm_batch(b=3, n=7)
    assert_cached_steps(model, ids, mask, 8, "mamba2 step", mask_input="attention_mask")


def test_the_carried_states_are_the_references_layout(pair):
    """Per layer the convolution's last kernel − 1 frames of x, B and C, and the scan's [heads, head_dim,
    state] state in float32, as transformers' cache holds them; nothing grows with the length."""
    from graphformer.backends.torch.generation import Decoder
    model, _ = pair
    dec = Decoder(model, 3, 11)
    shapes = {k: tuple(t.shape) for slot in dec.states.slots for k, t in slot.items()}
    assert shapes == {"frames": (3, 48 + 2 * 3 * 5, 3), "ssm": (3, 6, 8, 5)}
    assert all(slot["ssm"].dtype == torch.float32 for slot in dec.states.slots if "ssm" in slot)


def test_export_with_past_steps_equal_the_torch_steps(pair):
    """ONNX Runtime runs the exported step (fully checked) from zero states: the left-padded prompt, then one
    token at a time with the presents fed back as pasts ([B, heads, head_dim, state] for each scan); each
    step's logits equal the torch decoder's."""
    np = pytest.importorskip("numpy")
    from graphformer.backends.torch.generation import Decoder
    from parity import checked_onnx, onnx_session
    model, _ = pair
    proto = checked_onnx(model.spec, model, with_past=True)
    sess = onnx_session(proto)
    ids, mask = lm_batch(b=3, n=7)
    seq = graphformer.generate(model, ids, 6, mask=mask)
    dec = Decoder(model, 3, seq.shape[1])
    with torch.no_grad():
        want = [dec.prompt(ids, mask)] + [dec.step(seq[:, t]) for t in range(7, seq.shape[1] - 1)]
    states = {i.name: np.zeros([3] + [d.dim_value for d in i.type.tensor_type.shape.dim[1:]], np.float32)
              for i in proto.graph.input if i.name.startswith("past_states")}
    assert states["past_states.1.ssm"].shape == (3, 6, 8, 5)
    outputs = [o.name for o in proto.graph.output]
    for t, logits in enumerate(want):
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()} if t == 0 else \
            {"input_ids": seq[:, 6 + t:7 + t].numpy(), "attention_mask": np.ones((3, 1), np.int64)}
        got = dict(zip(outputs, sess.run(outputs, {**feed, **states})))
        assert_close(torch.from_numpy(got["logits"][:, -1]), logits, f"mamba2 onnx step {t}")
        states = {k.replace("present_", "past_"): v for k, v in got.items() if k.startswith("present_states")}


# ---------------------------------------------------------------- import hf

@pytest.mark.parametrize("head", [True, False])
def test_import_hf_reads_a_saved_model(head, tmp_path, capsys):
    """save_pretrained → `import hf` → the spec with the checkpoint's weights equals the reference (heads,
    groups and the inner width read from the config; the backbone alone when the checkpoint is
    Mamba2Model's)."""
    ref = reference(head=head, bias=head)
    s, model = imported(ref, tmp_path, capsys)
    assert (s.params["heads"], s.params["groups"], s.params["inner"], s.params["head"]) == (6, 3, 48, head)
    ids = tokens()
    with torch.no_grad():
        if head:
            assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits, "mamba2 import hf logits")
        else:
            assert_close(model(tokens=ids)["hidden"], ref(input_ids=ids).last_hidden_state, "mamba2 import hf hidden")


def test_import_hf_refuses_what_the_spec_does_not_compute(tmp_path, capsys):
    """A clamp on the step sizes other than transformers' default, and heads that don't split the inner width
    (transformers refuses those too), are refused by name, exit 1, no traceback."""
    import json
    from graphformer.cli import main
    base = {"model_type": "mamba2", **{k: v for k, v in SMALL.items() if k != "chunk_size"}}
    for bad, word in (({"time_step_limit": [0.0, 0.1]}, "time_step_limit"), ({"head_dim": 7}, "head_dim")):
        path = tmp_path / "config.json"
        path.write_text(json.dumps({**base, **bad}))
        rc = main(["import", "hf", str(path)])
        out, err = capsys.readouterr()
        assert rc == 1 and word in err and "Traceback" not in out + err, err
