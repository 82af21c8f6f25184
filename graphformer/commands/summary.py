"""`graphformer summary SPEC`: parameters, FLOPs and memory per node, per block and in total, without
building anything (see docs/summary.md for the figures and which are exact)."""
from __future__ import annotations

import json
import re
import sys

from ..analysis.budget import OPTIMIZERS, budget, per_device
from ..base.dims import Dim, DimError
from ..base.diagnostics import escape_controls
from ..analysis.summary import Row, counted_rows, rolled_up, rows
from .common import EXIT_OK, EXIT_SPEC, CommandError, add_spec_args, dims_arg, load_checked

from ..base.dtypes import dtype_arg
# the text view rolls repetitions up to this depth (a layer's nodes once, `× 96`); --all shows every node
DEFAULT_DEPTH = 2


def add_parser(sub) -> None:
    p = sub.add_parser("summary", help="parameters, FLOPs and memory per node, per block and in total")
    add_spec_args(p, dims=True)
    p.add_argument("--format", choices=["text", "json"], default="text")
    rows_ = p.add_mutually_exclusive_group()
    rows_.add_argument("--depth", type=int, metavar="N",
                       help="roll rows up to N levels of block nesting; repetitions become one row with × N "
                            "(1: top-level nodes and block calls; the text view's default is 2)")
    rows_.add_argument("--all", action="store_true",
                       help="one row for every node (the default of --format json)")
    p.add_argument("--dtype", type=dtype_arg, default="float32", help="dtype of weights and activations")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="optimizer whose state is counted")
    p.add_argument("--mesh", metavar="dp=N,tp=M",
                   help="per-device bytes on a mesh under graphformer.parallelize: FSDP over dp, the derived "
                        "tensor-parallel plan over tp (e.g. dp=8,tp=4)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="fp32 master weights and gradients beside --dtype weights (bf16 mixed precision)")


def run(args) -> int:
    result = load_checked(args.spec, args, args.format)
    ir = result.ir
    dims = dims_arg(args, ir)
    if args.depth is not None and args.depth < 1:
        raise CommandError("--depth must be at least 1", 2)
    depth = args.depth or (None if args.all or args.format == "json" else DEFAULT_DEPTH)
    try:  # counts are exact integers bounded by 10^18; absurd sizes overflow that bound
        table = counted_rows(ir) if depth else rows(ir)   # rolled up: once per distinct instantiation
        total_f = _total_flops(table)
        total_f.subs(dims)
        plan = budget(ir, ir.resolve_dims(dims), args.dtype, args.optimizer, args.mixed_precision)
        mesh = per_device(ir, plan.dims, args.dtype, args.optimizer, args.mixed_precision,
                          **_mesh(args.mesh)) if args.mesh else None
    except DimError as e:
        raise CommandError(f"cannot count FLOPs of {args.spec} at these sizes: {e}", EXIT_SPEC) from None

    def fl(d: Dim):
        d = d.subs(dims)
        return d.value if d.is_const else str(d)

    shown = rollup(table, depth) if depth else [(r.node, r.op, r.shape, r.params, r.flops, 1) for r in table]
    if args.format == "json":
        doc = {"name": ir.name, **plan.as_json(), "flops_symbolic": fl(total_f), "dims": plan.dims,
               "flops_convention": "multiply-add = 2", **({"per_device": mesh} if mesh else {}),
               "nodes": [{"node": n, "op": op, "shape": sh, "params": p, "flops": fl(f), "count": c}
                         for n, op, sh, p, f, c in shown]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return EXIT_OK
    text = render(shown, fl, plan, table) + (render_mesh(mesh) if mesh else "")
    sys.stdout.write("\n".join(escape_controls(line) for line in text.split("\n")))
    return EXIT_OK


def _mesh(text: str) -> dict[str, int]:
    """`dp=8,tp=4` (or `fsdp=8`) → {"dp": 8, "tp": 4}; anything else is a usage error."""
    out = {"dp": 1, "tp": 1}
    for part in text.replace(" ", "").split(","):
        key, _, value = part.partition("=")
        key = "dp" if key == "fsdp" else key
        if key not in out or not value.isdigit() or int(value) < 1:
            raise CommandError(f"--mesh expects dp=N,tp=M with positive integers, got `{text}`", 2)
        out[key] = int(value)
    return out


def render_mesh(m: dict) -> str:
    styles: dict[str, list[str]] = {}
    for sh in m["plan"]:
        styles.setdefault(sh["style"], []).append(sh["module"])
    lines = [f"per device on dp={m['dp']} × tp={m['tp']} (FSDP2 over dp, the derived tensor-parallel plan over tp)",
             f"  parameters      {m['params']:,}",
             f"  weights         {_gib(m['weights'])}",
             f"  gradients       {_gib(m['grads'])}",
             f"  optimizer       {_gib(m['optimizer'])}",
             f"  activations     {_gib(m['activations'])} (per-device batch; tensor-parallel savings not counted)"]
    for style, mods in styles.items():
        shown = ", ".join(mods[:6]) + (f", … ({len(mods)} in all)" if len(mods) > 6 else "")
        lines.append(f"  {style:<14}  {shown}")
    return "\n".join(lines) + "\n"


def rollup(table: list[Row], depth: int) -> list[tuple]:
    """Rows grouped by the first `depth` parts of their path (`analysis.summary.rolled_up`)."""
    return rolled_up(table, depth)


def _total_flops(table: list[Row]) -> Dim:
    return sum((r.flops * r.count if r.count != 1 else r.flops for r in table), Dim.const(0))


def _gib(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n} B"


def render(shown, fl, plan, table) -> str:
    def num(v):
        return f"{v:,}" if isinstance(v, int) else str(v)
    names = [n + (f" × {c}" if c > 1 else "") for n, _, _, _, _, c in shown]
    w = max([len(n) for n in names] + [5])
    wo = max([len(s[1]) for s in shown] + [2])
    ws = max([len(s[2]) for s in shown] + [5])
    head = f"{'node':<{w}}  {'op':<{wo}}  {'shape':<{ws}}  {'params':>15}  flops"
    out = [head, "-" * (len(head) + 16)]
    for name, (n, op, sh, p, f, c) in zip(names, shown):
        out.append(f"{name:<{w}}  {op:<{wo}}  {sh:<{ws}}  {p:>15,}  {num(fl(f))}")
    out.append("-" * (len(head) + 16))
    total_f = fl(_total_flops(table))
    out.append(f"{'total':<{w}}  {'':<{wo}}  {'':<{ws}}  {plan.params:>15,}  {num(total_f)}")
    m = plan.memory
    per = "token" if plan.tokens_what == "tokens" else "example"
    dims = ", ".join(f"{k}={v}" for k, v in plan.dims.items())
    out += [
        "",
        f"at {dims}, {plan.dtype}" + (" with fp32 master weights" if plan.mixed_precision else "")
        + f", {plan.optimizer}; FLOPs count a multiply-add as 2",
        f"  parameters      {plan.params:,} ({plan.embedding_params:,} embedding, "
        f"{plan.params - plan.embedding_params:,} other)"
        + (f"; {plan.active_params:,} active per token" if plan.active_params != plan.params else ""),
        f"  forward         {plan.flops:,} FLOPs ({plan.flops_per_token:,.0f} per {per}, {plan.tokens:,} {plan.tokens_what})",
        f"  training step   {plan.train_flops:,} FLOPs (forward + backward, per op)",
        f"  weights         {_gib(m['weights'])}",
        f"  gradients       {_gib(m['grads'])}",
        f"  optimizer       {_gib(m['optimizer'])}",
        f"  activations     {_gib(m['activations'])} saved for backward "
        f"({_gib(m['activations_checkpointed'])} with activation checkpointing per repeated block)",
        f"  training peak   {_gib(m['training_peak'])} (estimate: weights + gradients + optimizer + activations)",
    ]
    if m["kv_cache_per_token"]:
        out.append(f"  KV cache        {_gib(m['kv_cache_per_token'])} per token per sequence; {_gib(m['kv_cache'])} here")
    if m["recurrent_state_per_sequence"]:
        out.append(f"  recurrent state {_gib(m['recurrent_state_per_sequence'])} per sequence, whatever its length; "
                   f"{_gib(m['recurrent_state'])} here")
    out.append(f"  inference peak  {_gib(m['inference_peak'])} (estimate: weights + KV cache + recurrent state + the "
               "largest activation twice)")
    return "\n".join(re.sub(r"\s+$", "", line) for line in out) + "\n"
