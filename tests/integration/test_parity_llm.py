"""The decoder LLMs (issue: Llama, Mistral, Mixtral, Qwen2, Phi) against transformers, built offline from
configs with random weights: parameter counts at every preset on the meta device, and outputs and
gradients at tiny, deliberately odd configurations (head counts that are not powers of two, fewer
key/value heads, non-default rope theta, a window shorter than the sequence, left padding)."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from parity import assert_lm_grads, assert_lm_logits, lm_batch, ours  # noqa: E402

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"


def llama_cfg(**kw):
    base = dict(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                intermediate_size=80, max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5)
    return {**base, **kw}


# (spec, preset, --set overrides, reference class, config kwargs)
CASES = {
    "llama": ("llama", "tiny", {}, T.LlamaForCausalLM, T.LlamaConfig, llama_cfg()),
    "llama-mqa-odd-heads": ("llama", "tiny", {"heads": 5, "kv_heads": 1, "d_model": 40, "eps": 1e-6,
                                             "rope_theta": 123.0},
                            T.LlamaForCausalLM, T.LlamaConfig,
                            llama_cfg(hidden_size=40, num_attention_heads=5, num_key_value_heads=1, rms_norm_eps=1e-6,
                                      rope_theta=123.0)),
    "llama3-rope-scaling": ("llama", "tiny", {"rope_scaling": "llama3", "rope_factor": 4.0, "rope_low_freq": 1.0,
                                             "rope_high_freq": 2.0, "rope_original_max_len": 8},
                            T.LlamaForCausalLM, T.LlamaConfig,
                            llama_cfg(rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 2.0, "original_max_position_embeddings": 8,
                                                    "rope_theta": 500.0})),
    "llama-tied": ("llama", "tiny", {"tie_embeddings": True}, T.LlamaForCausalLM, T.LlamaConfig,
                   llama_cfg(tie_word_embeddings=True)),
    "mistral-window": ("mistral-7b", "tiny", {}, T.MistralForCausalLM, T.MistralConfig,
                       llama_cfg(sliding_window=5)),
    "mixtral": ("mixtral-8x7b", "tiny", {}, T.MixtralForCausalLM, T.MixtralConfig,
                llama_cfg(intermediate_size=40, num_local_experts=5, num_experts_per_tok=2)),
    "qwen2": ("qwen2", "tiny", {}, T.Qwen2ForCausalLM, T.Qwen2Config,
              llama_cfg(hidden_size=40, num_attention_heads=5, num_key_value_heads=1, intermediate_size=72,
                        rope_theta=5000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)),
    "phi": ("phi-2", "tiny", {}, T.PhiForCausalLM, T.PhiConfig,
            dict(vocab_size=97, hidden_size=40, num_hidden_layers=2, num_attention_heads=4, intermediate_size=56,
                 max_position_embeddings=64, partial_rotary_factor=0.4, rope_theta=300.0, layer_norm_eps=1e-5,
                 resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0)),
}


def pair(case):
    name, preset, sets, cls, cfg_cls, kw = CASES[case]
    torch.manual_seed(0)
    ref = cls(cfg_cls(**kw, attn_implementation="sdpa")).eval()
    spec = graphformer.load(SPECS / f"{name}.yaml", preset=preset, overrides=sets)
    return spec, ref, ours(spec, ref)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_transformers_with_and_without_padding(case):
    spec, ref, model = pair(case)
    ids, mask = lm_batch()
    assert_lm_logits(model, ref, ids, mask, case)


@pytest.mark.parametrize("case", ["llama", "mistral-window", "mixtral", "qwen2", "phi"])
def test_gradients_equal_transformers(case):
    spec, ref, model = pair(case)
    assert_lm_grads(model, ref, spec, lm_batch()[0], case)


def test_sequence_longer_than_the_window_differs_from_full_attention():
    """The window bites: the same weights without it give other logits past position `window`."""
    spec, ref, model = pair("mistral-window")
    ids, _ = lm_batch(n=12)
    full = graphformer.load(SPECS / "mistral-7b.yaml", preset="tiny", overrides={"window": 64})
    wide = ours(full, ref)
    with torch.no_grad():
        a, b = model(tokens=ids)["logits"], wide(tokens=ids)["logits"]
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


def test_experts_run_sparsely():
    """Only routed experts run: an expert that no token picks is never called."""
    spec, ref, model = pair("mixtral")
    moe = model.node_module("blocks.0.moe")
    calls = []
    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda m, i, o, e=e: calls.append((e, i)))
    with torch.no_grad():
        model(tokens=torch.tensor([[5]]))
    assert len(calls) == 2  # top-2 of 5 for the single token


META_COUNTS = [  # (spec, preset, reference class, config kwargs); counts are the published ones
    ("llama", "llama2-7b", "LlamaForCausalLM", "LlamaConfig", dict(), 6_738_415_616),
    ("llama", "llama3-8b", "LlamaForCausalLM", "LlamaConfig",
     dict(vocab_size=128256, num_key_value_heads=8, intermediate_size=14336), 8_030_261_248),
    ("llama", "llama2-70b", "LlamaForCausalLM", "LlamaConfig",
     dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
          intermediate_size=28672), 68_976_648_192),
    ("mistral-7b", None, "MistralForCausalLM", "MistralConfig", dict(), 7_241_732_096),
    ("mixtral-8x7b", None, "MixtralForCausalLM", "MixtralConfig", dict(), 46_702_792_704),
    ("qwen2", "qwen2-7b", "Qwen2ForCausalLM", "Qwen2Config",
     dict(vocab_size=152064, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
          intermediate_size=18944, tie_word_embeddings=False), 7_615_616_512),
    ("qwen2", "qwen2-0.5b", "Qwen2ForCausalLM", "Qwen2Config",
     dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
          intermediate_size=4864, tie_word_embeddings=True), 494_032_768),
    ("phi-2", None, "PhiForCausalLM", "PhiConfig",
     dict(vocab_size=51200, hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=10240,
          partial_rotary_factor=0.4), 2_779_683_840),
]


@pytest.mark.parametrize("name,preset,cls,cfg,kw,published", META_COUNTS,
                         ids=[f"{c[0]}-{c[1]}" for c in META_COUNTS])
def test_parameter_counts_equal_transformers_on_meta(name, preset, cls, cfg, kw, published):
    spec = graphformer.load(SPECS / f"{name}.yaml", preset=preset)
    with torch.device("meta"):
        ref = getattr(T, cls)(getattr(T, cfg)(**kw))
    theirs = sum(p.numel() for p in ref.parameters())
    assert total_params(spec.ir) == theirs == published
    # and the map covers the reference exactly (shapes only: meta tensors)
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(dict(graphformer.build(spec, device="meta")
                                                                             .named_parameters()))
