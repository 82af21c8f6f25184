"""Generation with a key/value cache (graphformer.generate): greedy tokens equal transformers' `generate`
from the same weights, every step's logits equal a full recompute of our own model, the compiled decode
step is traced once, and bad arguments are refused with a clear message."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.backends.torch.generation import Decoder, GenerationError, sample  # noqa: E402
from parity import assert_cached_steps, assert_greedy_tokens, hf_greedy, ours, prompts  # noqa: E402
from test_parity_llm import pair  # noqa: E402

T = transformers
SPECS = Path(__file__).resolve().parents[2] / "specs"
NEW = 40   # new tokens per test: past tiny Mistral's window of 5 many times over


def gpt2_pair():
    torch.manual_seed(0)
    cfg = T.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, attn_implementation="sdpa")
    ref = T.GPT2LMHeadModel(cfg).eval()
    spec = graphformer.load(SPECS / "gpt2.yaml", preset="tiny", overrides={"max_len": 64})
    return spec, ref, ours(spec, ref)


def reference_pair(case):
    return gpt2_pair() if case == "gpt2" else pair(case)




@pytest.mark.parametrize("case", ["gpt2", "llama", "mistral-window", "mixtral", "qwen2", "phi"])
def test_greedy_tokens_equal_transformers_generate(case):
    spec, ref, model = reference_pair(case)
    assert_greedy_tokens(model, ref, *prompts(), NEW, case)


@pytest.mark.parametrize("case", ["gpt2", "llama", "mistral-window", "mixtral"])
def test_left_padded_batch_equals_transformers_generate(case):
    spec, ref, model = reference_pair(case)
    assert_greedy_tokens(model, ref, *prompts(padded=True), NEW, f"{case}, left-padded")


@pytest.mark.parametrize("case,padded", [("gpt2", False), ("llama", True), ("mistral-window", True),
                                         ("mixtral", False)])
def test_logits_at_every_step_equal_a_full_recompute(case, padded):
    spec, ref, model = reference_pair(case)
    assert_cached_steps(model, *prompts(padded=padded), 24, case)


def test_sliding_window_cache_is_window_sized_and_kv_heads_wide():
    spec, ref, model = reference_pair("mistral-window")
    dec = Decoder(model, 3, 48)
    slot = dec.cache.slots[0]
    assert tuple(slot.k.shape) == (3, 2, 5, 8)     # B, kv_heads (not heads=6), window, head_dim
    assert len(dec.cache.slots) == 2               # one per causal attention node


def test_compiled_decode_step_is_traced_once():
    pytest.importorskip("torch._dynamo")
    from torch._dynamo.utils import counters
    spec, ref, model = reference_pair("llama")
    ids, mask = prompts(padded=True)
    want = graphformer.generate(model, ids, 12, mask=mask)
    torch._dynamo.reset()
    counters.clear()
    # fullgraph: a graph break raises here and fails the test (it is what the test exists to catch)
    got = graphformer.generate(model, ids, 12, mask=mask, compile="eager")   # fullgraph: no graph break
    with torch._dynamo.config.patch(error_on_recompile=True):                 # and no recompile after
        again = graphformer.generate(model, ids, 10, mask=mask, compile="eager")
    assert counters["stats"]["unique_graphs"] == 1
    assert torch.equal(got, want) and torch.equal(again, want[:, :18])


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    spec, ref, model = reference_pair("llama")
    ids, _ = prompts()
    a = graphformer.generate(model, ids, 10, temperature=1.0, seed=7)
    b = graphformer.generate(model, ids, 10, temperature=1.0, seed=7)
    assert torch.equal(a, b)
    greedy = graphformer.generate(model, ids, 10)
    assert torch.equal(graphformer.generate(model, ids, 10, temperature=0.8, top_k=1, seed=1), greedy)
    assert torch.equal(graphformer.generate(model, ids, 10, temperature=0.8, top_p=1e-6, seed=1), greedy)


def test_top_p_keeps_the_smallest_set_over_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    seen = {int(sample(logits, 1.0, top_p=0.7, generator=torch.Generator().manual_seed(i))) for i in range(200)}
    assert seen == {0, 1}


def test_eos_ends_a_row_and_generation_stops_when_all_rows_did():
    spec, ref, model = reference_pair("llama")
    ids, _ = prompts()
    free = graphformer.generate(model, ids, 20)
    eos = int(free[0, 8 + 3])      # row 0's fourth new token
    got = graphformer.generate(model, ids, 20, eos_token_id=eos)
    first = (got[0, 8:] == eos).nonzero()[0].item()
    assert (got[0, 8 + first:] == eos).all()
    assert got.shape[1] <= free.shape[1]


def test_bad_arguments_are_refused_with_the_reason(tmp_path):
    spec, ref, model = reference_pair("llama")          # max_len 64
    ids, _ = prompts()
    with pytest.raises(GenerationError, match=r"max_new_tokens 60 .* passes max_len 64"):
        graphformer.generate(model, ids, 60)
    with pytest.raises(GenerationError, match=r"token id 97 is outside the vocabulary"):
        graphformer.generate(model, torch.tensor([[1, 97]]), 2)
    holes = torch.tensor([[1, 0, 1, 1, 1, 1, 1, 1]] * 3)
    with pytest.raises(GenerationError, match="left padding"):
        graphformer.generate(model, ids, 2, mask=holes)
    with pytest.raises(GenerationError, match="temperature"):
        graphformer.generate(model, ids, 2, temperature=-1.0)
    (tmp_path / "unmasked.yaml").write_text(UNMASKED)
    unmasked = graphformer.build(graphformer.load(str(tmp_path / "unmasked.yaml")), seed=0)
    with pytest.raises(GenerationError, match="no `mask` input"):
        graphformer.generate(unmasked, ids, 2, mask=torch.ones_like(ids))


UNMASKED = """\
graphformer: 1
name: unmasked
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, vocab: 97, dim: 16}
  attn:   {op: attention, heads: 2, causal: true}
  logits: {op: linear, out: 97}
