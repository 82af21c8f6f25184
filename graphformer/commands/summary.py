"""`graphformer summary SPEC`: parameters and FLOPs per node and in total, without building anything."""
from __future__ import annotations

import json
import sys

from ..dims import Dim, DimError
from ..summary import rows
from .common import EXIT_OK, EXIT_SPEC, CommandError, add_spec_args, dims_arg, load_checked


def add_parser(sub) -> None:
    p = sub.add_parser("summary", help="parameter count and FLOPs per node and in total")
    add_spec_args(p, dims=True)
    p.add_argument("--format", choices=["text", "json"], default="text")


def run(args) -> int:
    result = load_checked(args.spec, args, args.format)
    ir = result.ir
    dims = dims_arg(args, ir)
    try:  # counts are exact integers bounded by 10^18; absurd sizes overflow that bound
        table = rows(ir)
        total_p = sum(r.params for r in table)
        total_f = sum((r.flops for r in table), Dim.const(0))
        total_f.subs(dims)
    except DimError as e:
        raise CommandError(f"cannot count FLOPs of {args.spec} at these sizes: {e}", EXIT_SPEC) from None

    def fl(d: Dim):
        d = d.subs(dims)
        return d.value if d.is_const else str(d)

    if args.format == "json":
        doc = {"name": ir.name, "params": total_p, "active_params": sum(r.active for r in table),
               "flops": fl(total_f), "dims": dims,
               "nodes": [{"node": r.node, "op": r.op, "shape": r.shape, "params": r.params, "flops": fl(r.flops)}
                         for r in table]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return EXIT_OK
    w = max([len(r.node) for r in table] + [4])
    wo = max([len(r.op) for r in table] + [2])
    out = [f"{'node':<{w}}  {'op':<{wo}}  {'params':>14}  flops", "-" * (w + wo + 30)]
    for r in table:
        f = fl(r.flops)
        out.append(f"{r.node:<{w}}  {r.op:<{wo}}  {r.params:>14,}  {f:,}" if isinstance(f, int)
                   else f"{r.node:<{w}}  {r.op:<{wo}}  {r.params:>14,}  {f}")
    f = fl(total_f)
    out.append("-" * (w + wo + 30))
    out.append(f"{'total':<{w}}  {'':<{wo}}  {total_p:>14,}  {f:,}" if isinstance(f, int)
               else f"{'total':<{w}}  {'':<{wo}}  {total_p:>14,}  {f}")
    active = sum(r.active for r in table)
    if active != total_p:
        out.append(f"{'active':<{w}}  {'':<{wo}}  {active:>14,}  (parameters one token uses: mixture of experts)")
    sys.stdout.write("\n".join(out) + "\n")
    return EXIT_OK
