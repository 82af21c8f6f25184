"""`graphformer.generate` on specs/mamba.yaml against transformers' MambaForCausalLM.generate: the decoder carries
each layer's causal-convolution frames and scan state (decoding.py's state slots, kvcache.StateCache), so a
step runs the one new token, and the tokens and logits equal the reference's and a full recompute's. The
export with past carries the same states as `past_states.*` inputs and `present_states.*` outputs: ONNX
Runtime's steps equal the torch decoder's.

The reference is built offline from a small odd config with random weights (every parameter perturbed): width
20, inner 40, state 5, dt_rank 3, two layers. Greedy, fp32, CPU; batch 3, with and without left padding
(transformers' Mamba applies the attention mask to the padding's states, and so does the spec's `apply_mask`).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.backends.torch.generation import Decoder, generation_bytes, plan_generation  # noqa: E402
from parity import assert_cached_steps, assert_greedy_tokens, lm_batch, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/mamba.yaml"
SMALL = dict(vocab_size=97, hidden_size=20, num_hidden_layers=2, state_size=5, expand=2, conv_kernel=4,
             time_step_rank=3, layer_norm_epsilon=1e-5)
OVERRIDES = dict(vocab=97, d_model=20, layers=2, state=5, dt_rank=3)
NEW = 16


@pytest.fixture(scope="module")
def pair():
    ref = randomize(T.MambaForCausalLM(T.MambaConfig(**SMALL)))
    return ours(graphformer.load(SPEC, overrides=OVERRIDES), ref), ref


@pytest.mark.parametrize("padded", [False, True])
def test_greedy_tokens_equal_transformers(pair, padded):
    model, ref = pair
    ids, mask = lm_batch(b=3, n=7)
    assert_greedy_tokens(model, ref, ids, mask if padded else None, NEW,
                         f"mamba greedy{', left-padded' if padded else ''}")


@pytest.mark.parametrize("padded", [False, True])
def test_each_step_equals_a_full_recompute(pair, padded):
    model, _ = pair
    ids, mask = lm_batch(b=3, n=7)
    assert_cached_steps(model, ids, mask if padded else None, 10, "mamba step", mask_input="attention_mask")


def test_a_step_runs_the_new_token_only(pair):
    """Work, not time: after the prompt, every scan and convolution sees sequences of length 1, and the
    states they carry do not grow with the length."""
    model, _ = pair
    ids, _ = lm_batch(b=3, n=6)
    plan = plan_generation(model.spec)
    assert sorted(plan.states) == [f"blocks.{i}.mixer.{op}" for i in range(2) for op in ("conv1d", "ssm")]
    seen: dict[str, list[int]] = {name: [] for name in plan.states}
    hooks = [model.node_module(name).register_forward_pre_hook(
        lambda m, args, name=name: seen[name].append(args[0].shape[2 if name.endswith("conv1d") else 1]))
        for name in plan.states]
    try:
        graphformer.generate(model, ids, 5)
    finally:
        for h in hooks:
            h.remove()
    for name, lengths in seen.items():
        assert lengths == [6, 1, 1, 1, 1], (name, lengths)   # the prompt, then 4 steps (the 5th token is sampled)
    dec = Decoder(model, 3, 11)
    shapes = {k: tuple(t.shape) for slot in dec.states.slots for k, t in slot.items()}
    assert shapes == {"frames": (3, 40, 3), "ssm": (3, 40, 5)}
    assert dec.states.slots[1]["ssm"].dtype == torch.float32
    allocated = sum(t.numel() * t.element_size() for slot in dec.states.slots for t in slot.values())
    assert allocated == dec.states.nbytes(list(plan.states.values()), 3, 4) == 2 * 3 * 40 * (3 + 5) * 4
    short, long = (generation_bytes(plan, model.spec.ir, {"B": 3, "n": 6}, 3, n, "float32") for n in (11, 1011))
    assert long - short == 8 * 3 * 1000      # only the output ids grow: no per-position cache


def test_a_new_sequence_starts_from_zero_states(pair):
    """The decoder kept on the model is reused by the next call: its states restart with each prompt."""
    model, _ = pair
    ids, mask = lm_batch(b=3, n=7)
    first = graphformer.generate(model, ids, 4, mask=mask)
    graphformer.generate(model, ids.flip(1), 4)
    assert torch.equal(graphformer.generate(model, ids, 4, mask=mask), first)


def test_the_command_line_generates(capsys):
    from graphformer.cli import main
    rc = main(["generate", SPEC, "--preset", "tiny", "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--seed", "0"])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out + err, out + err


def test_export_with_past_steps_equal_the_torch_steps(pair, tmp_path):
    """ONNX Runtime runs the exported step (fully checked) from zero states: the left-padded prompt, then one
    token at a time fed back with the presents as the next pasts; each step's logits equal the torch
    decoder's within the bound, on its greedy tokens."""
    np = pytest.importorskip("numpy")
    from parity import assert_close, checked_onnx, onnx_session
    model, _ = pair
    proto = checked_onnx(model.spec, model, with_past=True)
    names = [i.name for i in proto.graph.input]
    assert names == ["input_ids", "attention_mask"] + [f"past_states.{j}.{k}" for j, k in
                                                      enumerate(["frames", "ssm"] * 2)]
    sess = onnx_session(proto)
    ids, mask = lm_batch(b=3, n=7)
    seq = graphformer.generate(model, ids, 8, mask=mask)
    dec = Decoder(model, 3, seq.shape[1])
    with torch.no_grad():
        want = [dec.prompt(ids, mask)] + [dec.step(seq[:, t]) for t in range(7, seq.shape[1] - 1)]
    states = {i.name: np.zeros([3] + [d.dim_value for d in i.type.tensor_type.shape.dim[1:]], np.float32)
              for i in proto.graph.input if i.name.startswith("past_states")}
    outputs = [o.name for o in proto.graph.output]
    for t, logits in enumerate(want):
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()} if t == 0 else \
            {"input_ids": seq[:, 6 + t:7 + t].numpy(), "attention_mask": np.ones((3, 1), np.int64)}
        got = dict(zip(outputs, sess.run(outputs, {**feed, **states})))
        assert_close(torch.from_numpy(got["logits"][:, -1]), logits, f"mamba onnx step {t}")
        states = {k.replace("present_", "past_"): v for k, v in got.items() if k.startswith("present_states")}


@pytest.mark.slow
def test_the_compiled_step_equals_the_eager_one(pair):
    """`compile=` traces the one-token step with its state reads and writes (fullgraph; the eager backend, no
    inductor build)."""
    model, _ = pair
    ids, mask = lm_batch(b=3, n=7)
    assert torch.equal(graphformer.generate(model, ids, 6, mask=mask, compile="eager"),
                       graphformer.generate(model, ids, 6, mask=mask))
