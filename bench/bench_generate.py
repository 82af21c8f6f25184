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

`--roofline` measures decoding at batch 1 against the memory roofline instead (llama-124m, both sides):
a STREAM-like copy of two 256 MiB arrays gives the bandwidth one process reaches at these threads; time
per new token is the difference of two paired `generate` calls (64 + 1 and 1 new tokens) ÷ 64, CPU time
and wall; bytes per token are every weight a step reads (all but the token table, whose one row is
noise) plus the key/value cache it attends over. A torch.profiler breakdown of one decode step (the same
difference of two profiled calls) splits each side's time into matmuls, attention, cache writes, other
ops and the Python between ops.

`--mamba` times specs/mamba.yaml (the tiny preset and mamba-130m's shape, random weights) against
transformers' MambaForCausalLM instead: both carry a recurrent state (ours: the decoder plan's state slots),
so a step costs the same whatever the length. CPU time of the process (time.process_time, one torch thread,
so other agents' load does not count), paired rounds in alternating order, the median of the per-round
ratios; the load average is printed with the table.

Run: python bench/bench_generate.py [--write-doc] [--rounds N] [--compile] [--roofline] [--mamba]
"""
from __future__ import annotations

import argparse
import collections
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
ROOF_BEGIN, ROOF_END = "<!-- decode:begin -->", "<!-- decode:end -->"
MAMBA_BEGIN, MAMBA_END = "<!-- mamba-generate:begin -->", "<!-- mamba-generate:end -->"
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


# ---------------------------------------------------------------- Mamba: a recurrent state instead of a KV cache

MAMBA_PRESETS = ("tiny", "mamba-130m")


def mamba_models(preset: str):
    spec = gf.load(os.path.join(ROOT, "specs", "mamba.yaml"), preset=preset)
    p = spec.params
    torch.manual_seed(0)
    ref = T.MambaForCausalLM(T.MambaConfig(
        vocab_size=p["vocab"], hidden_size=p["d_model"], num_hidden_layers=p["layers"], state_size=p["state"],
        expand=p["expand"], conv_kernel=p["conv_kernel"], time_step_rank=p["dt_rank"],
        layer_norm_epsilon=p["eps"])).eval()
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    ours = gf.build(spec, seed=1).eval()
    load_weights(ours, ref.state_dict(), "hf")
    return ref, ours, p["vocab"]


def cpu_timed(fn) -> tuple[float, object]:
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def mamba_bench(preset: str, b: int, rounds: int, prompt: int, new: int) -> dict:
    ref, ours, vocab = mamba_models(preset)
    ids = torch.randint(0, vocab, (b, prompt), generator=torch.Generator().manual_seed(b))
    impls = {"graphformer": lambda: gf.generate(ours, ids, new),
             "transformers": lambda: ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                                  do_sample=False)}
    outs = {k: f() for k, f in impls.items()}                   # warm-up
    same = torch.equal(outs["graphformer"], outs["transformers"])
    times = {k: [] for k in impls}
    for r in range(rounds):
        for k in (list(impls) if r % 2 == 0 else list(impls)[::-1]):
            times[k].append(cpu_timed(impls[k])[0])
    ratio = statistics.median(t / o for o, t in zip(times["graphformer"], times["transformers"]))
    rate = {k: b * new / statistics.median(v) for k, v in times.items()}
    return dict(model=f"mamba {preset}", b=b, rate=rate, ratio=ratio, same=same)


def mamba_table(results: list[dict], rounds: int, prompt: int, new: int, load: tuple) -> str:
    lines = ["| model | B | graphformer tok/s | transformers tok/s | graphformer ÷ transformers | same tokens |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['b']} | {r['rate']['graphformer']:.1f} | {r['rate']['transformers']:.1f} "
                     f"| {r['ratio']:.2f}× | {'yes' if r['same'] else 'NO'} |")
    return "\n".join([
        "## Generation with a recurrent state: Mamba",
        "",
        f"Greedy, prompt {prompt} tokens, {new} new tokens, random weights shared by both (ours loaded through the "
        f"`hf` weight map), specs/mamba.yaml's `tiny` preset and mamba-130m's shape against MambaForCausalLM "
        "(its pure-torch path). Tokens/s = B × new ÷ the median CPU time of the process (one torch thread); "
        f"the ratio is the median of {rounds} paired rounds (alternating order), above 1 when graphformer is "
        f"faster. {cpu()}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the "
        f"start, torch {torch.__version__}, transformers {T.__version__}, {datetime.date.today()}. Produced by "
        "`python bench/bench_generate.py --mamba --write-doc`.",
        "",
        *lines,
    ])


def mamba(rounds: int, batches: list[int], prompt: int = 16, new: int = 32) -> str:
    torch.set_num_threads(1)
    load = os.getloadavg()
    results = []
    for preset in MAMBA_PRESETS:
        for b in batches:
            r = mamba_bench(preset, b, rounds, prompt, new)
            print(r["model"], f"B={b}", {k: round(v, 1) for k, v in r["rate"].items()}, f"ratio {r['ratio']:.2f}",
                  "same tokens:", r["same"], flush=True)
            results.append(r)
    return mamba_table(results, rounds, prompt, new, load)


# ---------------------------------------------------------------- decoding at batch 1 vs the memory roofline

def stream_copy(mib: int = 256, rounds: int = 7) -> float:
    """Bytes per second of `b.copy_(a)` over two `mib` MiB arrays (STREAM's copy: read + write counted), the
    best of `rounds`: what this process can move through memory at the current thread count."""
    a = torch.ones(mib * 2**20 // 4)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best


def step_bytes(ours, length: int) -> int:
    """Bytes one decode step at batch 1 reads: every parameter but the token table (one row of it), and the
    key/value cache of `length` positions it attends over."""
    table = ours.node_module("tok").weight
    weights = sum(p.numel() * p.element_size() for p in ours.parameters() if p is not table)
    from graphformer.backends.torch.generation import Decoder
    cache = Decoder(ours, 1, length).cache
    return weights + sum(s.k.nbytes + s.v.nbytes for s in cache.slots)


def _two_calls(impls: dict, rounds: int, new: int):
    """Per new token, CPU and wall seconds: (call with new + 1 tokens − call with 1) ÷ new, paired rounds
    alternating which side goes first."""
    cpu_t = {k: [] for k in impls}
    wall_t = {k: [] for k in impls}
    for r in range(rounds):
        for k in (list(impls) if r % 2 == 0 else list(impls)[::-1]):
            got = []
            for m in (new + 1, 1):
                c, w = time.process_time(), time.perf_counter()
                impls[k](m)
                got.append((time.process_time() - c, time.perf_counter() - w))
            cpu_t[k].append((got[0][0] - got[1][0]) / new)
            wall_t[k].append((got[0][1] - got[1][1]) / new)
    return cpu_t, wall_t


# op self time → bucket, for the breakdown of a decode step
BUCKETS = [("matmuls", ("aten::mm", "aten::addmm", "aten::mv", "aten::bmm", "aten::addmv")),
           ("attention", ("scaled_dot_product",)),
           ("cache writes", ("aten::index_copy", "aten::index_put", "aten::_index_put_impl_")),
           ("sampling", ("aten::argmax", "aten::multinomial", "aten::topk", "aten::sort"))]


def _bucket(name: str) -> str:
    for bucket, keys in BUCKETS:
        if any(name.startswith(k) or k in name for k in keys):
            return bucket
    return "other ops"


def profile_step(call, new: int) -> dict:
    """One decode step's self CPU time per bucket, ops per step, and the Python between ops (wall − the ops'
    self time): the difference of profiled calls with new + 1 and 1 new tokens, ÷ new."""
    from torch.profiler import ProfilerActivity, profile
    out = []
    for m in (new + 1, 1):
        with profile(activities=[ProfilerActivity.CPU]) as p:
            t = time.perf_counter()
            call(m)
            wall = time.perf_counter() - t
        buckets, ops = collections.Counter(), 0
        for e in p.key_averages():
            if e.key.startswith(("aten::", "Torch-Compiled")) or e.key in ("cudaDeviceSynchronize",):
                buckets[_bucket(e.key)] += e.self_cpu_time_total / 1e6
                ops += e.count if e.key.startswith("aten::") else 0
        out.append((buckets, ops, wall))
    (b1, o1, w1), (b0, o0, w0) = out
    step = {k: (b1[k] - b0[k]) / new for k in set(b1) | set(b0)}
    step["wall"] = (w1 - w0) / new
    step["Python and dispatch"] = step["wall"] - sum(v for k, v in step.items() if k != "wall")
    step["ops"] = (o1 - o0) / new
    return step


def roofline(rounds: int, new: int = 64) -> str:
    ref, ours, vocab = models("llama-124m")
    ids = torch.randint(0, vocab, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    hf_kw = dict(do_sample=False, attention_mask=torch.ones_like(ids), cache_implementation="static")

    def hf(m):
        with torch.inference_mode():
            return ref.generate(ids, max_new_tokens=m, **hf_kw)
    impls = {"graphformer": lambda m: gf.generate(ours, ids, m), "transformers": hf}
    same = torch.equal(impls["graphformer"](new + 1), impls["transformers"](new + 1))   # warm-up, and a check
    for f in impls.values():
        f(1)
    bw = stream_copy()
    nbytes = step_bytes(ours, PROMPT + new + 1)
    cpu_t, wall_t = _two_calls(impls, rounds, new)
    prof = {k: profile_step(f, min(new, 16)) for k, f in impls.items()}
    load = os.getloadavg()[0]
    lines = ["| | graphformer | transformers (static cache) |", "|---|---:|---:|"]
    med = {k: statistics.median(v) for k, v in wall_t.items()}
    medc = {k: statistics.median(v) for k, v in cpu_t.items()}
    lines.append("| time per token, wall (CPU) | " + " | ".join(
        f"{med[k] * 1e3:.1f} ms ({medc[k] * 1e3:.1f} ms)" for k in impls) + " |")
    lines.append("| weight + cache bytes ÷ wall time per token | " + " | ".join(
        f"{nbytes / med[k] / 1e9:.1f} GB/s = {nbytes / med[k] / bw:.0%} of copy" for k in impls) + " |")
    ratio = statistics.median(a / b for a, b in zip(wall_t["graphformer"], wall_t["transformers"]))
    ratio_c = statistics.median(a / b for a, b in zip(cpu_t["graphformer"], cpu_t["transformers"]))
    rows = ["matmuls", "attention", "cache writes", "sampling", "other ops", "Python and dispatch"]
    lines.append("| *one decode step, profiled:* | | |")
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(
            f"{prof[k].get(r, 0.0) * 1e3:.2f} ms ({prof[k].get(r, 0.0) / prof[k]['wall']:.0%})" for k in impls) + " |")
    lines.append("| ops per step | " + " | ".join(f"{prof[k]['ops']:.0f}" for k in impls) + " |")
    lines.append("| matmul bytes ÷ matmul time | " + " | ".join(
        f"{nbytes / prof[k]['matmuls'] / 1e9:.1f} GB/s" for k in impls) + " |")
    return "\n".join([
        "## Decoding at batch 1 against the memory roofline",
        "",
        f"llama-124m (`{' '.join(f'{k}={v}' for k, v in LLAMA.items())}`), fp32, greedy, prompt {PROMPT}, "
        f"{torch.get_num_threads()} torch thread(s); {cpu()}, torch {torch.__version__}, transformers "
        f"{T.__version__}, {datetime.date.today()}, 1-minute load average {load:.1f} at the end. Produced by "
        f"`python bench/bench_generate.py --roofline --threads {torch.get_num_threads()} --rounds {rounds} "
        "--write-doc`.",
        "",
        f"A decode step reads {nbytes / 1e6:.0f} MB (every weight but the token table, and the cache). "
        f"STREAM-like copy on this machine: **{bw / 1e9:.1f} GB/s** (2 × 256 MiB, read + write counted). "
        f"Time per token: (a call with {new + 1} new tokens − a call with 1) ÷ {new}, median of {rounds} paired "
        f"rounds; graphformer ÷ transformers per round: **{ratio:.2f}** wall, {ratio_c:.2f} CPU. Same tokens: "
        f"{'yes' if same else 'NO'}. The breakdown is torch.profiler's self CPU time per op over "
        f"{min(new, 16)} steps (the same difference of two calls), with the profiler's own cost in it; "
        "*Python and dispatch* is the step's wall time minus its ops' self time.",
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
    ap.add_argument("--mamba", action="store_true",
                    help="specs/mamba.yaml against MambaForCausalLM (CPU time, paired) instead")
    ap.add_argument("--roofline", action="store_true",
                    help="decoding at batch 1 against the machine's memory bandwidth, profiled, instead")
    args = ap.parse_args()
    NEW = args.new
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.mamba:
        text = mamba(args.rounds, args.batches)
        print(text)
        if args.write_doc:
            write_section(DOC, MAMBA_BEGIN, MAMBA_END, text)
        return
    if args.roofline:
        text = roofline(args.rounds)
        print(text)
        if args.write_doc:
            write_section(DOC, ROOF_BEGIN, ROOF_END, text)
        return
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
