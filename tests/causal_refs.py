"""Tiny transformers causal LMs of every causal family of the catalogue (random weights, nothing downloaded),
saved with save_pretrained, and their greedy tokens: the references of tests/slow/test_optimum.py and
tests/slow/test_genai.py."""
from __future__ import annotations

import torch
import transformers as T

T.logging.set_verbosity_error()
PROMPT = [[5, 17, 3, 44, 9, 21], [60, 2, 8, 11, 7, 30]]
COMMON = dict(vocab_size=97, max_position_embeddings=64, bos_token_id=1, eos_token_id=96, pad_token_id=0,
              initializer_range=0.5)


def _llama(**kw):
    return dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                intermediate_size=80, **COMMON) | kw


CAUSAL = {   # catalogue family → (transformers class, config)
    "gpt2": (T.GPT2LMHeadModel, T.GPT2Config(vocab_size=97, n_positions=64, n_embd=48, n_head=4, n_layer=2,
                                             bos_token_id=1, eos_token_id=96, pad_token_id=0, initializer_range=0.5)),
    "llama": (T.LlamaForCausalLM, T.LlamaConfig(**_llama())),
    "mistral": (T.MistralForCausalLM, T.MistralConfig(**_llama(sliding_window=5))),
    "qwen2": (T.Qwen2ForCausalLM, T.Qwen2Config(**_llama(hidden_size=40, num_attention_heads=5, num_key_value_heads=1,
                                                         intermediate_size=72))),
    "phi": (T.PhiForCausalLM, T.PhiConfig(hidden_size=40, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=56, partial_rotary_factor=0.4, **COMMON)),
    "mixtral": (T.MixtralForCausalLM, T.MixtralConfig(**_llama(num_key_value_heads=6, intermediate_size=40,
                                                               num_local_experts=5, num_experts_per_tok=2))),
    "gemma2": (T.Gemma2ForCausalLM, T.Gemma2Config(hidden_size=42, num_hidden_layers=3, num_attention_heads=3,
                                                   num_key_value_heads=3, head_dim=14, intermediate_size=56,
                                                   sliding_window=4, query_pre_attn_scalar=14,
                                                   tie_word_embeddings=False, **COMMON)),   # tied: one token repeated
    "olmo2": (T.Olmo2ForCausalLM, T.Olmo2Config(hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                                                num_key_value_heads=5, intermediate_size=56, **COMMON)),
    "gpt-neox": (T.GPTNeoXForCausalLM, T.GPTNeoXConfig(hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                                                       intermediate_size=56, tie_word_embeddings=False, **COMMON)),
    "bloom": (T.BloomForCausalLM, T.BloomConfig(vocab_size=97, hidden_size=36, n_layer=2, n_head=6, bos_token_id=1,
                                                eos_token_id=96, pad_token_id=0, initializer_range=0.5)),
    "gpt-oss": (T.GptOssForCausalLM, T.GptOssConfig(hidden_size=36, num_hidden_layers=3, num_attention_heads=6,
                                                    num_key_value_heads=2, head_dim=10, intermediate_size=28,
                                                    num_local_experts=5, num_experts_per_tok=2, sliding_window=3,
                                                    **COMMON)),
}


def causal_reference(name: str, directory, new: int, prompt=PROMPT) -> list[list[int]]:
    """Save the family's tiny model to `directory`; transformers' greedy tokens for `prompt` (prompt included)."""
    cls, cfg = CAUSAL[name]
    torch.manual_seed(0)
    ref = cls(cfg).eval()
    ref.save_pretrained(directory)
    ref.generation_config.save_pretrained(directory)
    ids = torch.tensor(prompt)
    with torch.no_grad():
        return ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False).tolist()
