"""Parity of specs/rwkv.yaml (`token_shift` with `mix`, the `wkv` recurrence, `scale` nodes for eval mode's
rescaling) with transformers' RwkvForCausalLM and RwkvModel.

References are built offline from small odd configs with random weights (transformers runs its CPU path,
`rwkv_linear_attention_cpu`: no CUDA kernel here), every parameter perturbed: width 20, five layers, an FFN of
36, rescale_every 2 (so layers 2–4 are rescaled and the states halved twice) or 0. fp32, max abs error ≤ 1e-5 ×
the output's scale: logits (eval mode, each rescale_every), gradients (training mode, where transformers does
not rescale), greedy `generate` (batch 3, 16 new tokens) against transformers' `generate` row by row and its
full recompute as a batch, cached steps against
a full recompute, ONNX Runtime against the reference and, with past states, against the torch decoder, and
`import hf`. At the published RWKV/rwkv-4-169m-pile and rwkv-raven-7b sizes, on the meta device: the parameter
counts equal the references' and the weight map covers their state dicts.

Two transformers traits the tests work around, both documented in the spec: eval mode divides the output
projections' weights in place at its first forward (so our builds take the weights before any reference
forward), and its cached path sizes the state by hidden_size, so attention_hidden_size ≠ hidden_size runs
only without a cache (`use_cache=False`).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.backends.torch.generation import Decoder, GenerationError, plan_generation  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import (assert_cached_steps, assert_close, assert_lm_grads, assert_ort_close,  # noqa: E402
                    assert_same_tokens, checked_onnx, hf_greedy, imported, onnx_session, ort_session, ours,
                    randomize)

T.logging.set_verbosity_error()

SPEC = "specs/rwkv.yaml"
NEW = 16


def config(rescale_every: int = 2, attn: int = 20, **kw):
    return T.RwkvConfig(vocab_size=97, hidden_size=20, num_hidden_layers=5, attention_hidden_size=attn,
                        intermediate_size=36, layer_norm_epsilon=1e-5, rescale_every=rescale_every,
                        context_length=64, **kw)


def reference(rescale_every: int = 2, attn: int = 20, head: bool = True):
    return randomize((T.RwkvForCausalLM if head else T.RwkvModel)(config(rescale_every, attn)))


def spec(rescale_every: int = 2, attn: int = 20, head: bool = True):
    return load(SPEC, overrides=dict(vocab=97, d_model=20, layers=5, attn_width=attn, ffn=36,
                                     rescale_every=rescale_every, head=head))


def tokens(b: int = 3, n: int = 9, seed: int = 1):
    return torch.randint(0, 97, (b, n), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def pair():
    ref = reference()
    return ours(spec(), ref), ref


# ---------------------------------------------------------------- counts and maps at the published configs

# RWKV/rwkv-4-169m-pile and RWKV/rwkv-raven-7b's config.json sizes (the rest: RwkvConfig's defaults)
PUBLISHED = {"rwkv-4-169m-pile": (dict(vocab_size=50277, hidden_size=768, num_hidden_layers=12), 169_342_464),
             "rwkv-4-raven-7b": (dict(vocab_size=50277, hidden_size=4096, num_hidden_layers=32), 7_392_649_216)}


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_published_counts_and_maps_equal_the_references(preset):
    sizes, count = PUBLISHED[preset]
    with torch.device("meta"):
        ref = T.RwkvForCausalLM(T.RwkvConfig(**sizes))
    s = load(SPEC, preset=preset)
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == count
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == count


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("rescale_every", [0, 2])
def test_logits_equal_transformers_in_eval_mode(rescale_every):
    """Eval mode: transformers halves the hidden states after layers 1 and 3 and divides layers 2–4's output
    projections (rescale_every 2); the spec's scale nodes do the same, so the outputs are equal."""
    ref = reference(rescale_every)
    model = ours(spec(rescale_every), ref)
    for b, n in ((1, 1), (3, 9)):
        ids = tokens(b, n, seed=n)
        with torch.no_grad():
            assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits,
                         f"rwkv logits rescale_every={rescale_every} B={b} n={n}")


