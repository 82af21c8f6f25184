"""The `graphformer` command line: one subcommand per module in graphformer/commands/."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["check", "summary", "build", "draw", "view", "export", "schema"]

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors: keep that, but no usage dump spam
        self.print_usage(sys.stderr)
        sys.stderr.write(f"graphformer: error: {message}\n")
        sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="graphformer", description="Check, summarise, build, draw and export model-graph specs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = {}
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"graphformer.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"graphformer.commands.{name}":
                raise
            continue
        mod.add_parser(sub)
        modules[name] = mod
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from graphformer.commands.common import run_guarded
    return run_guarded(modules[args.command].run, args)


if __name__ == "__main__":
    sys.exit(main())
