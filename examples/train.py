"""Train any causal spec with graphformer.parallelize under torchrun (FSDP2, optional tensor parallelism).

    torchrun --nproc_per_node=2 examples/train.py specs/llama.yaml --preset tiny --steps 20
    torchrun --nproc_per_node=4 examples/train.py specs/llama.yaml --preset tiny --tp 2 --ckpt /tmp/run

Data: random tokens, or `--data tokens.npy` (a 1-D array of token ids). Every `--save-every` steps the
model and optimizer are saved with torch.distributed.checkpoint under `--ckpt` (sharded: one file per
rank); a later run with the same `--ckpt` resumes from the last one, at any world size (DCP reshards). A
checkpoint is data: one whose files would run code when unpickled is refused (exit 2; docs/distributed.md).
`--export model.safetensors` writes the trained model as one file at the end (`--export-map hf`: under
the names of the spec's `hf` map, which `graphformer build --weights` and the reference read).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh

import graphformer
from graphformer.base.errors import WeightFileError
from graphformer.backends.torch.parallel import export_safetensors, load_checkpoint, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--preset")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8, help="global batch (sequences per step)")
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--data", help="a .npy file of token ids (default: random tokens)")
    ap.add_argument("--ckpt", help="checkpoint directory (resume from it if it holds one)")
    ap.add_argument("--save-every", type=int, default=10)
    ap.add_argument("--export", metavar="FILE", help="write the trained model as one .safetensors file")
    ap.add_argument("--export-map", metavar="NAME", help="name the exported tensors by this weight map (e.g. hf)")
    args = ap.parse_args()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)    # NCCL collectives (and DCP's) use the current device
    if args.tp > 1:
        mesh = init_device_mesh(device.type, (world // args.tp, args.tp), mesh_dim_names=("dp", "tp"))
        dp, dp_rank = mesh["dp"].size(), mesh["dp"].get_local_rank()
    else:
        mesh = init_device_mesh(device.type, (world,))
        dp, dp_rank = world, rank
    spec = graphformer.load(args.spec, preset=args.preset)
    model = graphformer.build(spec, device=device, seed=0)
    graphformer.parallelize(model, mesh, tp=args.tp)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    vocab = spec.params["vocab"]
    data = None
    if args.data:
        import numpy as np
        data = torch.from_numpy(np.load(args.data, allow_pickle=False)).long()   # token ids, never objects

    start = 0
    if args.ckpt and os.path.exists(os.path.join(args.ckpt, "step")):
        try:   # a checkpoint is data: load_checkpoint refuses one that would run code (docs/distributed.md)
            start = last_step(args.ckpt)
            load_checkpoint(os.path.join(args.ckpt, f"step-{start}"), model, opt)
        except WeightFileError as e:
            if rank == 0:
                print(f"train.py: error: {e}", file=sys.stderr)
            dist.destroy_process_group()
            sys.exit(2)
        if rank == 0:
            print(f"resumed from {args.ckpt} at step {start}")

    per_rank = args.batch // dp
    for step in range(start, args.steps):
        gen = torch.Generator().manual_seed(step)            # the same global batch on every rank
        if data is None:
            ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen)
        else:
            offs = torch.randint(0, len(data) - args.seq, (args.batch,), generator=gen)
            ids = torch.stack([data[o:o + args.seq] for o in offs.tolist()])
        ids = ids[dp_rank * per_rank:(dp_rank + 1) * per_rank].to(device)
        t = time.perf_counter()
        logits = model(tokens=ids)["logits"]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        dist.all_reduce(loss)
        if rank == 0:
            done = (step + 1) * 30 // args.steps
            print(f"[{'#' * done}{'.' * (30 - done)}] step {step + 1}/{args.steps} loss {loss.item() / world:.4f} "
                  f"({time.perf_counter() - t:.2f} s)", flush=True)
        if args.ckpt and ((step + 1) % args.save_every == 0 or step + 1 == args.steps):
            save_checkpoint(os.path.join(args.ckpt, f"step-{step + 1}"), model, opt)
            if rank == 0:
                with open(os.path.join(args.ckpt, "step"), "w") as fh:
                    fh.write(str(step + 1))
    if args.export:
        export_safetensors(model, args.export, mapping=args.export_map)
        if rank == 0:
            print(f"wrote {args.export}")
    dist.barrier()   # no rank tears the group down while another still writes or reduces through it
    dist.destroy_process_group()


def last_step(ckpt: str) -> int:
    """The step number in `ckpt`/step (what this script wrote there), or WeightFileError."""
    from graphformer.base.reading import FileProblem, FileTooBig, read_regular_file
    try:
        text = read_regular_file(os.path.join(ckpt, "step"), 32).decode("ascii").strip()
    except (FileProblem, FileTooBig, UnicodeDecodeError) as e:
        raise WeightFileError(f"cannot read `{ckpt}/step`: {e}") from None
    if not text.isdigit() or len(text) > 12:
        raise WeightFileError(f"`{ckpt}/step` holds {text[:32]!r}, not a step number")
    return int(text)


if __name__ == "__main__":
    main()
