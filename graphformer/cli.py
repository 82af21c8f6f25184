"""The `graphformer` command line: one subcommand per module in graphformer/commands/, plus `completion`.

Installed as the `graphformer` script; also `python -m graphformer`, and `python cli.py` in a checkout.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# subcommand -> module in graphformer/commands/
COMMANDS = {"check": "check", "summary": "summary", "build": "build", "draw": "draw", "export": "export",
            "generate": "generate", "compare": "compare",
            "schema": "schema", "list": "models", "explain": "explain", "view": "view", "import": "import_hf"}
SHELLS = ("bash", "zsh", "tcsh")

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors: keep that, but no usage dump spam
        self.print_usage(sys.stderr)
        sys.stderr.write(f"graphformer: error: {message}\n")
        sys.exit(EXIT_USAGE)


def make_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict]:
    """The parser, and the command modules it dispatches to by subcommand name. With `only` (a command
    named on the command line), just that command's module is imported: the others' parsers would only
    show in the top-level help, and importing them costs more than `check` takes to run."""
    parser = _Parser(prog="graphformer", description="Check, summarise, build, draw and export model-graph specs. "
                     "SPEC is a YAML file or the name of a bundled model (`graphformer list`).")
    parser.add_argument("--version", action="version", version=f"graphformer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = {}
    for command, module in COMMANDS.items():
        if only in COMMANDS and command != only:
            continue
        try:
            mod = importlib.import_module(f"graphformer.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"graphformer.commands.{module}":
                raise
            continue
        mod.add_parser(sub)
        modules[command] = mod
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, tcsh)",
                       description="Print a completion script for your shell; docs/ci.md shows where to put it.")
    p.add_argument("shell", choices=SHELLS)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, modules = make_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "completion":
        sys.stdout.write(completion_script(parser, args.shell))
        return EXIT_OK
    from .commands.common import run_guarded
    from .commands.progress import reporting
    with reporting(args):   # progress bars on a terminal, for the loops that can run long
        return run_guarded(modules[args.command].run, args)


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """shtab's script from the parser, plus what it can't see: SPEC completes files and bundled model
    names, `--preset` the presets of the spec already typed (bash asks `graphformer list --preset-names`;
    zsh and tcsh offer every bundled preset), `explain` the diagnostic codes."""
    import shtab  # only here: it takes longer to import than the checker takes to run

    from .base.codes import CODES
    from .frontend import bundled
    from .frontend.load import parse_file

    names = bundled.names()
    presets = sorted({p for n in names for p in parse_file(str(bundled.SPEC_DIR / f"{n}.yaml")).spec.presets})
    words = {"specs": " ".join(names), "presets": " ".join(presets), "codes": " ".join(sorted(CODES))}
    preamble = {
        "bash": f"""
_graphformer_specs() {{ compgen -f -- "$1"; compgen -W "{words['specs']}" -- "$1"; }}
_graphformer_codes() {{ compgen -W "{words['codes']}" -- "$1"; }}
_graphformer_presets() {{
  local w spec=""
  for w in "${{COMP_WORDS[@]:2}}"; do case "$w" in -*|"$1") ;; *) spec="$w"; break;; esac; done
  compgen -W "$(graphformer list --preset-names "$spec" 2>/dev/null)" -- "$1"
}}
""",
        "zsh": "",
    }
    complete = {
        "specs": {"bash": "_graphformer_specs", "zsh": f"_files \"|| compadd {words['specs']}\"",
                  "tcsh": "f"},
        "presets": {"bash": "_graphformer_presets", "zsh": f"({words['presets']})", "tcsh": f"({words['presets']})"},
        "codes": {"bash": "_graphformer_codes", "zsh": f"({words['codes']})", "tcsh": f"({words['codes']})"},
    }
    for action in _all_actions(parser):
        if action.metavar == "SPEC":
            action.complete = complete["specs"]
        elif action.metavar == "FILE":
            action.complete = shtab.FILE
        elif "--preset" in action.option_strings:
            action.complete = complete["presets"]
        elif action.metavar == "CODE":
            action.complete = complete["codes"]
    return shtab.complete(parser, shell, preamble=preamble)


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield action
        for sub in (action.choices or {}).values() if isinstance(action, argparse._SubParsersAction) else ():
            yield from _all_actions(sub)


if __name__ == "__main__":
    sys.exit(main())
