"""Peak memory of writing and loading weights, on checkpoints of a gigabyte and more.

Each case runs in a fresh child process, which reports its resident peak (VmHWM of /proc/self/status)
above a baseline taken in the same process: after the imports for `build -o` and `export` (so the figure
holds the model itself: the goal is <= 1.2x the model's bytes), and after the imports and the built
model for loading (the figure is what loading costs on top of the model: the goal is at most one
tensor, and <= 0.2x the model's bytes). The peak is reset (/proc/self/clear_refs) at the baseline.

Cases: `graphformer build SPEC --set ... -o model.safetensors` (init + write, float32 and bfloat16);
`load_weights` of a transformers save_pretrained directory through the `hf` map, in one file and in
shards (GPT-2: the fused, transposed q/k/v split; GPT-NeoX: the per-head interleaved q/k/v; Mixtral:
the hub's per-expert tensors, and transformers 5's fused experts unstacked); `graphformer build DIR`
(the whole command: build, load, forward) and `graphformer export DIR -o model.onnx` with weights.

    python bench/bench_memory.py                 # all cases (about 10 minutes here; ~6 GB of /tmp)
    python bench/bench_memory.py --cases gpt2    # those whose name contains gpt2
    python bench/bench_memory.py --write-doc     # and the table into docs/performance.md

The checkpoints are made by transformers from configs with random weights (nothing is downloaded) in
a temporary directory that is deleted afterwards. One child runs at a time: keep it so on a shared
machine. Timing here is not the point; the figures are bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN, END = "<!-- memory:begin -->", "<!-- memory:end -->"
AFTER = "<!-- onnx:end -->"   # where the section goes the first time
GB = 1e9

# (name, family, transformers config class, config) — each about 1.2 GB of float32 weights
MODELS = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", dict(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=20,
                                                     n_head=16)),
    "gpt-neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(vocab_size=50304, hidden_size=1024, num_hidden_layers=22,
                                                              num_attention_heads=16, intermediate_size=4096,
                                                              max_position_embeddings=2048)),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig", dict(vocab_size=32000, hidden_size=512, intermediate_size=1792,
                                                            num_hidden_layers=8, num_attention_heads=8,
                                                            num_key_value_heads=4, num_local_experts=8,
                                                            max_position_embeddings=1024)),
}

# (case, what it runs, model, checkpoint layout)
CASES = [
    ("build -o gpt2 (float32)", "build-o", "gpt2", "float32"),
    ("build -o gpt2 (bfloat16)", "build-o", "gpt2", "bfloat16"),
    ("load gpt2, one file", "load", "gpt2", "single"),
    ("load gpt2, shards", "load", "gpt2", "sharded"),
    ("load gpt-neox, one file", "load", "gpt-neox", "single"),
    ("load mixtral, per-expert (hub)", "load", "mixtral", "single"),
    ("load mixtral, fused experts", "load", "mixtral", "fused"),
    ("`build DIR` gpt2 (whole command)", "build-dir", "gpt2", "single"),
    ("`export DIR` gpt2 with weights", "export", "gpt2", "single"),
]


# ---------------------------------------------------------------- in the child

def _status() -> dict[str, int]:
    with open("/proc/self/status") as fh:
        return {k: int(v.split()[0]) * 1024 for k, v in (l.split(":", 1) for l in fh) if k in ("VmRSS", "VmHWM")}


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")   # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def child(case: dict) -> dict:
    import graphformer  # noqa: F401
    import graphformer.backends.torch  # noqa: F401
    import torch  # noqa: F401
    from graphformer.cli import main
    kind, ckpt = case["kind"], case["dir"]
    if kind in ("build-o", "build-dir", "export"):
        _reset_peak()
        base = _status()["VmRSS"]
        if kind == "build-o":
            argv = ["build", "gpt2", "--set", *case["set"], "--dtype", case["layout"], "-o", case["out"]]
        elif kind == "build-dir":
            argv = ["build", ckpt]
        else:
            argv = ["export", ckpt, "-o", case["out"]]
        t = time.process_time()
        rc = main(argv)
        assert rc == 0, rc
        return {"base": base, "peak": _status()["VmHWM"], "cpu": time.process_time() - t}
    from graphformer.backends.torch.weights import load_weights
    from graphformer.frontend.api import load
    from graphformer.frontend.hf import convert_config, read_config, spec_path
    from graphformer.weights.maps import read_state_dict
    imported = convert_config(read_config(ckpt))
    spec = load(str(spec_path(imported.family)), None, dict(imported.params))
    model = graphformer.build(spec, seed=0)
    _reset_peak()
    base = _status()["VmRSS"]
    t = time.process_time()
    state = read_state_dict(ckpt)
    load_weights(model, state, "hf", spec)
    largest = max(e.stop - e.start for e in state.entries.values()) if hasattr(state, "entries") else 0
    return {"base": base, "peak": _status()["VmHWM"], "cpu": time.process_time() - t, "largest": largest}


# ---------------------------------------------------------------- making checkpoints (in a child too)

def make(name: str, directory: str, layout: str) -> None:
    import torch
    import transformers
    cls, cfg_cls, cfg = MODELS[name]
    torch.manual_seed(0)
    model = getattr(transformers, cls)(getattr(transformers, cfg_cls)(**cfg))
    if layout == "fused":   # the module's own state dict: transformers 5 holds Mixtral's experts fused
        from safetensors.torch import save_file
        os.makedirs(directory, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(directory, "model.safetensors"))
        model.config.save_pretrained(directory)
        return
    model.save_pretrained(directory, max_shard_size="200MB" if layout == "sharded" else "100GB")


def _run(args: list[str], pythonpath: str) -> str:
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"child {args[:2]} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def model_bytes(directory: str) -> int:
    """The bytes of the tensors in a checkpoint directory's safetensors files."""
    total = 0
    for f in os.listdir(directory):
        if f.endswith(".safetensors"):
            with open(os.path.join(directory, f), "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            total += sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")
    return total


