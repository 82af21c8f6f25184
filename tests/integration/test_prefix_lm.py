"""The prefix-LM mask (`attention`'s `prefix [B, n]`: bidirectional over the prefix, causal after it) against
transformers: Gemma-2's language model (gemma2.yaml, tiny, a sliding window that bites and a soft-cap) fed
the masks transformers builds for PaliGemma (`create_causal_mask` and `create_sliding_window_causal_mask`
with `block_sequence_ids = where(token_type_ids == 0, 0, -1)`), with left padding; greedy generation whose
prompt is the prefix against transformers' cached forward; cached steps against a full recompute; ONNX
Runtime against torch; the fast `is_causal` path kept when no prefix is fed."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.backends.torch.core import _sdpa_mask  # noqa: E402
from graphformer.backends.torch.generation import Decoder, GenerationError  # noqa: E402
from parity import assert_close, assert_same_tokens, lm_batch, ours  # noqa: E402
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
# as test_gemma2_olmo2's: window 4 < the sequence, a soft-cap that bites, 3 heads sharing 1 kv head
GEMMA2 = dict(vocab_size=97, hidden_size=42, num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=1,
              head_dim=10, intermediate_size=56, max_position_embeddings=64, sliding_window=4,
              query_pre_attn_scalar=10, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
              rms_norm_eps=1e-6, rope_theta=500.0, pad_token_id=0)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**GEMMA2, attn_implementation="eager")).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():   # Gemma's norm weights start at 0: perturb every parameter
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    spec = graphformer.load(SPECS / "gemma2.yaml", preset="tiny")
    return spec, ref, ours(spec, ref)


def batch():
    """ids [3, 11], a left-padding mask (0, 4 and 1 pads) and token_type_ids (0 = prefix, as PaliGemma's
    processor: image and prompt 0, the suffix 1): prefixes of 6 tokens, 7 positions (pads and 3 real tokens),
    and none."""
    ids, mask = lm_batch()
    types = torch.ones_like(ids)
    types[0, :6] = 0
    types[1, :7] = 0
    return ids, mask, types


def hf_masks(ref, ids, mask, types, positions=None):
    """The mask mapping transformers' PaliGemmaModel hands its Gemma-2 language model."""
    kw = dict(config=ref.config, inputs_embeds=ref.model.embed_tokens(ids), attention_mask=mask, cache=None,
              position_ids=positions, block_sequence_ids=torch.where(types == 0, 0, -1))
    return {"full_attention": create_causal_mask(**kw), "sliding_attention": create_sliding_window_causal_mask(**kw)}


def test_logits_equal_transformers_prefix_lm_mask(pair):
    spec, ref, model = pair
    ids, mask, types = batch()
    prefix = (types == 0).long()
    with torch.no_grad():
        got = model(tokens=ids, mask=mask, prefix=prefix)["logits"]
        want = ref(input_ids=ids, attention_mask=hf_masks(ref, ids, mask, types)).logits
        keep = mask.bool()
        assert_close(got[keep], want[keep], "gemma2 prefix-LM logits, left-padded")
        # the prefix changes the outputs (it bites), and a bool prefix is the same as 0/1
        plain = model(tokens=ids, mask=mask)["logits"]
        assert (plain[:2] - got[:2]).abs().max() > 1e-3
        assert_close(plain[2], got[2], "row without a prefix")
        assert_close(model(tokens=ids, mask=mask, prefix=prefix.bool())["logits"], got, "bool prefix")
        unpadded = model(tokens=ids, prefix=prefix)["logits"]
        want = ref(input_ids=ids, attention_mask=hf_masks(ref, ids, None, types)).logits
        assert_close(unpadded, want, "gemma2 prefix-LM logits")


