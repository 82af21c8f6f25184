"""`graphformer list`: the bundled models and their presets, with their parameter counts (checked, not built:
no torch); `list --ops`: every op and where it comes from (builtin or an installed plugin)."""
from __future__ import annotations

import argparse
import json
import sys

from ..frontend import bundled
from ..frontend.check import check_file
from ..frontend.load import parse_file
from ..analysis.summary import total_params
from .common import EXIT_OK, EXIT_SPEC


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list the bundled models, their presets and parameter counts",
                       description="List the models that ship with graphformer and their presets. Any command "
                                   "takes one by name (`graphformer summary gpt2 --preset tiny`) when no file "
                                   "of that name exists.")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--presets", action="store_true",
                   help="one row per preset too, with its parameter count (checks every preset)")
    p.add_argument("--ops", action="store_true",
                   help="list the ops instead: each with its family and where it comes from (builtin, or the "
                        "installed plugin package and version)")
    p.add_argument("--preset-names", metavar="SPEC", help=argparse.SUPPRESS)  # for shell completion


def run(args) -> int:
    if args.preset_names is not None:
        return _preset_names(args.preset_names)
    if args.ops:
        return _ops(args.format)
    models, failed = [], []
    for name in bundled.names():
        path = str(bundled.SPEC_DIR / f"{name}.yaml")
        result = check_file(path)
        if not result.ok:  # a broken bundled spec is a bug of ours; say which one rather than hide it
            failed.append(name)
            continue
        presets = list(parse_file(path).spec.presets)
        entry = {"name": name, "params": total_params(result.ir), "about": _headline(result.ir.doc),
                 "presets": presets}
        if args.presets:
            entry["preset_params"] = {}
            for preset in presets:
                checked = check_file(path, preset)
                if not checked.ok:
                    failed.append(f"{name} --preset {preset}")
                    continue
                entry["preset_params"][preset] = total_params(checked.ir)
        models.append(entry)
    if args.format == "json":
        sys.stdout.write(json.dumps(models, indent=2) + "\n")
    else:
        sys.stdout.write(_table(models))
    for name in failed:
        sys.stderr.write(f"graphformer: error: bundled model `{name}` has errors: run `graphformer check {name}`\n")
    return EXIT_SPEC if failed else EXIT_OK


def _ops(fmt: str) -> int:
    """Every op in the registry, built-in and plugin, with where it comes from; skipped plugins on stderr."""
    from ..ops import REGISTRY, plugins
    from ..ops.base import UNKNOWN
    rows = [{"op": name, "family": op.family, "from": plugins.origin(name),
             "unknown_traits": [t for t in ("sequence", "tp") if getattr(op, t) == UNKNOWN]}
            for name, op in sorted(REGISTRY.items())]
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        width = max(len(r["op"]) for r in rows)
        fam = max(len(r["family"]) for r in rows)
        for r in rows:
            unknown = f"  (traits not declared: {', '.join(r['unknown_traits'])})" if r["unknown_traits"] else ""
            sys.stdout.write(f"{r['op']:<{width}}  {r['family']:<{fam}}  {r['from']}{unknown}\n")
    for problem in plugins.problems():
        sys.stderr.write(f"graphformer: warning[GF257]: {problem}\n")
    return EXIT_OK


def _preset_names(spec: str) -> int:
    """The presets of SPEC (a file or a bundled name), one per line: what shell completion offers after
    `--preset`. Quiet on any problem: completion must never print an error into the command line."""
    try:
        sys.stdout.writelines(f"{p}\n" for p in parse_file(bundled.resolve(spec)).spec.presets)
    except Exception:  # noqa: BLE001 — a half-typed command line is not an error to report
        pass
    return EXIT_OK


def _table(models: list[dict]) -> str:
    width = max((len(m["name"]) for m in models), default=0)
    lines = []
    for m in models:
        if "preset_params" in m:
            lines.append(f"{m['name']:<{width}}  {m['params']:>16,}  {m['about']}")
            lines += [f"{'':<{width}}  {n:>16,}  --preset {p}" for p, n in m["preset_params"].items()]
        else:
            presets = f"  [presets: {', '.join(m['presets'])}]" if m["presets"] else ""
            lines.append(f"{m['name']:<{width}}  {m['params']:>16,}  {m['about']}{presets}")
    return "".join(line + "\n" for line in lines)


def _headline(doc: str) -> str:
    """The doc's opening phrase: up to its first colon or full stop outside brackets ("GPT-2 small (Radford
    et al.)")."""
    text, depth = " ".join(doc.split()), 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch in ":." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i]
    return text
