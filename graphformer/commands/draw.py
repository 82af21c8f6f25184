"""`graphformer draw SPEC`: a diagram of the model (Graphviz DOT/SVG/PNG/PDF, Mermaid, or the interactive
HTML viewer), from the IR.

No `-o`: DOT (or Mermaid) text on stdout. With `-o`, the format follows the extension unless
`--format` says otherwise. Only svg/png/pdf/html need Graphviz's `dot` binary; DOT and Mermaid text never do.
"""
from __future__ import annotations

import os
import sys

from ..render import compose, graphviz
from ..render import html as html_viewer
from ..render.diagram import build
from ..render.mermaid import to_mermaid
from .common import CommandError, add_spec_args, atomic_output, dims_arg, load_checked

TEXT_FORMATS = ("dot", "mermaid")
FORMATS = ("svg", "png", "pdf", "html") + TEXT_FORMATS
EXTENSIONS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot",
              ".mmd": "mermaid", ".mermaid": "mermaid", ".html": "html", ".htm": "html"}


def add_parser(sub) -> None:
    p = sub.add_parser("draw", help="draw the model as a diagram (Graphviz or Mermaid)",
                       description="Draw a spec as a diagram: ops as boxes, shapes on the edges, blocks as "
                                   "clusters, repeated blocks drawn once with × N.")
    add_spec_args(p, dims=True)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write here; the format follows the extension (.svg .png .pdf .html .dot/.gv .mmd/.mermaid)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from -o's extension, else dot)")
    p.add_argument("--expand", action="store_true", help="draw every repetition instead of one block × N")
    p.add_argument("--expand-experts", action="store_true",
                   help="draw every expert of a mixture of experts instead of one expert × E")
    p.add_argument("--direction", choices=["TB", "LR"], default="TB", help="top to bottom (default) or left to right")


def output_format(output: str | None, fmt: str | None) -> str:
    """The format to write; raises CommandError(2) for an unknown extension or a binary format to stdout."""
    if fmt is None and output is not None:
        ext = os.path.splitext(output)[1].lower()
        fmt = EXTENSIONS.get(ext)
        if fmt is None:
            known = " ".join(EXTENSIONS)
            raise CommandError(f"cannot tell the format of `{output}` from its extension "
                               f"(known: {known}); pass --format")
    fmt = fmt or "dot"
    if output is None and fmt in ("png", "pdf"):
        raise CommandError(f"--format {fmt} is binary: write it to a file with -o FILE.{fmt}")
    return fmt


def run(args) -> int:
    fmt = output_format(args.output, args.format)
    result = load_checked(args.spec, args)
    ir = result.ir
    dims = dims_arg(args, ir)
    if fmt == "html":
        data = _guard_dot(html_viewer.to_html, ir, dims, args.expand, args.direction, _subtitle(args, dims),
                          args.expand_experts).encode()
        return _write(args.output, data, fmt)
    diagram = build(ir, expand=args.expand, dims=dims, subtitle=_subtitle(args, dims), experts=args.expand_experts)
    if fmt == "mermaid":
        data = to_mermaid(diagram, args.direction).encode()
    elif fmt == "dot":
        data = graphviz.to_dot(diagram, args.direction).encode()
    else:   # svg, png, pdf: composed block by block when expanded (render/compose.py)
        data = _guard_dot(compose.render, diagram, fmt, args.direction)
    return _write(args.output, data, fmt)


def _write(output: str | None, data: bytes, fmt: str) -> int:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    with atomic_output(output) as fh:
        fh.write(data)
    sys.stderr.write(f"wrote {output} ({fmt}, {_size(len(data))})\n")  # as build and export do
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _subtitle(args, dims: dict[str, int]) -> str:
    parts = []
    if args.preset:
        parts.append(f"preset {args.preset}")
    parts += list(args.overrides or [])
    parts += [f"{k}={v}" for k, v in dims.items()]
    return ", ".join(parts)


def _guard_dot(fn, *args):
    """Call a renderer that runs `dot`; a missing or failing binary is an environment error (exit 2)."""
    try:
        return fn(*args)
    except (graphviz.DotNotFound, graphviz.DotFailed) as e:
        raise CommandError(str(e)) from None