def hf_prefix_greedy(ref, ids, mask, new: int) -> torch.Tensor:
    """PaliGemma's generation on its Gemma-2 language model: the prompt (token_type_ids 0) attends
    bidirectionally, each new token causally over the cache; positions count real tokens only."""
    from transformers.cache_utils import DynamicCache
    cache = DynamicCache(config=ref.config)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = ids
    with torch.no_grad():
        step = ref(input_ids=ids, attention_mask=hf_masks(ref, ids, mask, torch.zeros_like(ids), positions),
                   position_ids=positions, cache=cache, use_cache=True)
        for _ in range(new):
            nxt = step.logits[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            positions = positions[:, -1:] + 1
            step = ref(input_ids=nxt, attention_mask=mask, position_ids=positions, cache=cache,
                       use_cache=True)
    return out


def test_greedy_generation_prompt_is_the_prefix(pair):
    spec, ref, model = pair
    ids, mask, _ = batch()
    got = graphformer.generate(model, ids, 6, mask=mask, prefix=True)
    assert_same_tokens(got, hf_prefix_greedy(ref, ids, mask, 6), "gemma2 prefix-LM greedy")
    # the optional prefix input left out: the plain causal LM (Gemma2ForCausalLM's generate)
    plain = graphformer.generate(model, ids, 6, mask=mask)
    assert not torch.equal(plain, got)


def test_cached_steps_equal_a_full_recompute(pair):
    """Each cached step after a prefix prompt equals the full sequence run with the prompt as the prefix."""
    _, _, model = pair
    ids, mask, _ = batch()
    seq = graphformer.generate(model, ids, 4, mask=mask, prefix=True)
    b, n = ids.shape
    dec = Decoder(model, b, seq.shape[1])
    with torch.no_grad():
        steps = [dec.prompt(ids, mask, prefix=True)] + [dec.step(seq[:, t]) for t in range(n, seq.shape[1] - 1)]
        for t, got in enumerate(steps, start=n):
            pad = torch.ones(b, t - n, dtype=torch.long)
            prefix = torch.cat([torch.ones_like(ids), 0 * pad], dim=1)
            want = model(tokens=seq[:, :t], mask=torch.cat([mask, pad], dim=1), prefix=prefix)["logits"][:, -1]
            assert_close(got, want, f"prefix-LM step {t}")


def test_generate_refuses_a_prefix_the_spec_cannot_take():
    model = graphformer.build(graphformer.load(SPECS / "llama.yaml", preset="tiny"), seed=0).eval()
    with pytest.raises(GenerationError, match="not a prefix LM"):
        graphformer.generate(model, torch.zeros(1, 3, dtype=torch.long), 2, prefix=True)


def test_onnx_runtime_equals_torch(pair):
    ort = pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, _, model = pair
    ids, mask, types = batch()
    prefix = (types == 0).long()
    proto = to_onnx(spec, model, inputs=["mask", "prefix"])
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(["logits"], {"tokens": ids.numpy(), "mask": mask.numpy(),
                                                 "prefix": prefix.numpy()})[0])
    with torch.no_grad():
        want = model(tokens=ids, mask=mask, prefix=prefix)["logits"]
    keep = mask.bool()
    assert_close(got[keep], want[keep], "ONNX Runtime prefix-LM logits")


def test_export_with_past_leaves_an_optional_prefix_out(pair):
    from graphformer.backends.onnx import to_onnx
    spec, _, model = pair
    names = [i.name for i in to_onnx(spec, model, with_past=True).graph.input]
    assert "prefix" not in names and "input_ids" in names


def test_fast_path_without_a_prefix():
    """No prefix: SDPA's is_causal and no n×n mask; a prefix: an explicit boolean mask, (j ≤ i) or both in it."""
    assert _sdpa_mask(None, True, 5, 5) == (None, True)
    prefix = torch.tensor([[1, 1, 1, 0, 0]])
    keep, is_causal = _sdpa_mask(None, True, 5, 5, prefix=prefix)
    want = torch.ones(5, 5, dtype=torch.bool).tril()
    want[:3, :3] = True
    assert not is_causal and torch.equal(keep[0, 0], want)
    # a decode step: cached keys are outside the step's prefix, so one new query is causal
    keep, _ = _sdpa_mask(None, True, 1, 5, prefix=torch.ones(1, 1, dtype=torch.long))
    assert bool(keep.all())


def test_the_command_line_flag(capsys):
    from graphformer.cli import main
    args = ["generate", "--preset", "tiny", "--prompt-ids", "1,2,3", "--max-new-tokens", "2", "--prefix"]
    assert main(args[:1] + [str(SPECS / "gemma2.yaml")] + args[1:]) == 0
    assert main(args[:1] + [str(SPECS / "llama.yaml")] + args[1:]) == 2
    err = capsys.readouterr().err
    assert "not a prefix LM" in err and "Traceback" not in err
