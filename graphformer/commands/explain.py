"""`graphformer explain GF120`: a diagnostic code's page — what it means, an example, the fix."""
from __future__ import annotations

import sys

from ..base.codes import CODES, lookup
from ..base.diagnostics import did_you_mean
from .common import EXIT_OK, CommandError


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="explain a diagnostic code, with an example and the fix",
                       description="Print a diagnostic code's page (as docs/errors.md has it); without a "
                                   "code, list every code.")
    p.add_argument("code", nargs="?", metavar="CODE", help="a code such as GF120 (gf120 and 120 work too)")


def run(args) -> int:
    if args.code is None:
        sys.stdout.write("".join(f"{c}  {e.title}\n" for c, e in sorted(CODES.items())))
        return EXIT_OK
    entry = lookup(args.code)
    if entry is None:
        hint = did_you_mean(args.code.upper(), CODES)
        raise CommandError(f"no diagnostic code `{args.code}`" + (f" (did you mean `{hint}`?)" if hint else "")
                           + "; `graphformer explain` lists them all")
    from .explain_page import page  # runs the checker on the example: loaded only when needed
    sys.stdout.write(page(entry.code))
    return EXIT_OK
