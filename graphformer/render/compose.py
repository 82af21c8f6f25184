"""An expanded diagram laid out block by block: Graphviz per distinct block, the layouts composed.

dot's time grows much faster than the size of a graph (a long arrow is routed through one virtual node
per rank it crosses), so an 80-layer model expanded takes it minutes. Here each expanded repetition
(`blocks.3`) is laid out on its own, with its ids written relative to it (`@R@.attn`): repetitions that
draw alike have the same DOT text and share one layout, so the work grows with the distinct blocks,
not with the repetitions. The graph around a repetition sees a fixed-size box (a *slot*) whose ports sit
where the block's own entry and exit points are.

A layout is dot's own output format (`dot -Tdot`: the graph with every position as an attribute). A
block's laid-out statements go into the graph around it at its slot, their coordinates shifted there and
their ids filled in, and the whole is drawn as placed (`dot -Knop2`) to any format, svg, png or pdf, in
either direction: composing never depends on what the drawing is written as.

An input that feeds several repetitions of a call (a mask, positions, the encoder's output, a mixture's
input to each of its experts) enters each of them at a marked port named after it, and one arrow from
the source reaches the first of them only: the reader sees where it comes from once, and the page is not
wrapped in N long arrows.

Diagrams with nothing expanded go to dot whole.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import graphviz
from .diagram import Cluster, Diagram, Edge, Node

TOKEN, IDX, IDX1 = "@R@", "@K@", "@K1@"   # the repetition's id, index and index + 1 in a shared layout
SLOT = ":slot"                            # suffix of a slot's node id (the viewer skips these)


def is_repetition(c: Cluster) -> bool:
    """An expanded repetition of a repeated call (`blocks.3`), as opposed to a plain or collapsed block."""
    return c.call is not None and c.repeat is None


def render(d: Diagram, fmt: str = "svg", direction: str = "TB", dpi: int | None = None) -> bytes:
    """The diagram as svg/png/pdf bytes: composed block by block when repetitions are expanded, else dot's own."""
    if not any(is_repetition(c) for c in d.clusters.values()):
        return graphviz.render(graphviz.to_dot(d, direction), fmt, dpi)
    return graphviz.render(_Composer(d, direction).top(), fmt, dpi, engine="nop2")


def render_svg(d: Diagram, direction: str = "TB") -> str:
    return render(d, "svg", direction).decode()


@dataclass
class _Layout:
    """One laid-out block: dot's statements in its own coordinates ((0, 0) to (w, h), y up)."""
    text: str
    w: float
    h: float
    ins: list[float]            # where each in-port (i0, i1, ...) sits across the flow: x (TB) or y (LR)
    outs: list[float]           # where each out-port sits across the flow


@dataclass
class _Ports:
    """A repetition's ports: real source ids in the order of its layout's ports."""
    ins: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    shared: set[str] = field(default_factory=set)   # in-ports drawn as a marked port


