"""Benchmark: graphformer's build of bert-base.yaml against three hand-written equivalents, side by side.

Every implementation computes the same function (BERT: token + position + type embeddings, LayerNorm,
post-norm GELU encoder layers with a padding mask, tanh pooler over [CLS]) at the same config:

- graphformer      graphformer.build(specs/bert-base.yaml)
- hf-bert-sdpa     transformers BertModel(BertConfig(...), attn_implementation="sdpa")
- torch.nn         nn.Embedding ×3 + LayerNorm + nn.TransformerEncoder(gelu, batch_first) + pooler
                   (eval + inference_mode take torch's fused "fast path" encoder kernels)
- naive            the notes' code: explicit softmax(QKᵀ/√d)·V per layer (an n×n score matrix)

Latency: median wall time of one forward (torch.inference_mode, eval, all-ones padding mask), the four
implementations timed in interleaved rounds in one process so machine noise hits them alike.
Memory: peak resident-memory increase during one forward (after a warm-up), measured in a fresh
subprocess per case as VmHWM after resetting it (`/proc/self/clear_refs` = 5) minus VmRSS before; glibc's
mmap threshold is pinned (MALLOC_MMAP_THRESHOLD_=65536) so freed tensors leave the resident set and the
peak is the peak of live tensors + workspace, not of allocator caching.
GFLOP/s: FLOPs of the forward from `graphformer summary` (a multiply-add = 2) ÷ latency, next to the
machine's measured fp32 2048³ matmul rate.

A second benchmark, `--llama`, compares graphformer's build of specs/llama.yaml with transformers
LlamaForCausalLM (sdpa) holding the same weights: forward (inference_mode) and one training step (forward,
cross-entropy, backward, AdamW step), at the tiny preset and at a ~100M-parameter size for each `--sizes`
B x n and each `--threads` count, as medians of CPU time in paired rounds (which side goes first
alternates), with glibc's malloc thresholds pinned (REUSE_MALLOC, unless --default-malloc) so that neither
side's page faults depend on what the other freed.

Run: python bench/bench_torch.py [--write-doc] [--quick] [--llama [--threads 1 2] [--sizes 1x128 4x512]
     [--rounds 5] [--default-malloc]]
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import graphformer as gf  # noqa: E402
from graphformer.base.dims import Dim  # noqa: E402
from graphformer.analysis.summary import rows  # noqa: E402
from report import cpu, write_section  # noqa: E402  (bench/report.py)

SPEC = os.path.join(ROOT, "specs", "bert-base.yaml")
DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN, END = "<!-- torch:begin -->", "<!-- torch:end -->"
IMPLS = ["graphformer", "hf-bert-sdpa", "torch.nn", "naive"]

# (label, preset, overrides, B, n, timed repeats)
CASES = [
    ("tiny, B=1, n=16", "tiny", {}, 1, 16, 400),
    ("base, B=8, n=128", None, {}, 8, 128, 9),
    ("base (2 layers), B=1, n=4096", None, {"layers": 2, "max_len": 4096}, 1, 4096, 5),
]


# ---------------------------------------------------------------- the hand-written references

class TorchNNBert(nn.Module):
    """BERT from torch.nn parts; the encoder takes torch's fused fast path in eval/inference mode."""

    def __init__(self, c: dict):
        super().__init__()
        d = c["d_model"]
        self.tok, self.pos = nn.Embedding(c["vocab"], d), nn.Embedding(c["max_len"], d)
        self.typ = nn.Embedding(c["type_vocab"], d)
        self.ln, self.drop = nn.LayerNorm(d, eps=1e-12), nn.Dropout(0.1)
        layer = nn.TransformerEncoderLayer(d, c["heads"], c["d_ff"], 0.1, activation="gelu",
                                           layer_norm_eps=1e-12, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, c["layers"], enable_nested_tensor=False)
        self.pooler = nn.Linear(d, d)

    def forward(self, input_ids, token_type_ids, attention_mask):
        n = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos.weight[:n] + self.typ(token_type_ids)
        x = self.encoder(self.drop(self.ln(x)), src_key_padding_mask=attention_mask == 0)
        return x, torch.tanh(self.pooler(x[:, 0]))


