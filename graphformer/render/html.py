"""The interactive viewer: one self-contained HTML page (inline JS, CSS and data; nothing fetched).

The layouts are Graphviz's own: each *view* is the diagram with some set of repeated calls expanded,
laid out by `dot -Tsvg` here, ahead of time. Expanding a block in the page swaps in the view where it is
expanded and keeps the block where it was on screen, so its repetitions appear in place. Views are
precomputed for every combination of expandable calls while there are at most MAX_VIEWS of them (else:
none expanded, each alone, all). An expanded view is laid out block by block (compose.py): one dot run
per distinct repetition, so expanding 80 layers costs about as much as expanding one.

The page's data is one JSON blob (views, every IR node's op, attributes, shapes, parameters, FLOPs and
source position, the summary), escaped so that no string in it can end the <script> element. The views
other than the first are gzipped (base64), a tenth of their size, and unpacked by the browser's
DecompressionStream when first shown.
"""
from __future__ import annotations

import base64
import gzip
import html
import itertools
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from ..base.dims import Dim, DimError
from ..ir import IRGraph, IRNode
from ..ops import REGISTRY
from . import compose
from .diagram import Diagram, build, shape_text

MAX_VIEWS = 16
MAX_BOXES = 3000   # llama2-70b expanded draws 807, Mixtral's 32 layers with every expert 1,700
ASSETS = resources.files(__package__) / "viewer"


def to_html(ir: IRGraph, dims: dict[str, int] | None = None, expand: bool = False, direction: str = "TB",
            subtitle: str = "", experts: bool = False) -> str:
    """The viewer page of `ir`. `dims` makes shapes concrete on the edges (as in `draw`); the side panel
    always shows both the symbolic shapes and the shapes at the spec's example sizes with `dims` applied.
    `expand` opens it with the repeated blocks expanded, `experts` with every mixture's experts.
    Raises graphviz.DotNotFound / DotFailed as `graphviz.render` does."""
    dims = dims or {}
    calls = expandable_calls(ir)
    initial = frozenset(c for c, v in calls.items() if (experts if v["experts"] else expand))
    views = _layouts(ir, [initial] + [s for s in view_sets(calls) if s != initial], dims, direction, subtitle)
    for view in views[1:]:   # only the first view is needed to open the page; the others unpack on demand
        view["svgz"] = base64.b64encode(gzip.compress(view.pop("svg").encode(), mtime=0)).decode()
    data = {
        "name": ir.name,
        "calls": calls,
        "initial": sorted(initial),
        "views": views,
        "nodes": node_data(ir, ir.resolve_dims(dims)),
        "outputs": ir.outputs,
        "summary": summary_data(ir, ir.resolve_dims(dims)),
    }
    return page(f"{ir.name} · graphformer", data)


def page(title: str, data: dict[str, Any]) -> str:
    fill = {"TITLE": html.escape(title), "CSS": _asset("viewer.css"), "JS": _asset("viewer.js"),
            "DATA": script_json(data)}
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fill[m.group(1)], _asset("page.html"))


def script_json(data: Any) -> str:
    """JSON safe inside <script type="application/json">: `<`, `>` and `&` become \\u escapes, so a doc
    string holding `</script>` or `<!--` cannot end or change the element; U+2028/9 are escaped too."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


# ---------------------------------------------------------------- views

def expandable_calls(ir: IRGraph) -> dict[str, dict[str, Any]]:
    """The repeated calls and mixtures of experts, by their id in the collapsed diagram:
    {"blocks": {"label": "layer × 12", "count": 12, "experts": false}}."""
    return {c.call: {"label": c.label, "count": c.repeat, "experts": c.parallel}
            for c in build(ir).clusters.values() if c.call and c.repeat}


def view_sets(calls: dict[str, Any]) -> list[frozenset[str]]:
    """Which sets of expanded calls get a layout: all combinations, or a few when there are too many."""
    names = sorted(calls)
    if 2 ** len(names) <= MAX_VIEWS:
        return [frozenset(c) for r in range(len(names) + 1) for c in itertools.combinations(names, r)]
    return [frozenset()] + [frozenset([n]) for n in names] + [frozenset(names)]


def _layouts(ir: IRGraph, sets: list[frozenset[str]], dims: dict[str, int], direction: str,
             subtitle: str) -> list[dict[str, Any]]:
    """One laid-out view per set, dot runs in parallel. A view of more than MAX_BOXES boxes (every expert
    of every layer of a large mixture) is left out, unless it is the one the page opens with."""
    diagrams = [(s, build(ir, expand=s, dims=dims, subtitle=subtitle)) for s in sets]
    diagrams = [v for i, v in enumerate(diagrams) if i == 0 or len(v[1].nodes) <= MAX_BOXES]
    with ThreadPoolExecutor(max_workers=4) as pool:
        svgs = list(pool.map(lambda d: compose.render_svg(d[1], direction), diagrams))
    return [_view(s, d, svg) for (s, d), svg in zip(diagrams, svgs)]


def _view(expanded: frozenset[str], d: Diagram, svg: str) -> dict[str, Any]:
    return {
        "expanded": sorted(expanded),
        "svg": _trim_svg(svg),
        "clusters": {c.id: c.call for c in d.clusters.values() if c.call},  # repeated clusters -> their call
        "drawnAs": {k: v for k, v in d.drawn_as.items() if k != v},
    }


def _trim_svg(svg: str) -> str:
    """dot's SVG without the XML prolog, doctype and comments (a third of its size on big graphs)."""
    svg = svg[svg.index("<svg"):]
    return re.sub(r"<!--.*?-->\n?", "", svg, flags=re.S)