def test_rescaling_changes_the_outputs_and_training_mode_skips_it():
    """What rescale_every does: eval mode's halving differs from no halving by more than the bound (the layer
    norms' eps sees smaller states), and transformers' training mode, which skips it, equals the spec with
    rescale_every 0."""
    ref = reference(2)
    plain, rescaled = ours(spec(0), ref), ours(spec(2), ref)
    ids = tokens()
    with torch.no_grad():
        want = ref(input_ids=ids).logits                                     # eval: rescaled
        assert (plain(tokens=ids)["logits"] - want).abs().max() > 1e-5 * want.abs().max()
        assert_close(rescaled(tokens=ids)["logits"], want, "rwkv eval, rescaled")
        assert_close(plain(tokens=ids)["logits"], ref.train()(input_ids=ids).logits, "rwkv training mode")


def test_attention_width_of_its_own():
    """attention_hidden_size ≠ hidden_size: key, value, receptance and the WKV state are that wide (the
    reference without its cache, whose state is hidden_size wide)."""
    ref = reference(0, attn=12)
    model = ours(spec(0, attn=12), ref)
    ids = tokens()
    with torch.no_grad():
        assert_close(model(tokens=ids)["logits"], ref(input_ids=ids, use_cache=False).logits, "rwkv attn 12")


def test_hidden_states_equal_the_backbone():
    ref = reference(head=False)
    model = ours(spec(head=False), ref)
    ids = tokens()
    with torch.no_grad():
        assert_close(model(tokens=ids)["hidden"], ref(input_ids=ids).last_hidden_state, "rwkv hidden")


def test_gradients_equal_transformers():
    """Training mode, where transformers does not rescale (rescale_every 0 in the spec): every parameter's
    gradient, time_decay and time_first through the recurrence included."""
    ref = reference(2)
    s = spec(0)
    model = ours(s, ref)
    assert_lm_grads(model.train(), ref.train(), s, tokens(2, 7), "rwkv")


# ---------------------------------------------------------------- decoding

def test_greedy_tokens_equal_transformers(pair):
    """Our batch of 3 against transformers' `generate` row by row: transformers' cached step broadcasts the
    carried token [B, H] against the new one [B, 1, H] into [B, B, H], so its own batched generate drifts from
    its forward for B > 1 (transformers 5.25); one row at a time it is right."""
    model, ref = pair
    ids = tokens(3, 7)
    got = graphformer.generate(model, ids, NEW)
    for row in range(3):
        assert_same_tokens(got[row:row + 1], hf_greedy(ref, ids[row:row + 1], None, NEW), f"rwkv greedy row {row}")


