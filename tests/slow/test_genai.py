"""onnxruntime-genai, a runtime nobody here wrote, on a directory `graphformer export DIR --with-past -o out/`
writes from a transformers save_pretrained directory: for a tiny Llama with grouped-query attention the
greedy tokens equal graphformer.generate's and transformers' LlamaForCausalLM.generate's; for every causal
family of the catalogue (tests/causal_refs.py: GPT-2, Llama, Mistral, Qwen2, Phi, Mixtral, Gemma-2, OLMo-2,
GPT-NeoX, BLOOM, GPT-OSS) they equal transformers' `generate`. Not here: DeepSeek-V2, whose cache (a latent
and a shared rotary key, two widths) onnxruntime-genai cannot hold, so the export writes no genai_config.json
for it; LLaVA, whose image features a text-only runtime does not feed."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
np = pytest.importorskip("numpy")
og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installable on this platform")

import cli  # noqa: E402
import graphformer  # noqa: E402
from causal_refs import CAUSAL, causal_reference  # noqa: E402
from parity import assert_greedy_tokens  # noqa: E402

T = transformers
T.logging.set_verbosity_error()
PROMPTS = [[5, 17, 3, 44, 9], [60, 2, 8]]
NEW = 12


def genai_greedy(directory, prompt: list[int], new: int) -> list[int]:
    model = og.Model(str(directory))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + new, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def test_onnxruntime_genai_generates_the_tokens_of_graphformer_and_transformers(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=97, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                        num_key_value_heads=2, intermediate_size=80, max_position_embeddings=64, rope_theta=500.0,
                        rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=96, pad_token_id=0)
    ref = T.LlamaForCausalLM(cfg).eval()
    ckpt, out = tmp_path / "tiny-llama", tmp_path / "out"
    ref.save_pretrained(ckpt)
    ref.generation_config.save_pretrained(ckpt)
    assert cli.main(["export", str(ckpt), "--with-past", "-o", f"{out}/"]) == 0, capsys.readouterr().err
    assert (out / "genai_config.json").is_file()
    model = graphformer.from_pretrained(ckpt)
    lengths = []
    for prompt in PROMPTS:
        ours = assert_greedy_tokens(model, ref, torch.tensor([prompt]), None, NEW, f"prompt {prompt}")
        ours = ours[0, len(prompt):].tolist()
        got = genai_greedy(out, prompt, NEW)
        # genai stops at the config's eos (96); up to there the tokens are the same
        assert got == ours[:len(got)] and (len(got) == NEW or got[-1] == 96), (prompt, got, ours)
        lengths.append(len(got))
    assert max(lengths) == NEW, lengths


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_onnxruntime_genai_generates_the_tokens_of_transformers_for_every_causal_family(name, tmp_path, capsys):
    ckpt, out = tmp_path / name, tmp_path / "out"
    prompt = PROMPTS[0]
    want = causal_reference(name, ckpt, NEW, [prompt])[0][len(prompt):]   # stops at the config's eos, as genai
    assert cli.main(["export", str(ckpt), "--with-past", "-o", f"{out}/"]) == 0, capsys.readouterr().err
    got = genai_greedy(out, prompt, NEW)
    assert got == want, (name, got, want)
    assert len(set(want)) > 2, want   # the weights say something: not one token repeated