class NaiveAttention(nn.Module):
    """The notes' MultiHeadAttention: scores = QKᵀ/√dk, masked_fill, softmax, @V."""

    def __init__(self, d: int, h: int):
        super().__init__()
        self.h, self.dk = h, d // h
        self.W_q, self.W_k, self.W_v, self.W_o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mask):
        b, n, d = x.shape
        q = self.W_q(x).view(b, n, self.h, self.dk).transpose(1, 2)
        k = self.W_k(x).view(b, n, self.h, self.dk).transpose(1, 2)
        v = self.W_v(x).view(b, n, self.h, self.dk).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / self.dk ** 0.5                     # [B, h, n, n]
        scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        ctx = F.softmax(scores, dim=-1) @ v
        return self.W_o(ctx.transpose(1, 2).reshape(b, n, d))


class NaiveLayer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        d = c["d_model"]
        self.attn = NaiveAttention(d, c["heads"])
        self.ff = nn.Sequential(nn.Linear(d, c["d_ff"]), nn.GELU(), nn.Linear(c["d_ff"], d))
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(0.1)

    def forward(self, x, mask):
        x = self.norm1(x + self.drop(self.attn(x, mask)))
        return self.norm2(x + self.drop(self.ff(x)))


class NaiveBert(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        d = c["d_model"]
        self.tok, self.pos = nn.Embedding(c["vocab"], d), nn.Embedding(c["max_len"], d)
        self.typ = nn.Embedding(c["type_vocab"], d)
        self.ln, self.drop = nn.LayerNorm(d, eps=1e-12), nn.Dropout(0.1)
        self.layers = nn.ModuleList(NaiveLayer(c) for _ in range(c["layers"]))
        self.pooler = nn.Linear(d, d)

    def forward(self, input_ids, token_type_ids, attention_mask):
        n = input_ids.shape[1]
        x = self.drop(self.ln(self.tok(input_ids) + self.pos.weight[:n] + self.typ(token_type_ids)))
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x, torch.tanh(self.pooler(x[:, 0]))


def make(impl: str, spec, c: dict) -> nn.Module:
    if impl == "graphformer":
        return gf.build(spec, seed=0)
    if impl == "hf-bert-sdpa":
        from transformers import BertConfig, BertModel
        cfg = BertConfig(vocab_size=c["vocab"], hidden_size=c["d_model"], num_hidden_layers=c["layers"],
                         num_attention_heads=c["heads"], intermediate_size=c["d_ff"],
                         max_position_embeddings=c["max_len"], type_vocab_size=c["type_vocab"],
                         attn_implementation="sdpa")
        model = BertModel(cfg)
        assert model.config._attn_implementation == "sdpa"
        return model
    return (TorchNNBert if impl == "torch.nn" else NaiveBert)(c)


def copy_from_graphformer(ref: nn.Module, ours: nn.Module) -> None:
    """Give a torch.nn / naive BERT graphformer's weights (the names are ours; the layout theirs)."""
    p = dict(ours.named_parameters())
    sd = {"tok.weight": p["tok.weight"], "pos.weight": p["pos.weight"], "typ.weight": p["typ.weight"],
          "ln.weight": p["emb_ln.weight"], "ln.bias": p["emb_ln.bias"],
          "pooler.weight": p["pooler.weight"], "pooler.bias": p["pooler.bias"]}
    for i in range(len(ours["encoder"])):
        g = lambda k: p[f"encoder.{i}.{k}"]  # noqa: E731
        if isinstance(ref, TorchNNBert):
            pre = f"encoder.layers.{i}."
            sd.update({pre + "self_attn.in_proj_weight": torch.cat([g("attn.q.weight"), g("attn.k.weight"),
                                                                    g("attn.v.weight")]),
                       pre + "self_attn.in_proj_bias": torch.cat([g("attn.q.bias"), g("attn.k.bias"),
                                                                  g("attn.v.bias")]),
                       pre + "self_attn.out_proj.weight": g("attn.o.weight"),
                       pre + "self_attn.out_proj.bias": g("attn.o.bias"),
                       pre + "linear1.weight": g("up.weight"), pre + "linear1.bias": g("up.bias"),
                       pre + "linear2.weight": g("down.weight"), pre + "linear2.bias": g("down.bias")})
        else:
            pre = f"layers.{i}."
            sd.update({pre + f"attn.W_{x}.{w}": g(f"attn.{x}.{w}") for x in "qkvo" for w in ("weight", "bias")})
            sd.update({pre + "ff.0.weight": g("up.weight"), pre + "ff.0.bias": g("up.bias"),
                       pre + "ff.2.weight": g("down.weight"), pre + "ff.2.bias": g("down.bias")})
        sd.update({pre + f"norm{j}.{w}": g(f"ln{j}.{w}") for j in (1, 2) for w in ("weight", "bias")})
    ref.load_state_dict(sd, strict=True)


def check_same_function() -> float:
    """All four compute the same BERT: with one set of weights (HF's, loaded into graphformer through the
    spec's `hf` weight map, then copied into the others) and a padded batch, the outputs agree."""
    spec = gf.load(SPEC, "tiny")
    c = dict(spec.params)
    models = {impl: make(impl, spec, c).eval() for impl in IMPLS}
    gf.load_weights(models["graphformer"], models["hf-bert-sdpa"].state_dict(), "hf")
    for impl in ("torch.nn", "naive"):
        copy_from_graphformer(models[impl], models["graphformer"])
    x = gf.example_inputs(spec, dims={"B": 3, "n": 12}, seed=1)
    x["attention_mask"] = torch.tensor([[1] * 12, [1] * 7 + [0] * 5, [1] * 3 + [0] * 9])
    keep = x["attention_mask"].bool()
    worst = 0.0
    with torch.inference_mode():
        want = models["graphformer"](**x)
        for impl in IMPLS[1:]:
            out = models[impl](**x)
            hidden, pooled = (out.last_hidden_state, out.pooler_output) if impl == "hf-bert-sdpa" else out
            worst = max(worst, (hidden - want["last_hidden_state"])[keep].abs().max().item(),
                        (pooled - want["pooler_output"]).abs().max().item())
    assert worst < 1e-4, f"the implementations disagree by {worst}"
    return worst


# ---------------------------------------------------------------- measurement

def case_setup(preset, overrides, b, n):
    spec = gf.load(SPEC, preset, overrides)
    inputs = gf.example_inputs(spec, dims={"B": b, "n": n}, seed=0)
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])  # no padding: the common case
    flops = sum((r.flops for r in rows(spec.ir)), Dim.const(0)).evaluate({"B": b, "n": n})
    return spec, inputs, flops