class _Composer:
    def __init__(self, d: Diagram, direction: str = "TB"):
        self.d = d
        self.lr = direction == "LR"
        self.direction = direction
        self.into, self.outof = ("w", "e") if self.lr else ("n", "s")   # the sides a slot's ports sit on
        self.chains = {n.id: d.chain(n.cluster) for n in d.nodes}
        # each block's nodes and the edges that touch it, in the diagram's order: a scope reads only its own
        self.nodes_in: dict[str | None, list[Node]] = {None: d.nodes}
        self.edges_at: dict[str | None, list[Edge]] = {None: d.edges}
        for n in d.nodes:
            for c in self.chains[n.id]:
                self.nodes_in.setdefault(c, []).append(n)
        for e in d.edges:
            for c in dict.fromkeys(self.chains[e.src] + self.chains[e.dst]):
                self.edges_at.setdefault(c, []).append(e)
        self.order = {n.id: i for i, n in enumerate(d.nodes)}
        self.cache: dict[str, _Layout] = {}
        self.relative: dict[str, object] = {}
        self.ports: dict[str, _Ports] = {}
        self.dot_runs = 0
        # source -> the repetitions of each call it feeds from outside them: several make it "shared"
        self.feeds: dict[tuple[str, str], set[str]] = {}
        for e in d.edges:
            src_chain = set(self.chains[e.src])
            for c in self.chains[e.dst]:
                if c not in src_chain and is_repetition(d.clusters[c]):
                    self.feeds.setdefault((e.src, d.clusters[c].call), set()).add(c)

    # ------------------------------------------------------------ where things are

    def inside(self, nid: str, scope: str | None) -> bool:
        return scope is None or scope in self.chains[nid]

    def level(self, nid: str, scope: str | None) -> str:
        """What stands for node `nid` in the layout of `scope`: the node, or the slot of the repetition
        (directly under the scope, or under plain blocks drawn inline in it) that holds it."""
        chain = self.chains[nid]
        for c in chain[chain.index(scope) + 1 if scope is not None else 0:]:
            if is_repetition(self.d.clusters[c]):
                return c
        return nid

    def short(self, src: str, rep: str) -> str:
        """A marked port's label: the source's path from the block that holds both (`ln2`, not
        `blocks.3.ln2`), so that the repetitions of every layer share one layout."""
        outer = self.d.clusters[rep].parent
        while outer is not None and not src.startswith(outer + "."):
            outer = self.d.clusters[outer].parent
        if outer is None:
            return src
        rest = src[len(outer) + 1:]
        return re.sub(r"^\d+\.", "", rest) if self.d.clusters[outer].repeat else rest   # `blocks` × N: `blocks.0.ln2`

    def shared(self, src: str, rep: str) -> bool:
        return len(self.feeds.get((src, self.d.clusters[rep].call), ())) > 1

    def first_fed(self, src: str, rep: str, scope: str | None) -> bool:
        """Whether `rep` is the first repetition in `scope` that a shared `src` feeds (the one its arrow reaches)."""
        fed = [c for c in self.feeds[(src, self.d.clusters[rep].call)] if scope is None or c.startswith(scope + ".")]
        return rep == min(fed, key=lambda c: [int(p) if p.isdigit() else p for p in c.split(".")])

    # ------------------------------------------------------------ one scope

    def top(self) -> str:
        text, _ = self._scope(None)
        return text

    def _scope(self, scope: str | None) -> tuple[str, _Ports]:
        """The SVG of a scope (the whole diagram, or one repetition with `TOKEN` for its id)."""
        d, rel = self.d, self._relative(scope)
        sub = Diagram(d.name if scope is None else "", d.subtitle if scope is None else "")
        extra: dict[str, str] = {}
        ports = _Ports()
        slots: dict[str, str] = {}            # slot id (relative) -> instance svg
        in_index: dict[str, int] = {}

        # in-ports first (they head the node order), then nodes and slots in the diagram's order
        edges_in = [e for e in self.edges_at[scope] if self.inside(e.dst, scope) and not self.inside(e.src, scope)]
        if scope is not None:
            groups: dict[str, list[Edge]] = {}
            for e in edges_in:
                groups.setdefault(e.src, []).append(e)
            keyed = sorted(groups, key=lambda s: (self.shared(s, scope), self.shared(s, scope) and s,
                                                  sorted(rel(self.level(e.dst, scope)) for e in groups[s]),
                                                  groups[s][0].label))
            for k, s in enumerate(keyed):
                pid = f"{TOKEN}.<in{k}>"
                in_index[s] = k
                ports.ins.append(s)
                if self.shared(s, scope):
                    ports.shared.add(s)
                    extra[pid] = (f'shape=box, style="dashed,rounded", label={graphviz._q(self.short(s, scope))}, '
                                  f'fontsize=8, fontcolor="#555555", color="#8a8a8a", height=0.2, margin="0.04,0.01", '
                                  f'tooltip={graphviz._q(f"{self.short(s, scope)}: fed to every repetition")}')
                else:
                    extra[pid] = 'shape=point, width=0.05, color="#707070", tooltip=""'
                # a marked port sits on the block's rim, where the arrow of the first repetition meets it
                sub.nodes.append(Node(pid, "port", "", "", "", "other", "", None if self.shared(s, scope) else TOKEN))

        seen_slots: set[str] = set()

        def add_chain(cluster: str | None) -> None:   # the plain blocks between the scope and a node
            while cluster is not None and cluster != scope and rel(cluster) not in sub.clusters:
                c = d.clusters[cluster]
                sub.clusters[rel(c.id)] = Cluster(rel(c.id), c.label, c.name, rel(c.parent) if c.parent else None,
                                                  c.repeat, c.call)
                cluster = c.parent

        for n in self.nodes_in[scope]:
            if not self.inside(n.id, scope):
                continue
            at = self.level(n.id, scope)
            if at == n.id:
                sub.nodes.append(Node(rel(n.id), n.kind, n.title, n.detail, n.name, n.style, rel(n.tooltip),
                                      rel(n.cluster) if n.cluster else None, n.symbol))
                add_chain(n.cluster)
                continue
            if at in seen_slots:
                continue
            seen_slots.add(at)
            sid = rel(at) + SLOT
            slot_text, layout, inner = self._instance(at, rel(at))
            self.ports[at] = inner
            slots[sid] = slot_text
            extra[sid] = _slot_attrs(layout, self.lr)
            parent = d.clusters[at].parent
            sub.nodes.append(Node(sid, "slot", "", "", "", "other", "", rel(parent) if parent else None))
            add_chain(parent)
        if scope is not None:
            c = d.clusters[scope]
            index = scope.rsplit(".", 1)[1]
            sub.clusters[TOKEN] = Cluster(TOKEN, c.label.replace(f" {int(index) + 1}/", f" {IDX1}/"),
                                          c.name[: -len(index)] + IDX, None, None, c.call)

        # edges at this level: node or slot port to node or slot port
        out_index: dict[str, int] = {}
        seen: set[tuple[str, str, str, str]] = set()
        for e in self.edges_at[scope]:
            s_in, d_in = self.inside(e.src, scope), self.inside(e.dst, scope)
            if not (s_in or d_in) or (s_in and d_in and self.level(e.src, scope) == self.level(e.dst, scope)):
                continue                        # outside the scope, or inside one slot
            if s_in and not d_in:               # leaves the scope: through an out-port
                if e.src not in out_index:
                    out_index[e.src] = len(ports.outs)
                    ports.outs.append(e.src)
                pid = f"{TOKEN}.<out{out_index[e.src]}>"
                if pid not in extra:
                    extra[pid] = 'shape=point, width=0.05, color="#707070", tooltip=""'
                    sub.nodes.append(Node(pid, "port", "", "", "", "other", "", TOKEN))
                tail, tailport = self._tail(e.src, scope)
                self._edge(sub, seen, tail, tailport, pid, "", "", arrow=False)
                continue
            head, headport = self._head(e.src, e.dst, scope)
            at = self.level(e.dst, scope)
            if at != e.dst and e.src in self.ports[at].shared and not self.first_fed(e.src, at, scope):
                continue                        # a shared input reaches only the first repetition it feeds
            # an arrow goes on inside a slot, unless it ends at a marked port there
            arrow = not headport or e.src in self.ports[at].shared
            if not s_in:                        # enters the scope at an in-port
                shared = e.src in ports.shared
                self._edge(sub, seen, f"{TOKEN}.<in{in_index[e.src]}>", "", head, headport,
                           e.label if shared else "", arrow)
                continue
            tail, tailport = self._tail(e.src, scope)
            self._edge(sub, seen, tail, tailport, head, headport, e.label, arrow)
        sub.nodes.sort(key=lambda n: 0 if n.id.startswith(f"{TOKEN}.<in") else 2 if n.id.startswith(f"{TOKEN}.<out")
                       else 1)
        ranks = {}
        if scope is not None:
            ranks = {"min": [n.id for n in sub.nodes if n.id.startswith(f"{TOKEN}.<in")],
                     "max": [n.id for n in sub.nodes if n.id.startswith(f"{TOKEN}.<out")]}
        rows: dict[tuple, list[str]] = {}     # repetitions side by side (experts), in their order
        for at in seen_slots:
            c = d.clusters[at]
            if c.parallel:
                rows.setdefault((rel(c.parent) if c.parent else None, c.call), []).append(at)
        rows_ids: dict[str | None, list[list[str]]] = {}
        for (parent, _), reps in rows.items():
            rows_ids.setdefault(parent, []).append([rel(a) + SLOT for a in sorted(reps, key=_index)])
        dot_text = graphviz.to_dot(sub, self.direction, extra=extra, ranks=ranks, fragment=scope is not None,
                                   rows=rows_ids)
        return self._lay_out(dot_text, slots), ports

    def _relative(self, scope: str | None):
        if scope is None:
            return lambda s: s
        if scope not in self.relative:
            pattern = re.compile(r"(?<![\w.])" + re.escape(scope) + r"(?![\w])")
            self.relative[scope] = lambda s: pattern.sub(TOKEN, s) if scope in s else s
        return self.relative[scope]

    def _tail(self, src: str, scope: str | None) -> tuple[str, str]:
        at, rel = self.level(src, scope), self._relative(scope)
        if at == src:
            return rel(src), ""
        return rel(at) + SLOT, f"o{self.ports[at].outs.index(src)}:{self.outof}"

    def _head(self, src: str, dst: str, scope: str | None) -> tuple[str, str]:
        at, rel = self.level(dst, scope), self._relative(scope)
        if at == dst:
            return rel(dst), ""
        return rel(at) + SLOT, f"i{self.ports[at].ins.index(src)}:{self.into}"

    @staticmethod
    def _edge(sub: Diagram, seen: set, tail: str, tailport: str, head: str, headport: str, label: str,
              arrow: bool) -> None:
        key = (tail, tailport, head, headport)
        if key not in seen:
            seen.add(key)
            sub.edges.append(Edge(tail, head, label, tailport, headport, arrow))

    # ------------------------------------------------------------ layouts and instances

    def _instance(self, rep: str, name: str) -> tuple[str, _Layout, _Ports]:
        """The statements of one repetition, laid out once per distinct drawing, its ids filled in as
        `name` (its id relative to the scope it is drawn in)."""
        key, ports = self._scope(rep)
        layout = self.cache[key]
        index = rep.rsplit(".", 1)[1]
        text = layout.text.replace(TOKEN, name).replace(IDX1, str(int(index) + 1)).replace(IDX, index)
        return text, layout, ports

    def _lay_out(self, dot_text: str, slots: dict[str, str]) -> str:
        """dot on one scope, the slots' statements pasted in. A repetition's layout is cached by its DOT
        text (returned as the key); the whole diagram's laid-out DOT text is returned as it is."""
        key = dot_text + "".join(slots.values())   # the slots' drawings are pasted in after dot
        if key in self.cache:
            return key
        self.dot_runs += 1
        text = _paste(_unwrap(graphviz.render(dot_text, "dot").decode()), slots)
        if dot_text.startswith("digraph \"\""):      # a fragment: keep its statements and its ports' positions
            self.cache[key] = self._fragment(text)
            return key
        return text

    def _fragment(self, text: str) -> _Layout:
        """A block's laid-out statements, without the graph around them, and its ports. A point port sits
        inside the block's border: a stub joins it to the rim. An out-port is declared at the place of the
        nearest in-port (its stub bends along the far margin), so that a chain of repetitions stands in one
        column (one row, left to right) instead of drifting sideways at every step."""
        bb = re.search(rf'\bbb="0,0,({_NUM}),({_NUM})"', text)
        if bb is None:
            raise graphviz.DotFailed("`dot -Tdot` wrote a layout of an unexpected form (no bounding box)")
        w, h = float(bb.group(1)), float(bb.group(2))
        body = text[text.index("{") + 1: text.rindex("}")]
        while (m := re.match(r"\s*(?:graph|node|edge)\s*\[.*?\];\n", body, re.S)):   # the graph's defaults
            body = body[m.end():]
        across = 1 if self.lr else 0

        def ports(kind: str) -> list[tuple[float, bool]]:
            found = {}
            for m in re.finditer(rf'^\t*"{re.escape(TOKEN)}\.<{kind}(\d+)>"\t\[(.*?)\];$', body, re.M | re.S):
                xy = _xy(re.search(r'\bpos="([^"]+)"', m.group(2)).group(1))
                found[int(m.group(1))] = (xy, "shape=point" in m.group(2))
            return [found[k] for k in sorted(found)]
        ins, outs = ports("in"), ports("out")
        starts = [xy[across] for xy, point in ins if point]
        rims, routes = {}, {}
        for k, ((x, y), point) in enumerate(ins):
            if point:
                rims[k] = [(0.0, y)] if self.lr else [(x, h)]
        out_at = []
        for k, ((x, y), point) in enumerate(outs):
            at = (x, y)[across]
            to = min(starts, key=lambda s: abs(s - at)) if starts else at
            out_at.append(to)
            routes[k] = [(w - 3, y), (w - 3, to), (w, to)] if self.lr else [(x, 3.0), (to, 3.0), (to, 0.0)]
        body = _stubs(body, "in", rims)
        body = _stubs(body, "out", routes)
        return _Layout(body, w, h, [xy[across] for xy, _ in ins], out_at)