def run_all(selected, work: str, pythonpath: str) -> list[dict]:
    rows, made = [], {}
    for label, kind, name, layout in selected:
        out = os.path.join(work, "out")
        case = {"kind": kind, "dir": None, "layout": layout, "out": out}
        if kind == "build-o":
            cfg = MODELS[name][2]
            case["set"] = [f"vocab={cfg['vocab_size']}", f"max_len={cfg['n_positions']}", f"d_model={cfg['n_embd']}",
                           f"layers={cfg['n_layer']}", f"heads={cfg['n_head']}"]
            case["out"] = out + ".safetensors"
        else:
            key = (name, layout)
            if key not in made:
                for old in [k for k in made if k[0] != name]:   # one model's files on disk at a time
                    shutil.rmtree(made.pop(old), ignore_errors=True)
                made[key] = os.path.join(work, f"{name}-{layout}")
                _run(["--make", name, made[key], layout], pythonpath)
            case["dir"] = made[key]
            if kind == "export":
                case["out"] = out + ".onnx"
        result = json.loads(_run(["--child", json.dumps(case)], pythonpath).strip().splitlines()[-1])
        if kind == "build-o":
            size = os.path.getsize(case["out"])
        else:
            size = model_bytes(case["dir"])
        for f in os.listdir(work):
            if f.startswith("out"):
                os.remove(os.path.join(work, f))
        result.update(case=label, kind=kind, bytes=size, extra=result["peak"] - result["base"])
        rows.append(result)
        print(_line(result), flush=True)
    for d in made.values():
        shutil.rmtree(d, ignore_errors=True)
    return rows


def _line(r: dict) -> str:
    ratio = r["extra"] / r["bytes"]
    return f"| {r['case']} | {r['bytes'] / GB:.2f} GB | {r['extra'] / GB:.2f} GB | {ratio:.2f}× | {r['cpu']:.1f} s |"