def latencies(models: dict, inputs: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per forward, one entry per round; each round times every implementation back to back,
    so a burst of load on this shared machine hits all of them alike."""
    times = {k: [] for k in models}
    chunk = max(1, repeats // 20)     # small cases: time chunks of calls, 20 rounds
    with torch.inference_mode():
        for m in models.values():     # warm-up (one-time kernel selection, page faults)
            for _ in range(min(2 * chunk, 20) if chunk > 1 else 1):
                m(**inputs)
        for _ in range(max(1, repeats // chunk)):
            for k, m in models.items():
                t = time.perf_counter()
                for _ in range(chunk):
                    m(**inputs)
                times[k].append((time.perf_counter() - t) / chunk)
    return times


def ratio(times: dict[str, list[float]], impl: str, ref: str) -> float:
    """Median over rounds of impl's time over ref's time in the same round."""
    return statistics.median(a / b for a, b in zip(times[impl], times[ref]))


def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"{field}:\s+(\d+)", fh.read()).group(1)) * 1024


def peak_memory_child(impl: str, case_index: int) -> int:
    """(in a subprocess) bytes of resident memory a forward adds at its peak."""
    _, preset, overrides, b, n, _ = CASES[case_index]
    spec, inputs, _ = case_setup(preset, overrides, b, n)
    model = make(impl, spec, dict(spec.params)).eval()
    with torch.inference_mode():
        model(**inputs)               # warm-up
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")             # reset VmHWM to the current resident size
        before = _vm("VmRSS")
        model(**inputs)
        return max(0, _vm("VmHWM") - before)


def peak_memory(impl: str, case_index: int) -> int | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, __file__, "--memory-child", impl, str(case_index)],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-2000:])
        return None
    return int(proc.stdout.strip().splitlines()[-1])


def matmul_rate(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * size ** 3 / statistics.median(ts)


# ---------------------------------------------------------------- report

def machine() -> str:
    return f"{cpu()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def fmt_time(s: float) -> str:
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_mem(b: int | None) -> str:
    return "—" if b is None else "< 0.1 MiB" if b < 0.1 * 2**20 else f"{b / 2**20:.1f} MiB"


def table(results: list[dict], peak: float) -> str:
    lines = ["| case | implementation | latency | × fastest reference | GFLOP/s | % of matmul peak | peak memory |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        med = {k: statistics.median(v) for k, v in r["times"].items()}
        best = min((k for k in med if k != "graphformer"), key=med.get)
        for impl in IMPLS:
            t = med[impl]
            gfs = r["flops"] / t / 1e9
            name = f"**{impl}**" if impl == "graphformer" else impl
            lines.append(f"| {r['label']} | {name} | {fmt_time(t)} | {ratio(r['times'], impl, best):.2f} | {gfs:.1f} | "
                         f"{100 * gfs * 1e9 / peak:.0f}% | {fmt_mem(r['mem'].get(impl))} |")
    return "\n".join(lines)


def write_doc(text: str) -> None:
    write_section(DOC, BEGIN, END, text)


# ---------------------------------------------------------------- Llama: forward and training step vs transformers

LLAMA = os.path.join(ROOT, "specs", "llama.yaml")
LLAMA_BEGIN, LLAMA_END = "<!-- llama:begin -->", "<!-- llama:end -->"
LLAMA_100M = {"d_model": 768, "layers": 8, "heads": 12, "kv_heads": 4, "d_ff": 2048, "vocab": 32000}
LLAMA_100M_LABEL = "~100M (768 wide, 8 layers, GQA 12/4, vocab 32000)"
LLAMA_SIZES = [(1, 128), (4, 128), (1, 512), (4, 512)]      # (B, n) of the ~100M model


def llama_pair(preset, overrides):
    from transformers import LlamaConfig, LlamaForCausalLM
    spec = gf.load(LLAMA, preset, overrides)
    p = spec.params
    cfg = LlamaConfig(vocab_size=p["vocab"], hidden_size=p["d_model"], num_hidden_layers=p["layers"],
                      num_attention_heads=p["heads"], num_key_value_heads=p["kv_heads"],
                      intermediate_size=p["d_ff"], max_position_embeddings=p["max_len"], rope_theta=p["rope_theta"],
                      rms_norm_eps=p["eps"], attn_implementation="sdpa")
    torch.manual_seed(0)
    ref = LlamaForCausalLM(cfg)
    ours = gf.build(spec, seed=0)
    gf.load_weights(ours, ref.state_dict(), "hf")
    return spec, {"graphformer": ours, "hf-llama-sdpa": ref}


def _llama_step(name: str, model: nn.Module, ids: torch.Tensor, opt) -> float:
    """One training step; returns the CPU seconds of its AdamW step alone: the same element-wise work over
    the same parameter shapes on both sides, so its paired ratio is a control (≈ 1 up to noise)."""
    logits = model(tokens=ids)["logits"] if name == "graphformer" else model(input_ids=ids).logits
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    c = time.process_time()
    opt.step()
    c = time.process_time() - c
    opt.zero_grad(set_to_none=True)
    return c


def _forward(name: str, model: nn.Module, ids: torch.Tensor) -> None:
    with torch.inference_mode():
        model(tokens=ids) if name == "graphformer" else model(input_ids=ids)


def paired(models: dict, run, rounds: int) -> dict[str, dict[str, list[float]]]:
    """CPU and wall seconds and minor page faults of `run(name, model)` per round, both sides in every
    round, the side that goes first alternating (so neither always runs on the caches and allocator state
    the other left)."""
    out = {key: {k: [] for k in models} for key in ("cpu", "wall", "faults", "part")}
    names = list(models)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            f, c, w = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
            part = run(k, models[k])      # a run may return the CPU seconds of one part of it
            out["cpu"][k].append(time.process_time() - c)
            if part is not None:
                out["part"][k].append(part)
            out["wall"][k].append(time.perf_counter() - w)
            out["faults"][k].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
    return out


# glibc's malloc, left alone, moves its mmap threshold up to the largest block freed so far and trims the
# heap's top when enough of it is free: whether a step's buffers are recycled or freshly mapped (and
# page-faulted, ~25 % of a training step's CPU time at B=4, n=128) then depends on what the other side
# freed before it. Fixed thresholds make every side recycle its own memory, as a caching allocator does.
REUSE_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def pin_malloc() -> None:
    """Re-run this process with REUSE_MALLOC in its environment (glibc reads it once, at start-up)."""
    if all(os.environ.get(k) == v for k, v in REUSE_MALLOC.items()):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
              dict(os.environ, **REUSE_MALLOC))


def llama_bench(quick: bool, threads: list[int], sizes: list[tuple[int, int]], rounds: int) -> list[dict]:
    """Forward and training step, graphformer and transformers in paired rounds, at each thread count and
    (B, n): the tiny preset (per-op overhead), then the ~100M model at `sizes`."""
    cases = [("tiny", "tiny", {}, 1, 16, 50)] + ([] if quick else [
        (LLAMA_100M_LABEL, None, LLAMA_100M, b, n, rounds) for b, n in sizes])
    results = []
    for label, preset, overrides, *_ in {c[0]: c for c in cases}.values():
        spec, models = llama_pair(preset, overrides)
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
        for t in threads:
            torch.set_num_threads(t)
            for _, _, _, b, n, rounds_ in (c for c in cases if c[0] == label):
                ids = torch.randint(0, spec.params["vocab"], (b, n), generator=torch.Generator().manual_seed(0))
                for m in models.values():
                    m.eval()
                for k, m in models.items():
                    _forward(k, m, ids)                                # warm-up
                fwd = paired(models, lambda k, m: _forward(k, m, ids), rounds_)
                for m in models.values():
                    m.train()
                for k, m in models.items():
                    _llama_step(k, m, ids, opts[k])                     # warm-up (optimizer state allocated)
                train = paired(models, lambda k, m: _llama_step(k, m, ids, opts[k]), rounds_)
                params = sum(p.numel() for p in models["graphformer"].parameters())
                r = {"label": label, "threads": t, "b": b, "n": n, "params": params, "fwd": fwd, "train": train}
                results.append(r)
                print(f"{label}, {t} thread(s), B={b}, n={n}: forward {ratio(fwd['cpu'], *PAIR):.3f}× CPU "
                      f"({fmt_time(statistics.median(fwd['cpu']['graphformer']))} vs "
                      f"{fmt_time(statistics.median(fwd['cpu']['hf-llama-sdpa']))}), training step "
                      f"{ratio(train['cpu'], *PAIR):.3f}× CPU ({fmt_time(statistics.median(train['cpu']['graphformer']))} "
                      f"vs {fmt_time(statistics.median(train['cpu']['hf-llama-sdpa']))}; page faults "
                      f"{statistics.median(train['faults']['graphformer']):.0f} vs "
                      f"{statistics.median(train['faults']['hf-llama-sdpa']):.0f}; AdamW alone {ratio(train['part'], *PAIR):.3f}×), load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
        del models, opts
    return results


PAIR = ("graphformer", "hf-llama-sdpa")


def llama_report(results: list[dict], argv: str) -> str:
    rows_ = ["| case | threads | B | n | forward CPU: graphformer | transformers | × CPU | × wall "
             "| train step CPU: graphformer | transformers | × CPU | × wall | AdamW alone × CPU (control) "
             "| train page faults: graphformer / transformers |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    worst = {}
    for r in results:
        f, t = r["fwd"], r["train"]
        fx, tx = ratio(f["cpu"], *PAIR), ratio(t["cpu"], *PAIR)
        if r["label"] != "tiny":
            worst[r["threads"]] = max(worst.get(r["threads"], 0.0), fx, tx)
        rows_.append(f"| {r['label']} | {r['threads']} | {r['b']} | {r['n']} | "
                     f"{fmt_time(statistics.median(f['cpu']['graphformer']))} | "
                     f"{fmt_time(statistics.median(f['cpu']['hf-llama-sdpa']))} | **{fx:.2f}** | "
                     f"{ratio(f['wall'], *PAIR):.2f} | {fmt_time(statistics.median(t['cpu']['graphformer']))} | "
                     f"{fmt_time(statistics.median(t['cpu']['hf-llama-sdpa']))} | **{tx:.2f}** | "
                     f"{ratio(t['wall'], *PAIR):.2f} | {ratio(t['part'], *PAIR):.2f} | "
                     f"{statistics.median(t['faults']['graphformer']):,.0f} / "
                     f"{statistics.median(t['faults']['hf-llama-sdpa']):,.0f} |")
    verdicts = [f"- {t} thread(s), ~100M: worst ratio {w:.2f} — goal ≤ 1.0 {'met' if w <= 1.0 else '**missed**'}"
                for t, w in sorted(worst.items())]
    return "\n".join([
        "## torch backend: Llama vs transformers LlamaForCausalLM",
        "",
        f"Measured {datetime.date.today().isoformat()} on {cpu()}, torch {torch.__version__}, by "
        f"`python bench/bench_torch.py {argv}`; 1-minute load average {os.getloadavg()[0]:.1f} at the end "
        "(the machine is shared: other sessions' jobs ran alongside).",
        "Both hold the same weights (transformers' random init, loaded through llama.yaml's `hf` map); fp32, CPU.",
        "Forward: `torch.inference_mode`, eval, no padding mask. Training step: forward, next-token",
        "cross-entropy, backward, AdamW step. Times are medians of CPU time (`time.process_time`: all of the",
        "process's threads) per round; graphformer and transformers run in every round, which one goes first",
        "alternating. × is the median of per-round ratios graphformer ÷ transformers (below 1: graphformer is",
        "faster), of CPU time and of wall time. " + (
            "glibc's malloc thresholds pinned (`MALLOC_MMAP_THRESHOLD_=2**30`, `MALLOC_TRIM_THRESHOLD_=2**32`):"
            " each side recycles its own freed memory instead of page-faulting buffers whose fate the other"
            " side's frees decided." if all(os.environ.get(k) == v for k, v in REUSE_MALLOC.items()) else
            "glibc's malloc left at its defaults (dynamic mmap and trim thresholds)."),
        "Page faults: minor faults per training step (median), kernel time included in the CPU times.",
        "*AdamW alone*: the paired ratio of the optimizer step by itself, the same element-wise work over the",
        "same parameter shapes on both sides: how far from 1.00 this machine's noise moves a ratio.",
        "",
        *rows_,
        "",
        *verdicts,
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-doc", action="store_true", help=f"write the table into {os.path.relpath(DOC, ROOT)}")
    ap.add_argument("--quick", action="store_true", help="the first case only, no memory")
    ap.add_argument("--memory-child", nargs=2, metavar=("IMPL", "CASE"), help=argparse.SUPPRESS)
    ap.add_argument("--llama", action="store_true", help="the Llama forward / training-step benchmark instead")
    ap.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1],
                    help="torch threads; with --llama, each of several counts in turn (e.g. --threads 1 2)")
    ap.add_argument("--sizes", nargs="+", default=[f"{b}x{n}" for b, n in LLAMA_SIZES],
                    help="--llama: B x n of the ~100M model (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=6, help="--llama: paired rounds per case (forward and training)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="--llama: leave glibc's malloc thresholds alone (by default they are pinned: REUSE_MALLOC)")
    args = ap.parse_args()
    if args.llama and not args.default_malloc:
        pin_malloc()
    torch.set_num_threads(args.threads[0])
    if args.llama:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
        text = llama_report(llama_bench(args.quick, args.threads, sizes, args.rounds), " ".join(sys.argv[1:]))
        print(text)
        if args.write_doc:
            write_section(DOC, LLAMA_BEGIN, LLAMA_END, text)
        return
    if args.memory_child:
        print(peak_memory_child(args.memory_child[0], int(args.memory_child[1])))
        return
    t_start = time.time()
    agree = check_same_function()
    print(f"same function: with shared weights the four agree within {agree:.1e} on a padded batch")
    peak = matmul_rate()
    print(f"machine: {machine()}\nfp32 2048³ matmul: {peak / 1e9:.1f} GFLOP/s", flush=True)
    results = []
    for i, (label, preset, overrides, b, n, repeats) in enumerate(CASES[:1] if args.quick else CASES):
        spec, inputs, flops = case_setup(preset, overrides, b, n)
        torch.manual_seed(0)
        models = {impl: make(impl, spec, dict(spec.params)).eval() for impl in IMPLS}
        times = latencies(models, inputs, repeats)
        del models
        mem = {} if args.quick else {impl: peak_memory(impl, i) for impl in IMPLS}
        results.append({"label": label, "times": times, "mem": mem, "flops": flops})
        print(f"{label}: " + ", ".join(f"{k} {fmt_time(statistics.median(v))} / {fmt_mem(mem.get(k))}"
                                       for k, v in times.items()), flush=True)
    text = table(results, peak)
    print(text)
    print(f"total {time.time() - t_start:.0f} s")
    if args.write_doc:
        write_doc(report(text, peak, results, agree))


def verdict(results: list[dict]) -> list[str]:
    """One line per target, computed from the measurements (so the doc can't claim what wasn't seen)."""
    out = []
    for r in results:
        med = {k: statistics.median(v) for k, v in r["times"].items()}
        best = min((k for k in med if k != "graphformer"), key=med.get)
        x = ratio(r["times"], "graphformer", best)
        out.append(f"- {r['label']}: {x:.2f}× {best} (the fastest reference) — latency target ≤ 1.05 "
                   f"{'met' if x <= 1.05 else '**missed**'}")
    last = results[-1]["mem"]
    refs = {k: v for k, v in last.items() if k != "graphformer" and v is not None}
    if refs and last.get("graphformer") is not None:
        k = min(refs, key=refs.get)
        ok = last["graphformer"] <= refs[k]
        out.append(f"- memory at n=4096: {fmt_mem(last['graphformer'])} vs {fmt_mem(refs[k])} for {k} (the "
                   f"best reference) — target {'met' if ok else '**missed**'}")
    return out


def report(text: str, peak: float, results: list[dict], agree: float) -> str:
    lines = [
        "## torch backend: `graphformer build` vs hand-written BERT",
        "",
        f"Measured {datetime.date.today().isoformat()} on {machine()} by `python bench/bench_torch.py --write-doc`.",
        f"fp32 2048³ matmul on this machine: **{peak / 1e9:.0f} GFLOP/s** (the practical ceiling).",
        "",
        "All four compute the same BERT (bert-base.yaml: embeddings, post-norm GELU encoder with a padding",
        "mask, tanh pooler) in fp32 on CPU, eval mode, `torch.inference_mode`, with an all-ones padding mask.",
        "The n=4096 case uses `--set layers=2 max_len=4096` for every implementation to keep the run short.",
        f"Checked at the start of the run: given the same weights (HF's, loaded through the spec's `hf` weight",
        f"map and copied into the others), the four agree within {agree:.0e} on a padded batch.",
        "",
        text,
        "",
        "Targets:",
        "",
        *verdict(results),
        "",
        "- *latency*: median over rounds; each round times the four back to back in one process.",
        "  *× fastest reference*: the median over rounds of (this time ÷ the time of the fastest of",
        "  hf-bert-sdpa, torch.nn and naive in the same round) — paired, so load from other processes on this",
        "  shared machine cancels out (target: graphformer ≤ 1.05).",
        "- *GFLOP/s*: `graphformer summary` FLOPs of the forward (multiply-add = 2) ÷ latency.",
        "- *peak memory*: peak resident-memory increase during one forward after a warm-up, one fresh",
        "  subprocess per cell (VmHWM reset through `/proc/self/clear_refs`, glibc mmap threshold pinned so",
        "  freed tensors leave the resident set): live activations + workspace, not the weights.",
        "",
        "Where the time goes. At the tiny size every implementation is Python overhead: graphformer runs",
        "straight-line generated code (one line per node, parameter-free ops inlined, dropout gone in eval,",
        "the padding mask prepared once for all layers) where the references walk nested modules; HF adds",
        "its mask and config plumbing. At B=8, n=128 all four are matmul-bound (q, k, v, o and the",
        "feed-forward GEMMs are the same calls everywhere) and sit at the matmul rate, so the differences are",
        "noise-sized. At n=4096 attention dominates: graphformer and HF both use scaled_dot_product_attention",
        "(flash kernel on CPU, no n×n matrix; an all-kept padding mask is dropped so SDPA takes its fastest",
        "path); torch.nn's fused encoder kernel and the naive code materialise the [B, h, n, n] scores",
        "(torch.nn even without a padding mask: 0.84 GB, measured separately), hence ~3× the time and 13× the memory.",
        "The machine is shared with other sessions: absolute latencies move with their load (the matmul",
        "rate above was measured at the start of this run), the paired ratios much less.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