def _index(path: str) -> list:
    """A path as a sort key in which `blocks.10` follows `blocks.9`."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.split(".")]


def _slot_attrs(layout: _Layout, lr: bool) -> str:
    """A fixed-size, invisible box with a port cell at each of the block's port positions: along its top
    and bottom (TB), or down its left and right sides (LR)."""
    w, h = int(round(layout.w)), int(round(layout.h))
    span = h if lr else w

    def cells(places: list[float], prefix: str) -> str:
        """Cells along one side: gaps, and a 1-point cell per port at its place from the top or left."""
        out, at = [], 0
        size = (lambda n: f'WIDTH="1" HEIGHT="{n}"') if lr else (lambda n: f'WIDTH="{n}" HEIGHT="1"')
        wrap = (lambda cell: f"<TR>{cell}</TR>") if lr else (lambda cell: cell)
        for i, p in sorted(enumerate(h - p if lr else p for p in places), key=lambda t: t[1]):   # from top or left
            gap = int(round(p)) - at
            if gap >= 1:
                out.append(wrap(f'<TD FIXEDSIZE="TRUE" {size(gap)}></TD>'))
                at += gap
            out.append(wrap(f'<TD PORT="{prefix}{i}" FIXEDSIZE="TRUE" {size(1)}></TD>'))
            at += 1
        if span - at >= 1 or not out:
            out.append(wrap(f'<TD FIXEDSIZE="TRUE" {size(max(span - at, 1))}></TD>'))
        inner = "".join(out) if lr else f"<TR>{''.join(out)}</TR>"
        side = 'WIDTH="1" HEIGHT="%d"' % h if lr else 'WIDTH="%d" HEIGHT="1"' % w
        return (f'<TD FIXEDSIZE="TRUE" {side}><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">'
                f"{inner}</TABLE></TD>")
    ins, outs = cells(layout.ins, "i"), cells(layout.outs, "o")
    if lr:
        rows = f'<TR>{ins}<TD FIXEDSIZE="TRUE" WIDTH="{max(w - 2, 1)}" HEIGHT="{h}"></TD>{outs}</TR>'
    else:
        rows = f'<TR>{ins}</TR><TR><TD FIXEDSIZE="TRUE" WIDTH="{w}" HEIGHT="{max(h - 2, 1)}"></TD></TR><TR>{outs}</TR>'
    table = (f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0" BGCOLOR="transparent" '
             f'FIXEDSIZE="TRUE" WIDTH="{w}" HEIGHT="{h}">{rows}</TABLE>')
    return f'shape=plain, style=invis, label=<{table}>, tooltip=""'


_NUM = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
_COORDS = re.compile(r'(?<=[\s\[,])(pos|lp|bb)="([^"]*)"')


def _unwrap(text: str) -> str:
    """dot's output with its long strings joined again (it breaks them with a backslash-newline)."""
    return re.sub(r"(?<!\\)((?:\\\\)*)\\\n", r"\1", text)


