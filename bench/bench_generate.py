"""Benchmark: greedy generation, graphformer.generate against transformers' `generate`, same weights.

Models (random weights, seeded; ours loads the reference's through the spec's `hf` weight map):
- gpt2-small   specs/gpt2.yaml (124M) vs GPT2LMHeadModel(GPT2Config())
- llama-124m   specs/llama.yaml --set vocab=32000 d_model=768 layers=12 heads=12 kv_heads=4 d_ff=2048
               max_len=1024 (grouped-query, rotary, SwiGLU) vs LlamaForCausalLM at the same config

Each case: a random prompt of 32 tokens, 128 new tokens, greedy, batch 1 and 8. Tokens/s = B × 128 ÷ the
wall time of the whole call (prompt included). transformers runs with its static cache
(`cache_implementation="static"`) where the model takes it, else its default dynamic cache; ours runs
eager, and with `compile=True` (torch.compile of the one-token step) when --compile is given. Rounds are
paired (ours, then theirs, alternating) in one process so machine noise hits both alike; medians.

Run: python bench/bench_generate.py [--write-doc] [--rounds N] [--compile]
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import transformers as T  # noqa: E402

import graphformer as gf  # noqa: E402
from graphformer.backends.torch.weights import load_weights  # noqa: E402
from report import cpu, write_section  # noqa: E402  (bench/report.py)

DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN, END = "<!-- generate:begin -->", "<!-- generate:end -->"
PROMPT, NEW = 32, 128
LLAMA = dict(vocab=32000, d_model=768, layers=12, heads=12, kv_heads=4, d_ff=2048, max_len=1024)


def models(name: str):
    torch.manual_seed(0)
    if name == "gpt2-small":
        ref = T.GPT2LMHeadModel(T.GPT2Config(attn_implementation="sdpa"))
        spec = gf.load(os.path.join(ROOT, "specs", "gpt2.yaml"))
    else:
        c = LLAMA
        ref = T.LlamaForCausalLM(T.LlamaConfig(
            vocab_size=c["vocab"], hidden_size=c["d_model"], num_hidden_layers=c["layers"],
            num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"], intermediate_size=c["d_ff"],
            max_position_embeddings=c["max_len"], rms_norm_eps=1e-5, attn_implementation="sdpa"))  # the spec's eps
        spec = gf.load(os.path.join(ROOT, "specs", "llama.yaml"), overrides=dict(LLAMA))
    ref.eval()
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    ours = gf.build(spec, seed=1).eval()
    load_weights(ours, ref.state_dict(), "hf")
    return ref, ours, spec.params["vocab"]


def hf_runner(ref, ids):
    """transformers' generate with its static cache if this model takes it, else the default."""
    kw = dict(max_new_tokens=NEW, do_sample=False, attention_mask=torch.ones_like(ids))
    try:
        with torch.inference_mode():
            ref.generate(ids[:, :4], **{**kw, "attention_mask": torch.ones_like(ids[:, :4]), "max_new_tokens": 2},
                         cache_implementation="static")
        kw["cache_implementation"], cache = "static", "static"
    except Exception:  # noqa: BLE001 — a model without static-cache support
        cache = "dynamic"

    def run():
        with torch.inference_mode():
            return ref.generate(ids, **kw)
    return run, cache


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench(name: str, b: int, rounds: int, compile: bool) -> dict:
    ref, ours, vocab = models(name)
    ids = torch.randint(0, vocab, (b, PROMPT), generator=torch.Generator().manual_seed(b))
    theirs, cache = hf_runner(ref, ids)
    impls = {"graphformer": lambda: gf.generate(ours, ids, NEW)}
    if compile:
        impls["graphformer (compiled)"] = lambda: gf.generate(ours, ids, NEW, compile=True)
    impls["transformers"] = theirs
    outs = {k: f() for k, f in impls.items()}                       # warm-up (and the compile)
    same = all(torch.equal(o, outs["transformers"]) for o in outs.values())
    times = {k: [] for k in impls}
    for _ in range(rounds):
        for k, f in impls.items():
            times[k].append(timed(f)[0])
    rate = {k: b * NEW / statistics.median(v) for k, v in times.items()}
    return dict(model=name, b=b, cache=cache, rate=rate, same=same)


def table(results: list[dict], rounds: int) -> str:
    impls = [k for k in results[0]["rate"] if k != "transformers"]
    head = "| model | B | " + " | ".join(f"{k} tok/s" for k in impls) + " | transformers tok/s (cache) | " \
           + " | ".join(f"{k} ÷ transformers" for k in impls) + " | same tokens |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        hf = r["rate"]["transformers"]
        lines.append(f"| {r['model']} | {r['b']} | " + " | ".join(f"{r['rate'][k]:.1f}" for k in impls)
                     + f" | {hf:.1f} ({r['cache']}) | " + " | ".join(f"{r['rate'][k] / hf:.2f}×" for k in impls)
                     + f" | {'yes' if r['same'] else 'NO'} |")
    return "\n".join([
        "## Generation: `graphformer.generate` vs transformers `generate`",
        "",
        f"Greedy, prompt {PROMPT} tokens, {NEW} new tokens, random weights shared by both (ours loaded through "
        f"the `hf` weight map); tokens/s = B × {NEW} ÷ the whole call, median of {rounds} paired rounds. "
        f"{cpu()} ({torch.get_num_threads()} torch threads), torch {torch.__version__}, transformers {T.__version__}, {datetime.date.today()}. "
        "`same tokens`: both produced identical sequences. Produced by `python bench/bench_generate.py "
        "--write-doc`.",
        "",
        *lines,
    ])


def main() -> None:
    global NEW
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-doc", action="store_true", help="write the table into docs/performance.md")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time graphformer with compile=True")
    ap.add_argument("--models", nargs="+", default=["gpt2-small", "llama-124m"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--new", type=int, default=NEW, help=f"new tokens per call (default {NEW})")
    ap.add_argument("--threads", type=int, help="torch threads (1 is faster on a machine shared with others)")
    args = ap.parse_args()
    NEW = args.new
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    results = []
    for name in args.models:
        for b in args.batches:
            r = bench(name, b, args.rounds, args.compile)
            print(name, f"B={b}", {k: round(v, 1) for k, v in r["rate"].items()}, "same tokens:", r["same"],
                  flush=True)
            results.append(r)
    text = table(results, args.rounds)
    print(text)
    if args.write_doc:
        write_section(DOC, BEGIN, END, text)


if __name__ == "__main__":
    main()
