"""Mermaid backend: a `flowchart` from the diagram view model, for Markdown that GitHub renders inline.

Mermaid ids cannot hold dots, and a few words (`end`, `graph`, ...) break its parser, so ids are the IR
paths with every other character replaced by `_` (`blocks_0_attn`), prefixed where needed and suffixed
where two paths would collide.
"""
from __future__ import annotations

import json
import re

from ..ir import IRGraph
from .diagram import PALETTE, Cluster, Diagram, Node, build, printable

_RESERVED = {"end", "graph", "subgraph", "flowchart", "style", "classdef", "class", "click", "linkstyle",
             "direction", "default", "call", "href"}


def _text(s: str) -> str:
    """Text for inside a double-quoted mermaid label: one line (a line break would end the statement and
    start another, `click ... javascript:` included), entity codes for the characters it would misread
    (a quote ends the label, a backquote starts a markdown string)."""
    s = printable(s).replace("#", "#35;")  # first: the entity codes below start with `#`
    return (s.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
            .replace("`", "#96;"))


_PLAIN_TITLE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .,=()/+-]*")


def _title(s: str) -> str:
    """The front matter's title: YAML, so anything but plain words is a double-quoted (JSON) string."""
    s = printable(s)
    return s if _PLAIN_TITLE.fullmatch(s) and not s.endswith(" ") else json.dumps(s)


class _Ids:
    """IR path -> unique mermaid-safe id, stable for a given diagram."""

    def __init__(self):
        self.ids: dict[str, str] = {}
        self.used: set[str] = set()

    def __call__(self, path: str, prefix: str = "") -> str:
        key = prefix + path
        if key not in self.ids:
            base = prefix + re.sub(r"[^A-Za-z0-9_]", "_", path)
            if base.lower() in _RESERVED or not base[:1].isalpha():
                base = "n_" + base
            ident, i = base, 2
            while ident in self.used:
                ident, i = f"{base}_{i}", i + 1
            self.used.add(ident)
            self.ids[key] = ident
        return self.ids[key]


def _node_line(n: Node, ids: _Ids) -> str:
    ident = ids(n.id)
    if n.kind in ("input", "output"):
        shape = f'(["{_text(n.title)}"])'
    elif n.symbol:
        shape = f'(("{_text(n.symbol)}"))'
    else:
        label = f"<b>{_text(n.title)}</b>" + (f" {_text(n.detail)}" if n.detail else "")
        if n.name and n.name != n.title:
            label += f"<br/><small>{_text(n.name)}</small>"
        shape = f'("{label}")'
    return f"{ident}{shape}:::{n.style}"


def _cluster_lines(d: Diagram, c: Cluster, ids: _Ids, direction: str, indent: str) -> list[str]:
    title = c.label + (f" · {c.name}" if c.name else "")
    lines = [f'{indent}subgraph {ids(c.id, "cluster_")}["{_text(title)}"]', f"{indent}  direction {direction}"]
    lines += _items(d, c.id, ids, direction, indent + "  ")
    lines.append(f"{indent}end")
    return lines


def _items(d: Diagram, cluster: str | None, ids: _Ids, direction: str, indent: str) -> list[str]:
    lines = []
    for item in d.children(cluster):
        if isinstance(item, Cluster):
            lines += _cluster_lines(d, item, ids, direction, indent)
        else:
            lines.append(f"{indent}{_node_line(item, ids)}")
    return lines


def to_mermaid(d: Diagram, direction: str = "TB") -> str:
    ids = _Ids()
    head = f"{d.name}" + (f" ({d.subtitle})" if d.subtitle else "")
    lines = ["---", f"title: {_title(head)}", "---", f"flowchart {direction}"]
    for key, (fill, border, text) in PALETTE.items():
        weight = ",font-weight:bold" if key in ("input", "output") else ""
        lines.append(f"  classDef {key} fill:{fill},stroke:{border},color:{text}{weight}")
    lines += _items(d, None, ids, direction, "  ")
    for e in d.edges:
        lines.append(f'  {ids(e.src)} -->|"{_text(e.label)}"| {ids(e.dst)}')
    return "\n".join(lines) + "\n"


def draw_mermaid(ir: IRGraph, expand: bool = False, dims: dict[str, int] | None = None, direction: str = "TB",
                 subtitle: str = "") -> str:
    return to_mermaid(build(ir, expand, dims, subtitle), direction)
