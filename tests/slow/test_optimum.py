"""optimum, a client nobody here wrote, on the directories `graphformer export DIR --with-past -o out/` writes
from transformers save_pretrained directories (tiny configs, random weights): ORTModelForCausalLM for every
causal family of the catalogue that optimum runs, ORTModelForSeq2SeqLM for T5 (v1.0 and v1.1) and
ORTModelForSpeechSeq2Seq for Whisper generate the greedy tokens of transformers' `generate` (run here, in the
project's environment). optimum-onnx pins transformers < 4.58, so it runs in its own virtual environment
(tests/optimum_venv.py: made once, cached; skipped when it cannot be made, failed under
GRAPHFORMER_STRICT_DEPS=1, where .ci/run has made it), one client process for every directory
(tests/slow/optimum_client.py).

Families optimum does not run as exported here: deepseek-v2 (optimum knows no `deepseek_v2`, and its first
step's empty past would have expanded per-head keys, not the latent the export caches) and llava (not a
causal LM class). optimum derives the empty past of the first step from the config: per-head width
hidden_size / num_attention_heads (head_dim for gemma and gpt_oss), and key/value heads num_key_value_heads
only for the model types it lists (llama, mistral, qwen2, gpt_oss, ...), else num_attention_heads: so the
Mixtral, Gemma-2 and OLMo-2 configs here use as many key/value heads as heads, and Gemma-2's head_dim is
hidden_size / heads (a grouped-query Mixtral or a Gemma-2 with a wider head_dim fails in optimum itself,
at its dummy past, whatever the exporter)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnx")

import cli  # noqa: E402
import optimum_venv  # noqa: E402
import seq2seq_refs as refs  # noqa: E402
from conftest import STRICT  # noqa: E402

T = transformers
T.logging.set_verbosity_error()
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optimum_client.py")
PROMPT = [[5, 17, 3, 44, 9, 21], [60, 2, 8, 11, 7, 30]]
NEW = 10
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
SEQ2SEQ = {"t5": "seq2seq", "t5-v1_1": "seq2seq", "whisper": "speech"}


def _causal_reference(name: str, directory) -> list[list[int]]:
    cls, cfg = CAUSAL[name]
    torch.manual_seed(0)
    ref = cls(cfg).eval()
    ref.save_pretrained(directory)
    ref.generation_config.save_pretrained(directory)
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        return ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, do_sample=False).tolist()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{case: (transformers' tokens, optimum's answer)}: every directory exported, one client run for all."""
    try:
        python = optimum_venv.ensure()
    except optimum_venv.VenvError as e:
        (pytest.fail if STRICT else pytest.skip)(f"{e} (GRAPHFORMER_STRICT_DEPS=1: .ci/run makes it)")
    root = tmp_path_factory.mktemp("optimum")
    requests, want = [], {}
    for name in CAUSAL:
        ckpt, out = root / name, root / f"{name}-onnx"
        want[name] = _causal_reference(name, ckpt)
        assert cli.main(["export", str(ckpt), "--with-past", "-o", f"{out}/"]) == 0, name
        requests.append({"kind": "causal", "dir": str(out), "inputs": {"input_ids": PROMPT,
                         "attention_mask": [[1] * len(PROMPT[0])] * len(PROMPT)}, "max_new_tokens": NEW})
    for name, kind in SEQ2SEQ.items():
        ckpt, out = root / name, root / f"{name}-onnx"
        refs.MODELS[name](ckpt)
        want[name] = refs.reference_tokens(name, ckpt, NEW)
        assert cli.main(["export", str(ckpt), "--with-past", "-o", f"{out}/"]) == 0, name
        requests.append({"kind": kind, "dir": str(out), "inputs": refs.encoder_inputs(name), "max_new_tokens": NEW})
    r = subprocess.run([python, CLIENT], input=json.dumps(requests), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    answers = json.loads(r.stdout.strip().splitlines()[-1])
    return {name: (want[name], answer) for name, answer in zip([*CAUSAL, *SEQ2SEQ], answers)}


@pytest.mark.parametrize("name", [*CAUSAL, *SEQ2SEQ])
def test_optimum_generates_the_tokens_of_transformers(results, name):
    want, got = results[name]
    assert "error" not in got, got.get("trace", got)
    expected = {"t5": "ORTModelForSeq2SeqLM", "t5-v1_1": "ORTModelForSeq2SeqLM", "whisper": "ORTModelForWhisper"}
    assert got["class"] == expected.get(name, "ORTModelForCausalLM")
    tokens = refs.generated(name, got["tokens"]) if name in SEQ2SEQ else got["tokens"]
    assert tokens == want, (name, tokens, want)
    new = [t for row in want for t in row[-NEW:]]
    assert len(set(new)) > 2, want   # the weights say something: not one token repeated
