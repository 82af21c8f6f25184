"""`graphformer import hf PATH [-o spec.yaml]`: a transformers config (or save_pretrained directory) → a spec.

The spec is the family's bundled spec with its params set from the config (graphformer/frontend/hf.py holds the
field tables); with a directory, the weights then load with `build --weights DIR --weights-map hf`.
"""
from __future__ import annotations

import os
import shlex
import sys

from ..base.diagnostics import escape_controls
from ..base.fileio import atomic_output
from .common import EXIT_OK, CommandError


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="turn another framework's model description into a spec",
                       description="Import a model description as a spec. Exit 0 ok, 1 the config uses something "
                                   "the spec can't express (the field is named), 2 usage or environment "
                                   "(unreadable file, unknown model_type).")
    kinds = p.add_subparsers(dest="source", metavar="SOURCE", required=True, parser_class=type(p))
    hf = kinds.add_parser("hf", help="a transformers config.json or save_pretrained directory",
                          description="Write the bundled spec of the config's family (docs/huggingface.md) with "
                                      "its params set from the config. Fields that change the architecture in a "
                                      "way the spec can't express are errors, never approximations.")
    hf.add_argument("path", metavar="PATH", help="config.json, or a directory holding one (and the weights)")
    hf.add_argument("-o", "--output", metavar="SPEC.yaml", help="write the spec here (default: stdout)")


MAX_WARNINGS = 20   # unread fields listed one by one; a config with thousands gets a count for the rest


def run(args) -> int:
    from ..frontend.hf import HFImportError, convert_config, read_config, spec_text
    try:
        imported = convert_config(read_config(args.path))
        text = spec_text(imported, os.path.basename(os.path.abspath(args.path)))
    except HFImportError as e:
        raise CommandError(f"import hf {args.path}: {e}", e.code) from None
    for name in imported.unread[:MAX_WARNINGS]:   # the config's own key: shown escaped
        sys.stderr.write(f"graphformer: warning: config field `{escape_controls(name)}` is not read (graphformer "
                         f"does not know it; check that it keeps its default)\n")
    if len(imported.unread) > MAX_WARNINGS:
        sys.stderr.write(f"graphformer: warning: ... and {len(imported.unread) - MAX_WARNINGS} more config fields "
                         f"are not read\n")
    for name, param in imported.defaulted:   # absent fields with a transformers default took it: no warning
        sys.stderr.write(f"graphformer: warning: the config has no `{name}`, and transformers has no default for "
                         f"it: param `{param}` keeps the spec's default\n")
    if not args.output:
        sys.stdout.write(text)
        return EXIT_OK
    with atomic_output(args.output) as fh:
        fh.write(text.encode("utf-8"))
    weights = " --weights " + shlex.quote(args.path) + " --weights-map hf" if os.path.isdir(args.path) else ""
    params = ", ".join(f"{k}={v}" for k, v in imported.params.items())
    for line in (f"wrote {args.output} ({imported.family.model_type}: {params})",
                 f"next: graphformer build {shlex.quote(args.output)}{weights}"):
        sys.stderr.write(escape_controls(line) + "\n")
    return EXIT_OK