@pytest.mark.slow
def test_greedy_tokens_equal_the_references_full_recompute(pair):
    """The batch of 3 against the reference's own forward, rerun over the whole sequence for every token."""
    model, ref = pair
    ids = tokens(3, 7)
    got = graphformer.generate(model, ids, NEW)
    seq = ids
    with torch.no_grad():
        for _ in range(NEW):
            seq = torch.cat([seq, ref(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert_same_tokens(got, seq, "rwkv greedy, the reference's full recompute")


def test_each_step_equals_a_full_recompute(pair):
    model, _ = pair
    assert_cached_steps(model, tokens(3, 7), None, 10, "rwkv step")


def test_a_step_runs_the_new_token_only(pair):
    """Work, not time: after the prompt every recurrence sees one position, and its state does not grow."""
    model, _ = pair
    plan = plan_generation(model.spec)
    assert sorted(plan.states) == sorted([f"blocks.{i}.attention.{n}" for i in range(5) for n in
                                          ("k_in", "v_in", "r_in", "wkv")] +
                                         [f"blocks.{i}.feed_forward.{n}" for i in range(5) for n in ("k_in", "r_in")])
    seen: dict[str, list[int]] = {name: [] for name in plan.states}
    hooks = [model.node_module(name).register_forward_pre_hook(
        lambda m, args, name=name: seen[name].append(args[0].shape[1])) for name in plan.states]
    try:
        graphformer.generate(model, tokens(3, 6), 5)
    finally:
        for h in hooks:
            h.remove()
    assert all(lengths == [6, 1, 1, 1, 1] for lengths in seen.values()), seen
    dec = Decoder(model, 3, 11)
    shapes = {k: (tuple(t.shape), t.dtype) for slot in dec.states.slots for k, t in slot.items()}
    assert shapes == {"last": ((3, 20), torch.float32), "num": ((3, 20), torch.float32),
                      "den": ((3, 20), torch.float32), "max": ((3, 20), torch.float32)}


def test_padded_prompts_are_refused(pair):
    """transformers' RWKV ignores an attention mask (pads would run as tokens); the spec has no mask input,
    so generate refuses a padded batch instead of guessing."""
    model, _ = pair
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, :2] = 0
    with pytest.raises(GenerationError, match="no `mask` input"):
        graphformer.generate(model, tokens(3, 7), 4, mask=mask)


# ---------------------------------------------------------------- ONNX

def test_onnx_runtime_equals_transformers(pair):
    """The export (one Scan per layer for the WKV, the shifts as Slice and Pad) at two batch sizes and lengths."""
    model, ref = pair
    sess = ort_session(model.spec, model)
    for b, n in ((1, 1), (3, 13)):
        ids = tokens(b, n, seed=b)
        with torch.no_grad():
            want = ref(input_ids=ids).logits
        assert_ort_close(sess, {"tokens": ids}, {"logits": want}, f"rwkv onnx B={b} n={n}")


def test_export_with_past_steps_equal_the_torch_steps(pair):
    """ONNX Runtime runs the exported step from zero states (an all-zero WKV state reads as empty): the
    prompt, then one token at a time with the presents fed back as pasts; each step equals the torch decoder."""
    np = pytest.importorskip("numpy")
    model, _ = pair
    proto = checked_onnx(model.spec, model, with_past=True)
    names = [i.name for i in proto.graph.input]
    assert names[0] == "input_ids" and "attention_mask" not in names
    assert names[1:9] == [f"past_states.{j}.{k}" for j, k in enumerate(["last"] * 3)] + \
        ["past_states.3.num", "past_states.3.den", "past_states.3.max", "past_states.4.last", "past_states.5.last"]
    sess = onnx_session(proto)
    ids = tokens(3, 7)
    seq = graphformer.generate(model, ids, 8)
    dec = Decoder(model, 3, seq.shape[1])
    with torch.no_grad():
        want = [dec.prompt(ids)] + [dec.step(seq[:, t]) for t in range(7, seq.shape[1] - 1)]
    states = {i.name: np.zeros([3] + [d.dim_value for d in i.type.tensor_type.shape.dim[1:]], np.float32)
              for i in proto.graph.input if i.name.startswith("past_states")}
    outputs = [o.name for o in proto.graph.output]
    for t, logits in enumerate(want):
        feed = {"input_ids": (ids if t == 0 else seq[:, 6 + t:7 + t]).numpy()}
        got = dict(zip(outputs, sess.run(outputs, {**feed, **states})))
        assert_close(torch.from_numpy(got["logits"][:, -1]), logits, f"rwkv onnx step {t}")
        states = {k.replace("present_", "past_"): v for k, v in got.items() if k.startswith("present_states")}


# ---------------------------------------------------------------- import hf

@pytest.mark.parametrize("head", [True, False])
def test_import_hf_reads_a_saved_model(head, tmp_path, capsys):
    """save_pretrained (before any eval forward: transformers rescales its weights in place then) → `import hf`
    → the spec with the checkpoint's weights equals the reference; rescale_every, the FFN width and the
    backbone-only class read from the config."""
    ref = reference(2, head=head)
    s, model = imported(ref, tmp_path, capsys)
    assert s.params["rescale_every"] == 2 and s.params["ffn"] == 36 and s.params["head"] is head
    ids = tokens()
    with torch.no_grad():
        got, want = model(tokens=ids), ref(input_ids=ids)
    if head:
        assert_close(got["logits"], want.logits, "import hf logits")
    else:
        assert_close(got["hidden"], want.last_hidden_state, "import hf hidden")
