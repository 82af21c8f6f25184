"""`graphformer schema`: print the JSON Schema of the spec format (for editors and CI tools)."""
from __future__ import annotations

import sys

from ..frontend.schema import render_schema
from .common import EXIT_OK, atomic_output


def add_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of the spec format (for editor completion)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the schema to FILE instead of stdout")


def run(args) -> int:
    text = render_schema()
    if args.output:
        with atomic_output(args.output) as fh:  # an editor reading it never sees half a file
            fh.write(text.encode())
    else:
        sys.stdout.write(text)
    return EXIT_OK