HEADER = ("| case | model's bytes | peak above baseline | × model | CPU time |\n"
          "|---|---:|---:|---:|---:|")


def table(rows: list[dict], before: list[dict] | None) -> str:
    lines = [HEADER]
    if before:
        lines = ["| case | model's bytes | peak above baseline | × model | before this change | CPU time |",
                 "|---|---:|---:|---:|---:|---:|"]
        old = {r["case"]: r for r in before}
        for r in rows:
            b = old.get(r["case"])
            was = f"{b['extra'] / GB:.2f} GB ({b['extra'] / b['bytes']:.2f}×)" if b else "—"
            lines.append(f"| {r['case']} | {r['bytes'] / GB:.2f} GB | {r['extra'] / GB:.2f} GB | "
                         f"{r['extra'] / r['bytes']:.2f}× | {was} | {r['cpu']:.1f} s |")
    else:
        lines += [_line(r) for r in rows]
    return "\n".join(lines)


SECTION = """## Memory: writing and loading weights

Goals (issues 30 and 26): `build -o` and checkpoint loading peak at ≤ 1.2× the model's bytes, and a
checkpoint of N bytes loads with at most one tensor of memory above the built model, on a ≥ 1 GB
checkpoint. How: the init casts each tensor to `--dtype` as soon as it is drawn (float32 is never held
whole); the writer streams tensor by tensor; a safetensors checkpoint is read by its header alone and
each tensor is mapped from the file when the weight map takes it (`weights/checkpoint.py`
`MappedTensors`), converted, copied into its parameter and unmapped before the next (the map is first
run on meta tensors, so every name and shape problem is found before a parameter changes).

Each row is a fresh child process's resident peak (VmHWM) above its baseline: after the imports for
`build -o`, `build DIR` and `export` (the figure includes the model), after the imports and the built
model for the `load` rows (the figure is what loading adds). Checkpoints made by transformers from
configs with random weights, float32: GPT-2 (1024 wide, 20 layers), GPT-NeoX (1024 wide, 22 layers),
Mixtral (512 wide, 8 layers, 8 experts). `before` is the same child on the code before this change.

{table}

{notes}
Reproduce: `python bench/bench_memory.py --write-doc` (add `--before DIR` with an older checkout's root).
"""


def section(rows: list[dict], before: list[dict] | None, notes: str = "") -> str:
    return SECTION.format(table=table(rows, before), notes=notes)


def write_doc(text: str) -> None:
    with open(DOC, encoding="utf-8") as fh:
        doc = fh.read()
    block = BEGIN + "\n" + text.rstrip("\n") + "\n" + END
    if BEGIN in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    elif AFTER in doc:
        at = doc.index(AFTER) + len(AFTER)
        doc = doc[:at] + "\n\n" + block + doc[at:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(DOC, "w", encoding="utf-8") as fh:
        fh.write(doc)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--make":
        make(*sys.argv[2:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="", help="only the cases whose name contains this text")
    ap.add_argument("--before", metavar="DIR", help="also run the cases on another checkout (e.g. the commit "
                                                    "before this change), for a 'before' column")
    ap.add_argument("--dir", default=None, help="where to put the checkpoints (default: a temporary directory)")
    ap.add_argument("--write-doc", action="store_true", help="write the table into docs/performance.md")
    args = ap.parse_args()
    selected = [c for c in CASES if args.cases in c[0]]
    work = tempfile.mkdtemp(prefix="bench-memory-", dir=args.dir)
    try:
        print(HEADER)
        before = run_all(selected, work, args.before) if args.before else None
        rows = run_all(selected, work, ROOT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    notes = (f"Measured {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load average {load:.1f} "
             f"(peak bytes do not depend on the load; CPU times do).\n")
    print(table(rows, before))
    if args.write_doc:
        write_doc(section(rows, before, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