outputs: {logits: logits}
"""


def test_a_spec_without_causal_attention_is_refused():
    bert = graphformer.build(graphformer.load(SPECS / "bert-base.yaml", preset="tiny"), seed=0)
    with pytest.raises(GenerationError) as e:
        graphformer.generate(bert, torch.tensor([[1, 2]]), 2)
    assert e.value.code == 1 and "is not causal" in str(e.value)


# ---------------------------------------------------------------- the command line

try:
    from graphformer.cli import main as cli_main
except ImportError:   # the CLI still at the repository root
    from cli import main as cli_main

WORDS = ["[UNK]", "the", "cat", "sat", "on", "a", "mat", "dog", "ran"] + [f"w{i}" for i in range(88)]   # 97


def tiny_tokenizer(path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_cli_streams_the_tokens_transformers_generates(tmp_path, capsys):
    spec, ref, model = reference_pair("llama")
    torch.save(ref.state_dict(), tmp_path / "llama.pt")
    rc = cli_main(["generate", str(SPECS / "llama.yaml"), "--preset", "tiny", "--weights", str(tmp_path / "llama.pt"),
                   "--weights-map", "hf", "--prompt-ids", "5,17,3,80", "--max-new-tokens", "33"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    want = hf_greedy(ref, torch.tensor([[5, 17, 3, 80]]), None, 33)[0, 4:].tolist()
    assert [int(t) for t in out.out.split()] == want
    assert "33 tokens in" in out.err


def test_cli_prompt_text_through_a_tokenizer(tmp_path, capsys):
    spec, _, model = gpt2_pair()
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "gpt2.safetensors")
    tok = tiny_tokenizer(tmp_path / "tokenizer.json")
    rc = cli_main(["generate", str(SPECS / "gpt2.yaml"), "--preset", "tiny", "--set", "max_len=64",
                   "--weights", str(tmp_path / "gpt2.safetensors"), "--prompt", "the cat sat",
                   "--tokenizer", str(tok), "--max-new-tokens", "6", "--temperature", "0.9", "--top-k", "5",
                   "--seed", "3"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    words = out.out.split()
    assert words[:3] == ["the", "cat", "sat"] and len(words) == 9 and set(words) <= set(WORDS)


@pytest.mark.parametrize("argv,code,message", [
    (["llama.yaml", "--prompt-ids", "1,2,3", "--max-new-tokens", "62"], 2, "--max-new-tokens 62 = 65 positions passes "
                                                                           "max_len 64"),
    (["llama.yaml", "--prompt-ids", "1,2,97", "--max-new-tokens", "2"], 2, "token id 97 is outside"),
    (["bert-base.yaml", "--prompt-ids", "1,2", "--max-new-tokens", "2"], 1, "is not causal"),
    (["llama.yaml", "--prompt", "the cat", "--max-new-tokens", "2"], 2, "needs --tokenizer"),
    (["llama.yaml", "--prompt-ids", "1,x", "--max-new-tokens", "2"], 2, "comma-separated integers"),
    (["llama.yaml", "--prompt-ids", "1", "--max-new-tokens", "2", "--top-p", "1.5"], 2, "--top-p must be in"),
])
def test_cli_bad_input_exits_with_a_message(argv, code, message, capsys):
    rc = cli_main(["generate", str(SPECS / argv[0]), "--preset", "tiny", *argv[1:]])
    err = capsys.readouterr().err
    assert rc == code and message in err and "Traceback" not in err