def _xy(token: str) -> tuple[float, float]:
    x, y = token.rstrip("!").split(",")[:2]
    return float(x), float(y)


def _shift(text: str, dx: float, dy: float) -> str:
    """Every position, label position and bounding box in laid-out statements moved by (dx, dy)."""
    def one(m: re.Match) -> str:
        out = []
        for tok in m.group(2).split():
            head = tok[:2] if tok[:2] in ("e,", "s,") else ""
            nums = tok[len(head):].rstrip("!").split(",")
            out.append(head + ",".join(f"{float(v) + (dy if i % 2 else dx):.2f}" for i, v in enumerate(nums)))
        return f'{m.group(1)}="{" ".join(out)}"'
    return _COORDS.sub(one, text)


def _paste(text: str, slots: dict[str, str]) -> str:
    """Each block's statements after its slot's, moved to where the slot was placed (its lower-left corner)."""
    def one(m: re.Match) -> str:
        attrs = {k: v.strip('"') for k, v in re.findall(r'\b(pos|width|height)=("[^"]*"|[^,\]\s]+)', m.group(2))}
        x, y = _xy(attrs["pos"])
        done.add(m.group(1))
        return m.group(0) + _shift(slots[m.group(1)], x - float(attrs["width"]) * 36, y - float(attrs["height"]) * 36)
    done: set[str] = set()
    text = re.sub(r'^\t*"([^"\n]*' + re.escape(SLOT) + r')"\t\[(.*?)\];\n', one, text, flags=re.M | re.S)
    if done != set(slots):
        raise graphviz.DotFailed("`dot -Tdot` wrote a layout without the box of a composed block")
    return text


