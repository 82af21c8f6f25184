"""GPU run: the CUDA path that no CPU machine exercises, timed against transformers side by side, one table.

- GPU-marked tests (`pytest -m gpu`).
- Llama ~1.1B (d_model 2048, 16 layers, 32 heads, 8 kv heads, d_ff 5632, vocab 32000), bf16: one forward
  at B=4, n=512 and one training step (forward, backward, AdamW), graphformer vs transformers
  LlamaForCausalLM (sdpa) with the same weights; median of paired rounds.
- Generation, batch 1, prompt 32, 128 new tokens, greedy: `graphformer.generate(compile=True)` vs
  transformers' static cache with `torch.compile` (the goal is ≥ 1.5× tokens/s), both checked to produce
  the same tokens.
- `graphformer.parallelize` on one GPU with NCCL (a one-process world): forward and backward run.

Runs in well under 8 minutes on one H100; on a machine without CUDA it says so and exits 0 at once (tests
check that). Run: bash bench/gpu.sh  (writes the table to stdout and to $OUT/gpu-table.md if OUT is set).
"""
from __future__ import annotations

import datetime
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LLAMA_1B = dict(vocab=32000, d_model=2048, layers=16, heads=32, kv_heads=8, d_ff=5632, max_len=2048)
ROUNDS = 5
NEW, PROMPT = 128, 32


def no_cuda() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return None if torch.cuda.is_available() else "no CUDA device"


def pair():
    import torch
    import transformers as T

    import graphformer as gf
    c = LLAMA_1B
    torch.manual_seed(0)
    ref = T.LlamaForCausalLM(T.LlamaConfig(
        vocab_size=c["vocab"], hidden_size=c["d_model"], num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"], intermediate_size=c["d_ff"],
        max_position_embeddings=c["max_len"], rms_norm_eps=1e-5, attn_implementation="sdpa"))
    spec = gf.load(os.path.join(ROOT, "specs", "llama.yaml"), overrides=dict(c))
    ours = gf.build(spec, device="cuda", dtype=torch.bfloat16)
    gf.load_weights(ours, ref.state_dict(), "hf")
    ref = ref.to("cuda", torch.bfloat16)
    return spec, ours, ref


def timed(fn, rounds=ROUNDS) -> float:
    import torch
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def forward_and_train(spec, ours, ref) -> list[tuple[str, float, float]]:
    import torch
    ids = torch.randint(0, LLAMA_1B["vocab"], (4, 512), device="cuda")
    rows = []
    with torch.inference_mode():
        a = timed(lambda: ours(tokens=ids))
        b = timed(lambda: ref(input_ids=ids))
    rows.append(("forward bf16, B=4 n=512 (ms)", a * 1e3, b * 1e3))
    opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-5, foreach=True)
    opt_b = torch.optim.AdamW(ref.parameters(), lr=1e-5, foreach=True)

    def step(model, opt, call):
        out = call()
        logits = out["logits"] if isinstance(out, dict) else out.logits
        logits.float().logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    ids2 = ids[:2, :256]
    a = timed(lambda: step(ours, opt_a, lambda: ours(tokens=ids2)), 3)
    b = timed(lambda: step(ref, opt_b, lambda: ref(input_ids=ids2)), 3)
    rows.append(("training step bf16 AdamW, B=2 n=256 (ms)", a * 1e3, b * 1e3))
    del opt_a, opt_b
    torch.cuda.empty_cache()
    return rows


def generation(spec, ours, ref) -> tuple[list[tuple[str, float, float]], bool]:
    import torch

    import graphformer as gf
    ids = torch.randint(0, LLAMA_1B["vocab"], (1, PROMPT), device="cuda")
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    ref.generation_config.cache_implementation = "static"
    ref.forward = torch.compile(ref.forward, mode="reduce-overhead", fullgraph=True)
    with torch.inference_mode():
        want = ref.generate(ids, max_new_tokens=NEW, do_sample=False)
        got = gf.generate(ours, ids, NEW, compile=True)
        a = timed(lambda: gf.generate(ours, ids, NEW, compile=True), 3)
        b = timed(lambda: ref.generate(ids, max_new_tokens=NEW, do_sample=False), 3)
    same = bool(torch.equal(got, want))
    return [("generate B=1, 128 new, compiled (tokens/s)", NEW / a, NEW / b)], same


def parallel_one_gpu() -> str:
    """`parallelize` with NCCL in a one-process world (torchrun), forward and backward."""
    code = ("import os, torch, torch.distributed as dist, graphformer as gf\n"
            "from torch.distributed.device_mesh import init_device_mesh\n"
            "dist.init_process_group('nccl'); torch.cuda.set_device(0)\n"
            "mesh = init_device_mesh('cuda', (1,))\n"
            f"spec = gf.load(os.path.join({ROOT!r}, 'specs', 'llama.yaml'), preset='tiny')\n"
            "m = gf.parallelize(gf.build(spec, device='cuda'), mesh, fsdp=True)\n"
            "ids = torch.randint(0, spec.params['vocab'], (2, 16), device='cuda')\n"
            "out = m(tokens=ids); out = out['logits'] if isinstance(out, dict) else out\n"
            "out.float().mean().backward(); torch.cuda.synchronize(); print('parallel ok')\n"
            "dist.destroy_process_group()\n")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--no-python",
                        sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return "ok" if "parallel ok" in r.stdout else f"FAILED: {(r.stderr or r.stdout)[-400:]}"


def gpu_tests() -> str:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                        os.path.join(ROOT, "tests")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    return (r.stdout.strip().splitlines() or ["(no output)"])[-1]


def main() -> int:
    why = no_cuda()
    if why:
        print(f"bench/gpu.py: {why}: nothing to run (this script is for a machine with a CUDA GPU)")
        return 0
    import torch
    import transformers as T
    t0 = time.perf_counter()
    lines = [f"GPU run on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, transformers "
             f"{T.__version__}, {datetime.date.today()} (bench/gpu.sh)", "",
             f"- GPU-marked tests: {gpu_tests()}"]
    spec, ours, ref = pair()
    rows = forward_and_train(spec, ours, ref)
    gen, same = generation(spec, ours, ref)
    rows += gen
    del ours, ref
    torch.cuda.empty_cache()
    lines.append(f"- parallelize on one GPU with NCCL: {parallel_one_gpu()}")
    lines.append(f"- generated tokens equal transformers': {'yes' if same else 'NO'}")
    lines += ["", "| Llama ~1.1B | graphformer | transformers | ratio |", "|---|---|---|---|"]
    for name, a, b in rows:
        ratio = b / a if "ms" in name else a / b   # > 1: graphformer faster
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {ratio:.2f}× |")
    lines.append(f"\n(ratio > 1: graphformer faster; whole run {time.perf_counter() - t0:.0f} s)")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu-table.md"), "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