# ---------------------------------------------------------------- node data

def node_data(ir: IRGraph, env: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Everything the side panel shows about each IR node, by path."""
    return {n.name: _node_entry(ir, n, env) for n in ir.nodes()}


def _node_entry(ir: IRGraph, n: IRNode, env: dict[str, int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "op": n.op,
        "shape": shape_text(n.shape, {}),
        "concrete": _concrete(n, env),
        "in": [[port, src] for port, src in n.inputs.items()],
        "at": str(n.span) if n.span else None,
    }
    op = REGISTRY.get(n.op)
    if n.attrs is not None:   # the attributes this node sets, then those left at their defaults
        values = n.attrs.model_dump(mode="json")
        fields = type(n.attrs).model_fields
        is_default = {k: k in fields and not fields[k].is_required() and getattr(n.attrs, k) == fields[k].default
                      for k in values}
        entry["attrs"] = {k: v for k, v in values.items() if not is_default[k]}
        entry["defaults"] = {k: v for k, v in values.items() if is_default[k]}
    if op is not None:
        entry["doc"] = op.doc.strip().split("\n")[0]
    if op is not None and n.shape is not None and all(ir.node(s).shape is not None for s in n.inputs.values()):
        ins = {p: ir.node(s).shape for p, s in n.inputs.items()}
        entry["params"] = sum(math.prod(s) for s in op.trained(n.attrs, ins).values())
        flops = op.flops(n.attrs, ins, n.shape)
        entry["flops"] = str(flops)
        entry["flopsAt"] = _evaluate(flops, env)
    return entry


def _memory(ir: IRGraph, env: dict[str, int]) -> dict[str, int]:
    """summary's memory figures (fp32, AdamW) at the shown dims; none when they can't be evaluated there."""
    from ..analysis.budget import budget
    try:
        m = budget(ir, env).memory
    except Exception:  # noqa: BLE001 - a panel row, never a reason for the page to fail
        return {}
    keys = ("weights", "kv_cache", "inference_peak", "activations", "training_peak")
    return {k: m[k] for k in keys if m.get(k)}


def _concrete(n: IRNode, env: dict[str, int]) -> str | None:
    try:
        return shape_text(n.shape, env) if n.shape is not None else None
    except DimError:
        return None


def _evaluate(d: Dim, env: dict[str, int]) -> int | None:
    try:
        d = d.subs(env)
    except DimError:  # beyond the exact-integer bound
        return None
    return d.value if d.is_const else None


def param_text(v: Any) -> str:
    """A param's value as the panel shows it: integers grouped (`50,257`), floats as written (`1e-6`,
    `10000.0`: Python's shortest round trip, the exponent without padding), strings and booleans as they are."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), repr(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(param_text(x) for x in v) + "]"
    return "none" if v is None else str(v)


def summary_data(ir: IRGraph, env: dict[str, int]) -> dict[str, Any]:
    from ..analysis.summary import rows
    table = rows(ir)
    flops = sum((r.flops for r in table), Dim.const(0))
    return {
        "doc": ir.doc.strip(),
        "file": ir.file,
        "params": {k: param_text(v) for k, v in ir.params.items()},
        "env": env,
        "paramCount": sum(r.params for r in table),
        "activeCount": sum(r.active for r in table),
        "memory": _memory(ir, env),
        "flops": str(flops),
        "flopsAt": _evaluate(flops, env),
        "nodeCount": len(table),
        "inputs": {k: shape_text(ir.node(v).shape, {}) for k, v in ir.inputs.items()},
        "outputs": {k: shape_text(ir.node(v).shape, {}) for k, v in ir.outputs.items()},
    }
