"""`graphformer check SPEC...`: infer every shape and report every problem."""
from __future__ import annotations

import json
import sys

from ..base.diagnostics import SourceCache, escape_controls, render
from ..frontend.check import check_file
from ..base.errors import UsageError
from .common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, add_spec_args, parse_overrides
from .terminal import wants_color


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="check specs: infer every shape, report every error")
    add_spec_args(p, many=True)
    p.add_argument("--format", choices=["text", "json", "github"], default="text", help="diagnostics format")
    p.add_argument("--shapes", action="store_true", help="print the inferred shape of every node")


def run(args) -> int:
    overrides = parse_overrides(args.overrides)
    all_diags, failed, unreadable = [], False, False
    sources, color = SourceCache(), wants_color(sys.stderr)
    for path in args.specs:
        try:
            result = check_file(path, args.preset, overrides)
        except UsageError as e:  # say so and go on: one unreadable file must not lose the others' report
            sys.stderr.write(f"graphformer: error: {escape_controls(str(e))}\n")
            unreadable = True
            continue
        failed |= not result.ok
        all_diags += result.diagnostics
        if args.format == "text":
            sys.stderr.write(render(result.diagnostics, "text", sources, color))
            if args.shapes and result.ir is not None:
                sys.stdout.write(escape_controls(f"# {path}") + "\n" + "\n".join(
                    escape_controls(line) for line in result.ir.table().split("\n")))
            errors = sum(d.is_error for d in result.diagnostics)
            warnings = len(result.diagnostics) - errors
            status = "ok" if result.ok else f"{errors} error{'s' * (errors != 1)}"
            extra = f", {warnings} warning{'s' * (warnings != 1)}" if warnings else ""
            sys.stderr.write(escape_controls(f"{path}: {status}{extra}") + "\n")
        elif args.format == "github":
            sys.stdout.write(render(result.diagnostics, "github"))
    if args.format == "json":
        sys.stdout.write(json.dumps([d.to_json() for d in all_diags], indent=2) + "\n")
    return EXIT_USAGE if unreadable else EXIT_SPEC if failed else EXIT_OK
