"""`graphformer list`: the bundled models, with their parameter counts (checked, not built: no torch)."""
from __future__ import annotations

import json
import sys

from ..frontend import bundled
from ..frontend.check import check_file
from ..analysis.summary import total_params
from .common import EXIT_OK, EXIT_SPEC


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list the bundled models and their parameter counts",
                       description="List the models that ship with graphformer. Any command takes one by "
                                   "name (`graphformer summary gpt2`) when no file of that name exists.")
    p.add_argument("--format", choices=["text", "json"], default="text")


def run(args) -> int:
    models, failed = [], []
    for name in bundled.names():
        result = check_file(str(bundled.SPEC_DIR / f"{name}.yaml"))
        if not result.ok:  # a broken bundled spec is a bug of ours; say which one rather than hide it
            failed.append(name)
            continue
        models.append({"name": name, "params": total_params(result.ir), "about": _headline(result.ir.doc)})
    if args.format == "json":
        sys.stdout.write(json.dumps(models, indent=2) + "\n")
    else:
        width = max(len(m["name"]) for m in models) if models else 0
        sys.stdout.writelines(f"{m['name']:<{width}}  {m['params']:>14,}  {m['about']}\n" for m in models)
    for name in failed:
        sys.stderr.write(f"graphformer: error: bundled model `{name}` has errors: run `graphformer check {name}`\n")
    return EXIT_SPEC if failed else EXIT_OK


def _headline(doc: str) -> str:
    """The doc's opening phrase: up to its first colon or full stop outside brackets ("GPT-2 small (Radford
    et al.)")."""
    text, depth = " ".join(doc.split()), 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch in ":." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i]
    return text