def _stubs(body: str, kind: str, routes: dict[int, list[tuple[float, float]]]) -> str:
    """Extend the arrows that start at point in-ports back to the block's rim (`routes[k]`: the rim
    point), and those that end at out-ports on to the rim (`routes[k]`: the way there)."""
    if not routes:
        return body
    name = re.escape(TOKEN) + rf"\.<{kind}(\d+)>"
    pattern = (rf'^(\t*"{name}"(?::\w+)*\s*->[^\[]*\[)(.*?)(\];)$' if kind == "in"
               else rf'^(\t*[^\n]*->\s*"{name}"(?::\w+)*\t\[)(.*?)(\];)$')

    def one(m: re.Match) -> str:
        way = routes.get(int(m.group(2)))
        if way is None:
            return m.group(0)

        def spline(p: re.Match) -> str:
            toks = p.group(1).split()
            pts = [f"{x:.2f},{y:.2f}" for x, y in way]
            if kind == "in":      # rim, then a straight segment to where the arrow began
                i = next(i for i, t in enumerate(toks) if t[:2] not in ("e,", "s,"))
                toks[i:i] = [pts[0], pts[0], toks[i]]
            else:                 # on from where it ended, one straight segment per bend
                for pt in pts:
                    toks += [toks[-1], pt, pt]
            return f'pos="{" ".join(toks)}"'
        return m.group(1) + re.sub(r'\bpos="([^"]+)"', spline, m.group(3), count=1) + m.group(4)
    return re.sub(pattern, one, body, flags=re.M | re.S)
