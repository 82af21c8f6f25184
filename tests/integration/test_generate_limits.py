"""Generation's limits: every argument of `graphformer.generate` and of `graphformer generate` is checked
before any work (a refusal names the argument and its value: GenerationError from the API, exit 2 and one
line from the CLI), and the memory a generation needs (key/value cache, output ids, the prompt's and the
encoder's forward; the weights too on the command line) is compared with what is available before any of
it is allocated. Memory is bounded by counts: the available figure is patched small, nothing big is made."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import graphformer  # noqa: E402
from graphformer.backends.torch import generation
from graphformer.analysis import memory  # noqa: E402
from graphformer.backends.torch import kvcache  # noqa: E402
from graphformer.cli import main as cli_main  # noqa: E402
from graphformer.base.errors import UsageError  # noqa: E402
from graphformer.backends.torch.generation import Decoder, GenerationError, sample  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
VOCAB = 97        # every tiny preset's


@pytest.fixture(scope="module")
def gpt2():
    return graphformer.build(graphformer.load(SPECS / "gpt2.yaml", preset="tiny"), seed=0).eval()   # max_len 32


@pytest.fixture(scope="module")
def t5():
    return graphformer.build(graphformer.load(SPECS / "t5-base.yaml", preset="tiny"), seed=0).eval()


IDS = torch.tensor([[5, 17, 3]])
SOURCE = {"tokens": torch.tensor([[13, 7, 42, 5, 1]])}


# -- the Python API ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(tokens=torch.tensor([[5, 97]])), r"tokens: token id 97 is outside the vocabulary of `gpt2` \(0..96\)"),
    (dict(tokens=torch.tensor([[-1, 5]])), r"tokens: token id -1 is outside"),
    (dict(tokens=torch.tensor([[5.0, 1.0]])), r"tokens must hold integer token ids, got a float32"),
    (dict(tokens=[5, 17]), r"tokens must be an integer tensor \[B, n\] of token ids, got list"),
    (dict(max_new_tokens=0), r"max_new_tokens must be an integer ≥ 1, got 0"),
    (dict(max_new_tokens=-3), r"max_new_tokens must be an integer ≥ 1, got -3"),
    (dict(max_new_tokens=2.0), r"max_new_tokens must be an integer, got 2.0"),
    (dict(max_new_tokens=True), r"max_new_tokens must be an integer, got True"),
    (dict(max_new_tokens=30), r"a prompt of 3 tokens \+ max_new_tokens 30 = 33 positions passes max_len 32"),
    (dict(max_new_tokens=10**30), r"max_new_tokens 10{30} = .* passes max_len 32"),
    (dict(seed=-1), r"seed must be an integer in 0 … 18446744073709551615, got -1"),
    (dict(seed=2**64), r"seed must be an integer in 0 … 18446744073709551615, got 18446744073709551616"),
    (dict(seed=1.5), r"seed must be an integer, got 1.5"),
    (dict(eos_token_id=VOCAB), r"eos_token_id must be an integer in 0 … 96, got 97"),
    (dict(eos_token_id=-1), r"eos_token_id must be an integer in 0 … 96, got -1"),
    (dict(eos_token_id=10**30), r"eos_token_id must be an integer in 0 … 96, got 10{30}"),
    (dict(temperature=float("nan")), r"temperature must be a finite number, got nan"),
    (dict(temperature=float("inf")), r"temperature must be a finite number, got inf"),
    (dict(temperature=-0.5), r"temperature must be ≥ 0 \(0 is greedy\), got -0.5"),
    (dict(temperature="hot"), r"temperature must be a number, got 'hot'"),
    (dict(temperature=1.0, top_k=0), r"top_k must be an integer ≥ 1, got 0"),
    (dict(temperature=1.0, top_k=2.5), r"top_k must be an integer, got 2.5"),
    (dict(temperature=1.0, top_p=float("nan")), r"top_p must be a finite number, got nan"),
    (dict(temperature=1.0, top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"),
    (dict(temperature=1.0, top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
    (dict(encoder_inputs=SOURCE), r"encoder_inputs names `tokens`, which is not an encoder input of `gpt2`"),
])
def test_api_refuses_each_bad_argument_by_name(gpt2, kwargs, message, monkeypatch):
    made = _count_caches(monkeypatch)
    args = dict(tokens=IDS, max_new_tokens=4)
    args.update(kwargs)
    with pytest.raises(GenerationError, match=message) as e:
        graphformer.generate(gpt2, args.pop("tokens"), args.pop("max_new_tokens"), **args)
    assert isinstance(e.value, ValueError) and isinstance(e.value, UsageError)
    assert made == []          # refused before the cache


@pytest.mark.parametrize("source,message", [
    ({"tokens": torch.tensor([[13, 97, 1]])}, r"encoder_inputs `tokens`: token id 97 is outside the vocabulary "
                                              r"of `t5-base` \(0..96\)"),
    ({"tokens": torch.tensor([[13, -5, 1]])}, r"encoder_inputs `tokens`: token id -5 is outside"),
    ({"tokens": torch.tensor([[13.0, 5.0]])}, r"encoder_inputs `tokens` must hold integer token ids"),
    ({"tokens": torch.tensor([[[13, 5]]])}, r"encoder_inputs `tokens` has 3 dims \[1, 1, 2\], spec input `tokens` 2"),
    ({"tokens": torch.tensor([[13, 5, 1]]), "mask": torch.tensor([[1, 1]])},
     r"encoder_inputs `mask` has shape \[1, 2\], which does not fit spec input `mask` \[B, n\] at B=1, n=3"),
    ({"tokens": torch.tensor([[13, 5], [6, 7]])}, r"encoder_inputs `tokens` must be a tensor with the prompts' "
                                                  r"batch 1 first, got \[2, 2\]"),
    ({}, r"give its encoder input `tokens`"),
])
def test_api_refuses_bad_encoder_inputs(t5, source, message, monkeypatch):
    made = _count_caches(monkeypatch)
    with pytest.raises(GenerationError, match=message):
        graphformer.generate(t5, torch.zeros(1, 1, dtype=torch.long), 3, encoder_inputs=source)
    assert made == []


def test_extreme_temperatures_sample_without_nan():
    logits = torch.tensor([[3.0, 1.0, -2.0, 2.9]])
    for t in (1e-30, 1e-320, 5e-324):      # float32 cannot hold these: they tend to greedy
        picks = {int(sample(logits, t, generator=torch.Generator().manual_seed(i))) for i in range(20)}
        assert picks == {0}
    picks = {int(sample(logits, 1e300, generator=torch.Generator().manual_seed(i))) for i in range(200)}
    assert picks == {0, 1, 2, 3}           # a huge temperature: uniform, still no NaN


def test_valid_extremes_are_accepted(gpt2):
    out = graphformer.generate(gpt2, IDS, 29, temperature=1e-30, top_k=10**6, top_p=1e-9, seed=2**64 - 1,
                               eos_token_id=VOCAB - 1)
    assert out.shape[0] == 1 and 4 <= out.shape[1] <= 32


# -- memory before allocation -----------------------------------------------------------------------------------

def _available(monkeypatch, n):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": n)


def _count_caches(monkeypatch):
    """The key/value caches whose tensors get allocated (a list that grows by one per cache)."""
    made = []
    real = kvcache.KVCache.__init__

    def spy(self, layers, batch, length, dtype, device):
        real(self, layers, batch, length, dtype, device)
        made.append(length)
    monkeypatch.setattr(kvcache.KVCache, "__init__", spy)
    return made


def test_the_estimate_is_the_cache_really_allocated():
    layers = [(2, 8, None), (2, 8, 5), (4, 16, None)]     # grouped-query, a sliding window, another width
    cache = kvcache.KVCache(layers, 3, 12, torch.float32, torch.device("cpu"))
    real = sum(s.k.nbytes + s.v.nbytes for s in cache.slots) + sum(v.nbytes for v in cache.valid.values())
    assert kvcache.KVCache.nbytes(layers, 3, 12, 4) == real


@pytest.mark.parametrize("name", ["llama.yaml", "mistral-7b.yaml", "gpt2.yaml"])
def test_the_cache_layers_read_from_the_ir_are_the_built_modules(name):
    model = graphformer.build(graphformer.load(SPECS / name, preset="tiny"), seed=0)
    plan = generation.plan_generation(model.spec)
    slots = sorted(plan.slots.values(), key=lambda s: s.layer)
    built = [(m.kv_heads, m.head_dim, m.window) for m in (model.node_module(s.node) for s in slots)]
    assert generation.cache_layers(plan, model.spec.ir) == built


def test_a_cache_that_cannot_fit_is_refused_before_any_tensor(gpt2, monkeypatch):
    gpt2.__dict__.pop(generation._DECODERS, None)      # no cache kept from an earlier call
    made = _count_caches(monkeypatch)
    zeros = []
    real_zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: zeros.append(a) or real_zeros(*a, **k))
    _available(monkeypatch, 10_000)
    with pytest.raises(UsageError, match=r"generating 20 tokens after 3 from `gpt2` at batch 1 needs at least "
                                         r"[\d,]+ bytes .* but only 10,000 \(10.0 KB\) are available on cpu; use a "
                                         "shorter prompt, fewer new tokens or a smaller batch"):
        graphformer.generate(gpt2, IDS, 20)
    with pytest.raises(UsageError, match=r"a key/value cache of 23 positions × batch 1 needs at least"):
        Decoder(gpt2, 1, 23)                # the cache guards itself too (the lower-level interface)
    assert made == [] and zeros == []


def test_the_estimate_counts_cache_output_and_forward(gpt2, monkeypatch):
    """Exactly at the estimate a generation runs; a byte less is refused. A cache already kept on the model
    for this batch and length is not counted again."""
    plan = generation.plan_generation(gpt2.spec)
    gpt2.__dict__.pop(generation._DECODERS, None)
    dims = {"B": 2, "n": 3}
    need = generation.generation_bytes(plan, gpt2.spec.ir, dims, 2, 8, "float32")
    cache = kvcache.KVCache.nbytes(generation.cache_layers(plan, gpt2.spec.ir), 2, 8, 4)
    assert need == cache + 8 * 2 * 8 + memory.forward_bytes(gpt2.spec.ir, dims, "float32")
    ids = IDS.repeat(2, 1)
    _available(monkeypatch, need - 1)
    with pytest.raises(UsageError, match="needs at least"):
        graphformer.generate(gpt2, ids, 5)
    _available(monkeypatch, need)
    assert graphformer.generate(gpt2, ids, 5).shape == (2, 8)
    _available(monkeypatch, need - cache)     # the kept cache is reused: only the rest is needed
    assert graphformer.generate(gpt2, ids, 5).shape == (2, 8)
    with pytest.raises(UsageError, match="needs at least"):
        graphformer.generate(gpt2, ids, 6)   # longer: a new cache


def test_a_long_encoder_input_is_refused_before_its_forward(t5, monkeypatch):
    calls = []
    monkeypatch.setattr(generation.Decoder, "encode", lambda self, feed=None: calls.append(1))
    _available(monkeypatch, 100_000_000)
    source = {"tokens": torch.full((1, 20_000), 5)}          # 5 heads × 20,000² position bias: 8 GB
    with pytest.raises(UsageError, match=r"needs at least 8,[\d,]+ bytes \(8.\d GB\)"):
        graphformer.generate(t5, torch.zeros(1, 1, dtype=torch.long), 3, encoder_inputs=source)
    assert calls == []


# -- the command line ---------------------------------------------------------------------------------------------

def _cli(capsys, spec, *argv):
    try:
        rc = cli_main(["generate", str(SPECS / spec), "--preset", "tiny", *argv])
    except SystemExit as e:     # argparse's usage errors
        rc = e.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.err


@pytest.mark.parametrize("argv,message", [
    (["--prompt-ids", "5,97"], "--prompt-ids: token id 97 is outside the vocabulary of `gpt2` (0..96)"),
    (["--prompt-ids", "5,-2"], "--prompt-ids: token id -2 is outside"),
    (["--prompt-ids", "5," + "9" * 30], f"--prompt-ids: token id {'9' * 30} is outside the vocabulary"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer ≥ 1, got 0"),
    (["--max-new-tokens", "-4"], "--max-new-tokens must be an integer ≥ 1, got -4"),
    (["--max-new-tokens", "99999990"], "a prompt of 3 tokens + --max-new-tokens 99999990 = 99999993 positions "
                                       "passes max_len 32"),
    (["--seed", "-1"], "argument --seed: -1 is outside 0 … 2^64 − 1"),
    (["--seed", "9" * 30], "argument --seed: " + "9" * 30 + " is outside 0 … 2^64 − 1"),
    (["--eos-id", "97"], "--eos-id must be an integer in 0 … 96, got 97"),
    (["--eos-id", "9" * 30], "--eos-id must be an integer in 0 … 96, got " + "9" * 30),
    (["--temperature", "nan"], "--temperature must be a finite number, got nan"),
    (["--temperature", "inf"], "--temperature must be a finite number, got inf"),
    (["--temperature", "-1"], "--temperature must be ≥ 0 (0 is greedy), got -1.0"),
    (["--temperature", "1", "--top-k", "0"], "--top-k must be an integer ≥ 1, got 0"),
    (["--temperature", "1", "--top-p", "nan"], "--top-p must be a finite number, got nan"),
    (["--temperature", "1", "--top-p", "2"], "--top-p must be in (0, 1], got 2.0"),
    (["--encoder-ids", "tokens=1,2"], "--encoder-ids names `tokens`, which is not an encoder input of `gpt2`"),
])
def test_cli_refuses_each_bad_argument_by_its_flag(argv, message, capsys, monkeypatch):
    built = _count_builds(monkeypatch)
    base = {"--prompt-ids": "5,17,3", "--max-new-tokens": "4"}
    for flag in [a for a in argv if a in base]:
        base.pop(flag)
    rc, err = _cli(capsys, "gpt2.yaml", *[x for kv in base.items() for x in kv], *argv)
    assert rc == 2 and message in err, err
    assert built == []         # refused before the model is built


@pytest.mark.parametrize("argv,message", [
    (["--encoder-ids", "tokens=13,97,1"], "--encoder-ids `tokens`: token id 97 is outside the vocabulary of "
                                          "`t5-base` (0..96)"),
    (["--encoder-ids", "tokens=13," + "9" * 25], f"--encoder-ids `tokens`: token id {'9' * 25} is outside the "
                                                 "vocabulary"),
    (["--encoder-ids", "tokens=13,5,1", "--encoder-ids", "mask=1,1"],
     "--encoder-ids `mask` has shape [1, 2], which does not fit spec input `mask` [B, n] at B=1, n=3"),
    ([], "give its encoder input `tokens`"),
])
def test_cli_refuses_bad_encoder_ids(argv, message, capsys, monkeypatch):
    built = _count_builds(monkeypatch)
    rc, err = _cli(capsys, "t5-base.yaml", "--prompt-ids", "0", "--max-new-tokens", "3", *argv)
    assert rc == 2 and message in err, err
    assert built == []


def _count_builds(monkeypatch):
    import graphformer.backends.torch as backend
    built = []
    real = backend.build
    monkeypatch.setattr(backend, "build", lambda *a, **k: built.append(1) or real(*a, **k))
    return built


def test_cli_refuses_a_cache_that_cannot_fit_before_building(capsys, monkeypatch):
    """The attack: `--set max_len=100000000 --max-new-tokens 99999990` asked for ~65 GB of cache and weights."""
    built = _count_builds(monkeypatch)
    _available(monkeypatch, 1_000_000_000)
    rc, err = _cli(capsys, "gpt2.yaml", "--set", "max_len=100000000", "--prompt-ids", "5,17,3",
                   "--max-new-tokens", "99999990")
    assert rc == 2 and built == [], err
    assert ("graphformer: error: building `gpt2` and generating 99,999,990 tokens after 3 needs at least "
            "64,900,112,265 bytes (64.9 GB) but only 1,000,000,000 (1.0 GB) are available on cpu; use a smaller "
            "preset, a shorter prompt or fewer --max-new-tokens") in err


def test_cli_refuses_a_long_encoder_input_before_building(capsys, monkeypatch):
    built = _count_builds(monkeypatch)
    _available(monkeypatch, 1_000_000_000)
    rc, err = _cli(capsys, "t5-base.yaml", "--encoder-ids", "tokens=" + ",".join(["5"] * 20_000),
                   "--prompt-ids", "0", "--max-new-tokens", "3")
    assert rc == 2 and built == [] and "needs at least 8," in err and "available on cpu" in err, err


def test_cli_out_of_memory_past_the_estimate_is_exit_2(capsys, monkeypatch):
    """What the lower bound misses fails as an allocation: exit 2 naming it, not a traceback."""
    def fail(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 3200000000 bytes")
    monkeypatch.setattr(generation.Decoder, "prompt", fail)
    rc, err = _cli(capsys, "gpt2.yaml", "--prompt-ids", "5,17,3", "--max-new-tokens", "4")
    assert rc == 2 and "graphformer: error: out of memory during generation: DefaultCPUAllocator" in err, err
