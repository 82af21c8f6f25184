"""specs/jamba.yaml against transformers' JambaForCausalLM, built offline from a small, deliberately odd config
with perturbed random weights: 5 layers of all four kinds (Mamba + dense MLP, attention + experts, Mamba +
experts, attention + MLP: attention every 3rd layer from layer 1, experts every 2nd from layer 1), 4 heads
sharing 2 kv heads, 5 experts of which 2 are kept (not renormalised), state 5, dt_rank 3, biases on the
mixer's projections. Logits with and without left padding, gradients, greedy generation (batch 3, left
padding: the reference zeroes the padding's states in its Mamba layers and masks it in its attention layers,
and so does the spec), cached steps against a full recompute with one decoder plan holding key/value slots
and state slots, ONNX Runtime (whole sequence, and the step with past against the torch steps), the memory
plan and the allocated caches, the parameter count on meta at Jamba-v0.1, and the weight map both ways."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.budget import budget, kv_cache_per_token, recurrent_state_per_sequence  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.backends.torch.generation import Decoder, plan_generation  # noqa: E402
from graphformer.weights.maps import convert_state_dict, to_reference  # noqa: E402
from parity import (assert_cached_steps, assert_close, assert_greedy_tokens, assert_lm_grads,  # noqa: E402
                    assert_lm_logits, assert_onnx_logits, checked_onnx, imported, lm_batch, onnx_session, ours,
                    randomize)

T.logging.set_verbosity_error()

SPEC = Path(__file__).resolve().parents[2] / "specs" / "jamba.yaml"
SMALL = dict(vocab_size=97, hidden_size=24, intermediate_size=28, num_hidden_layers=5, num_attention_heads=4,
             num_key_value_heads=2, attn_layer_period=3, attn_layer_offset=1, expert_layer_period=2,
             expert_layer_offset=1, num_experts=5, num_experts_per_tok=2, mamba_d_state=5, mamba_d_conv=4,
             mamba_expand=2, mamba_dt_rank=3, mamba_proj_bias=True, rms_norm_eps=1e-5, use_mamba_kernels=False,
             pad_token_id=0, max_position_embeddings=64)
OVERRIDES = dict(vocab=97, d_model=24, d_ff=28, layers=5, heads=4, kv_heads=2, attn_period=3, attn_offset=1,
                 experts=5, state=5, dt_rank=3, proj_bias=True, eps=1e-5, max_len=64)
KINDS = [("mamba", "mlp"), ("attn", "ffn"), ("mamba", "mlp"), ("mamba", "ffn"), ("attn", "mlp")]


def reference(**kw):
    torch.manual_seed(0)
    return randomize(T.JambaForCausalLM(T.JambaConfig(**{**SMALL, **kw})))


@pytest.fixture(scope="module")
def pair():
    ref = reference()
    spec = graphformer.load(SPEC, overrides=OVERRIDES)
    return spec, ref, ours(spec, ref)


def _parts(spec, i):
    """Which mixer and feed-forward layer i has: the nodes its `when`s kept."""
    names = set(spec.ir.names())
    return (next(m for m in ("attn", "mamba") if f"blocks.{i}.{m}" in names or f"blocks.{i}.{m}.in_proj" in names),
            next(f for f in ("ffn", "mlp") if f"blocks.{i}.{f}.moe" in names or f"blocks.{i}.{f}.gate" in names))


def test_layers_are_of_the_kinds_transformers_builds(pair):
    spec, ref, _ = pair
    assert [_parts(spec, i) for i in range(5)] == KINDS
    assert [("attn" if t == "attention" else "mamba", "ffn" if e > 1 else "mlp")
            for t, e in zip(ref.config.layers_block_type, ref.config.layers_num_experts)] == KINDS
    big = graphformer.load(SPEC)
    cfg = T.JambaConfig()
    assert [_parts(big, i) for i in range(32)] == [
        ("attn" if t == "attention" else "mamba", "ffn" if e > 1 else "mlp")
        for t, e in zip(cfg.layers_block_type, cfg.layers_num_experts)]


def test_logits_equal_transformers_with_and_without_padding(pair):
    _, ref, model = pair
    assert_lm_logits(model, ref, *lm_batch(), "jamba")


def test_gradients_equal_transformers(pair):
    spec, ref, model = pair
    ids, mask = lm_batch()
    # an expert that no token picked has no gradient in transformers: zeros, as ours holds
    assert_lm_grads(model, ref, spec, ids, "jamba", mask=mask, none_is_zero=True)


def test_one_expert_is_a_dense_mlp_in_every_layer():
    """num_experts 1: transformers builds JambaMLP everywhere (no router), and so does the spec."""
    ref = reference(num_experts=1, num_experts_per_tok=1)
    spec = graphformer.load(SPEC, overrides={**OVERRIDES, "experts": 1, "top_k": 1})
    assert [_parts(spec, i)[1] for i in range(5)] == ["mlp"] * 5
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters())
    assert_lm_logits(ours(spec, ref), ref, *lm_batch(), "jamba, one expert")


@pytest.mark.parametrize("padded", [False, True])
def test_greedy_tokens_equal_transformers_generate(pair, padded):
    _, ref, model = pair
    ids, mask = lm_batch(b=3, n=7)
    assert_greedy_tokens(model, ref, ids, mask if padded else None, 16,
                         f"jamba greedy{', left-padded' if padded else ''}")


def test_one_plan_caches_the_attention_layers_and_carries_the_mamba_states(pair):
    """The decoder plan gives the two attention layers key/value slots and the three Mamba layers' convolution
    and scan state slots; each cached step equals a full recompute over the sequence so far (left-padded); a step
    runs the one new token through every cached and recurrent node."""
    spec, _, model = pair
    plan = plan_generation(spec)
    assert list(plan.slots) == ["blocks.1.attn", "blocks.4.attn"]
    assert list(plan.states) == [f"blocks.{i}.mamba.{op}" for i in (0, 2, 3) for op in ("conv1d", "ssm")]
    assert plan.mask == "mask" and not plan.uses_positions      # no positional encoding anywhere
    ids, mask = lm_batch(b=3, n=7)
    assert_cached_steps(model, ids, mask, 8, "jamba step")
    seen: dict[str, list[int]] = {name: [] for name in [*plan.slots, *plan.states]}
    hooks = [model.node_module(name).register_forward_pre_hook(
        lambda m, args, name=name: seen[name].append(args[0].shape[2 if name.endswith("conv1d") else 1]))
        for name in seen]
    try:
        graphformer.generate(model, ids, 4, mask=mask)
    finally:
        for h in hooks:
            h.remove()
    assert all(lengths == [7, 1, 1, 1] for lengths in seen.values()), seen


def test_the_memory_plan_counts_what_the_decoder_allocates(pair):
    """summary's KV cache counts the attention layers only, its recurrent state the Mamba layers only, and the
    decoder allocates exactly that: keys and values for the length, states whatever the length."""
    spec, _, model = pair
    kv = kv_cache_per_token(spec.ir, 4)
    state = recurrent_state_per_sequence(spec.ir, 4)
    assert kv == 2 * 2 * (24 // 4) * 2 * 4                      # 2 layers · 2 kv heads · head_dim 6 · (k, v) · fp32
    assert state == 3 * 48 * ((4 - 1) + 5) * 4                  # 3 Mamba layers · inner 48 · (frames + state) · fp32
    dec = Decoder(model, 3, 20)
    kv_bytes = sum(t.numel() * t.element_size() for s in dec.cache.slots for t in (s.k, s.v))
    state_bytes = sum(t.numel() * t.element_size() for slot in dec.states.slots for t in slot.values())
    assert (kv_bytes, state_bytes) == (kv * 3 * 20, state * 3)
    b = budget(spec.ir, {"B": 3, "n": 20})
    assert (b.memory["kv_cache"], b.memory["recurrent_state"]) == (kv * 3 * 20, state * 3)


def test_onnx_runtime_through_the_weight_map_equals_transformers(pair):
    spec, ref, _ = pair
    from graphformer.backends.onnx import to_onnx
    ids, mask = lm_batch()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
    assert_onnx_logits(to_onnx(spec, ref.state_dict(), weights_map="hf", inputs=["mask"]), ids, mask, want,
                       "jamba onnx logits")


def test_export_with_past_steps_equal_the_torch_steps(pair):
    """One exported step graph carries both kinds of past: `past_key_values.*` of the attention layers and
    `past_states.*` of the Mamba layers. ONNX Runtime runs the left-padded prompt from empty pasts, then one
    token at a time fed back with the presents; each step's logits equal the torch decoder's."""
    np = pytest.importorskip("numpy")
    spec, _, model = pair
    proto = checked_onnx(spec, model, with_past=True)
    names = [i.name for i in proto.graph.input]
    assert names[:2] == ["input_ids", "attention_mask"]
    assert sum(n.startswith("past_states.") for n in names) == 6
    kv_names = [n for n in names[2:] if not n.startswith("past_states.")]
    assert len(kv_names) == 4, names                          # keys and values of the two attention layers
    sess = onnx_session(proto)
    ids, mask = lm_batch(b=3, n=7)
    seq = graphformer.generate(model, ids, 8, mask=mask)
    dec = Decoder(model, 3, seq.shape[1])
    with torch.no_grad():
        want = [dec.prompt(ids, mask)] + [dec.step(seq[:, t]) for t in range(7, seq.shape[1] - 1)]

    def empty(i):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in i.type.tensor_type.shape.dim]
        return np.zeros([3] + dims[1:], np.float32)
    pasts = {i.name: empty(i) for i in proto.graph.input if i.name not in ("input_ids", "attention_mask")}
    outputs = [o.name for o in proto.graph.output]
    seen = mask.numpy()
    for t, logits in enumerate(want):
        step = ids.numpy() if t == 0 else seq[:, 6 + t:7 + t].numpy()
        if t:
            seen = np.concatenate([seen, np.ones((3, 1), np.int64)], axis=1)
        got = dict(zip(outputs, sess.run(outputs, {"input_ids": step, "attention_mask": seen, **pasts})))
        assert_close(torch.from_numpy(got["logits"][:, -1]), logits, f"jamba onnx step {t}")
        pasts = {k.replace("present_states.", "past_states.").replace("present.", "past_key_values."): v
                 for k, v in got.items() if k.startswith("present")}


def test_no_genai_config_for_a_step_that_carries_states(pair):
    """onnxruntime-genai feeds back key/value pasts only: the hybrid's step gets no genai_config.json (a note)."""
    from graphformer.backends.onnx.genai import GenaiUnsupported, genai_config
    from graphformer.backends.onnx.past import Past
    spec, _, _ = pair
    with pytest.raises(GenaiUnsupported, match="recurrent states"):
        genai_config(Past.of(spec.ir), spec.ir, "model.onnx")


def test_parameter_count_equals_transformers_on_meta_at_jamba_v0_1():
    spec = graphformer.load(SPEC)
    with torch.device("meta"):
        ref = T.JambaForCausalLM(T.JambaConfig())
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == 51_570_323_328
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(
        dict(graphformer.build(spec, device="meta").named_parameters()))


def test_weight_map_round_trip_is_exact(pair):
    spec, ref, model = pair
    back = to_reference(spec, dict(model.state_dict()), "hf", ref.state_dict())
    assert set(back) == set(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back[k], v), k


@pytest.mark.slow
def test_import_hf_of_a_checkpoint_equals_transformers(pair, tmp_path, capsys):
    """`import hf` on save_pretrained's directory (its experts one tensor each, as the hub's) writes a spec that,
    holding the checkpoint's weights, gives the reference's logits."""
    _, ref, _ = pair
    spec, module = imported(ref, tmp_path, capsys)
    ids, _ = lm_batch()
    with torch.no_grad():
        assert_close(module(tokens=ids)["logits"], ref(input_ids=ids).logits, "jamba imported logits")
