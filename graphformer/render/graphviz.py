"""Graphviz backend: DOT text from the diagram view model, and rendering through the `dot` binary.

The DOT text is written here (no Python dependency) and is deterministic, so docs/gallery/*.dot can be
checked for being current. Rendering pipes it through `dot -T<format>`; only that step needs the binary.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ..ir import IRGraph
from ..ops import REGISTRY
from .diagram import PALETTE, Cluster, Diagram, Node, build, node_style, printable

# Every backend has a lowering table keyed by op; for diagrams it is the style of each op (from its family).
LOWERINGS = {op: node_style(op) for op in REGISTRY}

FORMATS = ("svg", "png", "pdf")
INSTALL_HINT = ("Graphviz's `dot` was not found on PATH: install it with `apt-get install graphviz` "
                "or `brew install graphviz`")

FONT = "Helvetica,Arial,sans-serif"
CLUSTER_FILL = ("#f7f8fa", "#eef1f5")   # alternating by nesting depth
CLUSTER_BORDER = "#9aa5b4"


class DotNotFound(Exception):
    pass


class DotFailed(Exception):
    pass


def _q(s: str) -> str:
    """A quoted DOT id or string: one line, `\\` and `"` escaped (so `\\N`, `\\G` stay text)."""
    return '"' + printable(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(s: str) -> str:
    """Text escaped for a DOT HTML-like label."""
    return printable(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _node_line(n: Node) -> str:
    fill, border, text = PALETTE.get(n.style, PALETTE["other"])
    attrs = [f"fillcolor={_q(fill)}", f"color={_q(border)}", f"fontcolor={_q(text)}", f"tooltip={_q(n.tooltip)}"]
    if n.kind in ("input", "output"):
        attrs.append(f"label=<<b>{_h(n.title)}</b>>")
        attrs.append('style="filled,rounded,bold"')
    elif n.symbol:
        attrs += [f"label=<<b>{_h(n.symbol)}</b>>", "shape=circle", "width=0.3", "height=0.3", "fixedsize=true", "fontsize=13"]
    else:
        head = f"<b>{_h(n.title)}</b>" + (f" {_h(n.detail)}" if n.detail else "")
        sub = f'  <font point-size="8" color="#7a7a7a">{_h(n.name)}</font>' if n.name and n.name != n.title else ""
        attrs.append(f"label=<{head}{sub}>")
    return f"{_q(n.id)} [{', '.join(attrs)}]"


def _cluster_lines(d: Diagram, c: Cluster, depth: int, indent: str, extra: dict[str, str],
                   rows: dict[str | None, list[list[str]]]) -> list[str]:
    label = f"<b>{_h(c.label)}</b>" + (f'  <font point-size="9" color="#6b6b6b">{_h(c.name)}</font>' if c.name else "")
    # The title is a node of its own, beside the block's first node, rather than the cluster's label:
    # edges are routed around nodes, while a cluster label gets drawn over by edges entering the block.
    header = _q(f"{c.id}:title")
    first = _q(d.entries(c.id)[0])
    lines = [f"{indent}subgraph {_q('cluster_' + c.id)} {{",
             f'{indent}  label=""; tooltip={_q(c.id)}; style="rounded,filled"; '
             f"fillcolor={_q(CLUSTER_FILL[depth % 2])}; color={_q(CLUSTER_BORDER)}; "
             f"penwidth={1.6 if c.repeat else 0.8};",
             f"{indent}  {header} [shape=plaintext, style=\"\", label=<{label}>, height=0.2, margin=0, "
             f"tooltip={_q(c.id)}];",
             f"{indent}  {{ rank=same; {header}; {first}; }}",
             f"{indent}  {header} -> {first} [style=invis];"]
    lines += _items(d, c.id, depth + 1, indent + "  ", extra, rows)
    lines.append(f"{indent}}}")
    return lines


def _items(d: Diagram, cluster: str | None, depth: int, indent: str, extra: dict[str, str],
           rows: dict[str | None, list[list[str]]]) -> list[str]:
    lines = []
    for item in d.children(cluster):
        if isinstance(item, Cluster):
            lines += _cluster_lines(d, item, depth, indent, extra, rows)
        elif item.id in extra:
            lines.append(f"{indent}{_q(item.id)} [{extra[item.id]}];")
        else:
            lines.append(f"{indent}{_node_line(item)};")
    for row in rows.get(cluster, []):   # inside the cluster, so that dot writes the nodes back in it
        lines.append(f"{indent}{{ rank=same; " + " ".join(_q(i) + ";" for i in row) + " }")
        lines += [f"{indent}{_q(a)} -> {_q(b)} [style=invis];" for a, b in zip(row, row[1:])]
    return lines


def to_dot(d: Diagram, direction: str = "TB", extra: dict[str, str] | None = None,
           ranks: dict[str, list[str]] | None = None, fragment: bool = False,
           rows: dict[str | None, list[list[str]]] | None = None) -> str:
    """DOT text of a diagram. For render/compose.py: `extra` replaces the attributes of some nodes (ports,
    slots), `ranks` puts nodes on the first or last rank ("min"/"max"), each of `rows[cluster]` puts nodes of
    that cluster side by side in their order (a mixture's experts), and a `fragment` (one block laid out on its own) has no
    title and no margin."""
    extra = extra or {}
    rows = rows or {}
    title = f"<b>{_h(d.name)}</b>" + (f'<br/><font point-size="9">{_h(d.subtitle)}</font>' if d.subtitle else "")
    head = "pad=0" if fragment else f"labelloc=t, labeljust=c, label=<{title}>, tooltip={_q(d.name)}"
    lines = [
        f"digraph {_q(d.name)} {{",
        f"  graph [rankdir={direction}, newrank=true, fontname={_q(FONT)}, fontsize=11,",
        f"         nodesep=0.3, ranksep=0.16, {head}];",
        f"  node [fontname={_q(FONT)}, fontsize=10, shape=box, style=\"rounded,filled\", height=0.3,",
        '        margin="0.1,0.03", penwidth=0.9];',
        f"  edge [fontname={_q(FONT)}, fontsize=8, fontcolor=\"#555555\", color=\"#707070\", arrowsize=0.6,"
        " penwidth=0.9];",
    ]
    lines += _items(d, None, 0, "  ", extra, rows)
    for rank, ids in (ranks or {}).items():
        if ids:
            lines.append(f"  {{ rank={rank}; " + " ".join(_q(i) + ";" for i in ids) + " }")
    # Inputs on the first rank and outputs on the last: parallel streams (encoder and decoder, two
    # towers) then start side by side at the top instead of each input floating down to its consumer.
    # Inputs keep the spec's order from left to right (invisible edges within the rank); outputs are
    # left free, so that dot can uncross the edges into them.
    for rank, group in (("min", d.inputs), ("max", d.outputs)):
        if group:
            lines.append(f"  {{ rank={rank}; " + " ".join(_q(n.id) + ";" for n in group) + " }")
    for a, b in zip(d.inputs, d.inputs[1:]):
        lines.append(f"  {_q(a.id)} -> {_q(b.id)} [style=invis];")
    for e in d.edges:
        src = _q(e.src) + (f":{e.tailport}" if e.tailport else "")
        dst = _q(e.dst) + (f":{e.headport}" if e.headport else "")
        label = f"label={_q(' ' + e.label + ' ')}" if e.label else ""
        lines.append(f"  {src} -> {dst} [{', '.join(filter(None, [label, '' if e.arrow else 'arrowhead=none']))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_dot(ir: IRGraph, expand: bool = False, dims: dict[str, int] | None = None, direction: str = "TB",
             subtitle: str = "") -> str:
    return to_dot(build(ir, expand, dims, subtitle), direction)


def find_dot() -> str:
    path = shutil.which("dot")
    if path is None:
        raise DotNotFound(INSTALL_HINT)
    return path


DOT_TIMEOUT = 60.0  # seconds; GRAPHFORMER_DOT_TIMEOUT overrides


def dot_timeout() -> float:
    raw = os.environ.get("GRAPHFORMER_DOT_TIMEOUT")
    if raw is None:
        return DOT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise DotFailed(f"GRAPHFORMER_DOT_TIMEOUT must be a positive number of seconds, got `{raw}`")
    return value


def render(dot_text: str, fmt: str, dpi: int | None = None, engine: str | None = None) -> bytes:
    """Render DOT text to svg/png/pdf bytes with the `dot` binary (`dpi` scales PNGs). `fmt` "dot" is the
    laid-out graph as DOT text (positions as attributes); `engine` "nop2" draws such a graph as it is
    placed (render/compose.py), without laying it out again."""
    if fmt not in FORMATS + ("dot",):
        raise ValueError(f"unknown render format {fmt}")
    exe = find_dot()
    timeout = dot_timeout()
    try:
        extra = ([f"-Gdpi={dpi}"] if dpi else []) + ([f"-K{engine}"] if engine else [])
        proc = subprocess.run([exe, f"-T{fmt}", *extra], input=dot_text.encode(), capture_output=True, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired:  # run() has killed it
        raise DotFailed(f"`dot -T{fmt}` did not finish within {timeout:g} s (the layout of a very large "
                        "graph); draw without --expand, write DOT text (-o FILE.dot), or raise "
                        "GRAPHFORMER_DOT_TIMEOUT") from None
    except OSError as e:
        raise DotFailed(f"could not run `{exe}`: {e}") from None
    if proc.returncode != 0 or not proc.stdout:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        msg = "; ".join(lines[:3]) + (" …" if len(lines) > 3 else "") or f"exit status {proc.returncode}"
        raise DotFailed(f"`dot -T{fmt}` failed: {msg}")
    return proc.stdout
