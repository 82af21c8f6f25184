"""An expanded diagram laid out block by block: Graphviz per distinct block, the SVGs composed.

dot's time grows much faster than the size of a graph (a long arrow is routed through one virtual node
per rank it crosses), so an 80-layer model expanded takes it minutes. Here each expanded repetition
(`blocks.3`) is laid out on its own, with its ids written relative to it (`@R@.attn`): repetitions that
draw alike have the same DOT text and share one layout, so the work grows with the distinct blocks,
not with the repetitions. The graph around a repetition sees a fixed-size box (a *slot*) whose ports sit
where the block's own entry and exit points are; the block's SVG is pasted into the slot, ids filled in.

An input that feeds several repetitions of a call (a mask, positions, the encoder's output) enters
each of them at a marked port named after it, and one arrow from the source reaches the first of them
only: the reader sees where it comes from once, and the page is not wrapped in N long arrows.

Only top-to-bottom layouts are composed; others (and diagrams with nothing expanded) go to dot whole.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import graphviz
from .diagram import Cluster, Diagram, Edge, Node

TOKEN, IDX, IDX1 = "@R@", "@K@", "@K1@"   # the repetition's id, index and index + 1 in a shared layout


def is_repetition(c: Cluster) -> bool:
    """An expanded repetition of a repeated call (`blocks.3`), as opposed to a plain or collapsed block."""
    return c.call is not None and c.repeat is None


def render_svg(d: Diagram, direction: str = "TB") -> str:
    """The diagram as SVG text: composed block by block when repetitions are expanded, else dot's own."""
    if direction != "TB" or not any(is_repetition(c) for c in d.clusters.values()):
        return graphviz.render(graphviz.to_dot(d, direction), "svg").decode()
    return _Composer(d).top()


@dataclass
class _Layout:
    """One laid-out block: SVG content in dot's coordinates (x in [0, w], y in [-h, 0])."""
    svg: str
    w: float
    h: float
    ins: list[float]            # x of each in-port (i0, i1, ...)
    outs: list[float]           # x of each out-port


@dataclass
class _Ports:
    """A repetition's ports: real source ids in the order of its layout's ports."""
    ins: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    shared: set[str] = field(default_factory=set)   # in-ports drawn as a marked port


class _Composer:
    def __init__(self, d: Diagram):
        self.d = d
        self.chains = {n.id: d.chain(n.cluster) for n in d.nodes}
        self.order = {n.id: i for i, n in enumerate(d.nodes)}
        self.cache: dict[str, _Layout] = {}
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
        edges_in = [e for e in d.edges if self.inside(e.dst, scope) and not self.inside(e.src, scope)]
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
                    extra[pid] = (f'id="gfin_{k}", shape=box, style="dashed,rounded", label={graphviz._q(s)}, '
                                  f'fontsize=8, fontcolor="#555555", color="#8a8a8a", height=0.2, margin="0.04,0.01", '
                                  f'tooltip={graphviz._q(f"{s}: fed to every repetition")}')
                else:
                    extra[pid] = f'id="gfin_{k}", shape=point, width=0.05, color="#707070", tooltip=""'
                # a marked port sits on the block's rim, where the arrow of the first repetition meets it
                sub.nodes.append(Node(pid, "port", "", "", "", "other", "", None if self.shared(s, scope) else TOKEN))

        seen_slots: set[str] = set()

        def add_chain(cluster: str | None) -> None:   # the plain blocks between the scope and a node
            while cluster is not None and cluster != scope and rel(cluster) not in sub.clusters:
                c = d.clusters[cluster]
                sub.clusters[rel(c.id)] = Cluster(rel(c.id), c.label, c.name, rel(c.parent) if c.parent else None,
                                                  c.repeat, c.call)
                cluster = c.parent

        for n in d.nodes:
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
            sid = rel(at)
            slot_svg, layout, inner = self._instance(at, sid)
            self.ports[at] = inner
            slots[sid] = slot_svg
            extra[sid] = _slot_attrs(layout, len(slots))
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
        for e in d.edges:
            s_in, d_in = self.inside(e.src, scope), self.inside(e.dst, scope)
            if not (s_in or d_in) or (s_in and d_in and self.level(e.src, scope) == self.level(e.dst, scope)):
                continue                        # outside the scope, or inside one slot
            if s_in and not d_in:               # leaves the scope: through an out-port
                if e.src not in out_index:
                    out_index[e.src] = len(ports.outs)
                    ports.outs.append(e.src)
                pid = f"{TOKEN}.<out{out_index[e.src]}>"
                if pid not in extra:
                    extra[pid] = f'id="gfout_{out_index[e.src]}", shape=point, width=0.05, color="#707070", tooltip=""'
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
        dot_text = graphviz.to_dot(sub, "TB", extra=extra, ranks=ranks, fragment=scope is not None)
        return self._lay_out(dot_text, slots), ports

    def _relative(self, scope: str | None):
        if scope is None:
            return lambda s: s
        pattern = re.compile(r"(?<![\w.])" + re.escape(scope) + r"(?![\w])")
        return lambda s: pattern.sub(TOKEN, s)

    def _tail(self, src: str, scope: str | None) -> tuple[str, str]:
        at, rel = self.level(src, scope), self._relative(scope)
        if at == src:
            return rel(src), ""
        return rel(at), f"o{self.ports[at].outs.index(src)}:s"

    def _head(self, src: str, dst: str, scope: str | None) -> tuple[str, str]:
        at, rel = self.level(dst, scope), self._relative(scope)
        if at == dst:
            return rel(dst), ""
        return rel(at), f"i{self.ports[at].ins.index(src)}:n"

    @staticmethod
    def _edge(sub: Diagram, seen: set, tail: str, tailport: str, head: str, headport: str, label: str,
              arrow: bool) -> None:
        key = (tail, tailport, head, headport)
        if key not in seen:
            seen.add(key)
            sub.edges.append(Edge(tail, head, label, tailport, headport, arrow))

    # ------------------------------------------------------------ layouts and instances

    def _instance(self, rep: str, name: str) -> tuple[str, _Layout, _Ports]:
        """The SVG of one repetition, laid out once per distinct drawing, its ids filled in as `name`
        (its id relative to the scope it is drawn in)."""
        key, ports = self._scope(rep)
        layout = self.cache[key]
        index = rep.rsplit(".", 1)[1]
        text = layout.svg.replace(TOKEN, name).replace(IDX1, str(int(index) + 1)).replace(IDX, index)
        return text, layout, ports

    def _lay_out(self, dot_text: str, slots: dict[str, str]) -> str:
        """dot on one scope, the slots' SVGs pasted in. A repetition's layout is cached by its DOT text
        (returned as the key); the whole diagram's SVG is returned as text."""
        key = dot_text + "".join(slots.values())   # the slots' drawings are pasted in after dot
        if key in self.cache:
            return key
        self.dot_runs += 1
        svg = graphviz.render(dot_text, "svg").decode()
        for k, sid in enumerate(slots, 1):
            svg = _paste(svg, f"gfph_{k}", slots[sid])
        if dot_text.startswith("digraph \"\""):      # a fragment: keep its content and its ports' positions
            self.cache[key] = _fragment(svg)
            return key
        return svg


def _slot_attrs(layout: _Layout, k: int) -> str:
    """A fixed-size, invisible box with a port cell at each of the block's port positions."""
    def row(xs: list[float], prefix: str) -> str:
        cells, x = [], 0
        for i, px in sorted(enumerate(xs), key=lambda t: t[1]):
            gap = int(round(px)) - x
            if gap >= 1:
                cells.append(f'<TD FIXEDSIZE="TRUE" WIDTH="{gap}" HEIGHT="1"></TD>')
                x += gap
            cells.append(f'<TD PORT="{prefix}{i}" FIXEDSIZE="TRUE" WIDTH="1" HEIGHT="1"></TD>')
            x += 1
        rest = int(round(layout.w)) - x
        if rest >= 1 or not cells:
            cells.append(f'<TD FIXEDSIZE="TRUE" WIDTH="{max(rest, 1)}" HEIGHT="1"></TD>')
        return ('<TR><TD FIXEDSIZE="TRUE" WIDTH="%d" HEIGHT="1"><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" '
                'CELLPADDING="0"><TR>%s</TR></TABLE></TD></TR>') % (int(round(layout.w)), "".join(cells))
    w, h = int(round(layout.w)), int(round(layout.h))
    table = (f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0" BGCOLOR="transparent" '
             f'FIXEDSIZE="TRUE" WIDTH="{w}" HEIGHT="{h}">{row(layout.ins, "i")}'
             f'<TR><TD FIXEDSIZE="TRUE" WIDTH="{w}" HEIGHT="{max(h - 2, 1)}"></TD></TR>{row(layout.outs, "o")}</TABLE>')
    return f'id="gfph_{k}", shape=plain, label=<{table}>, tooltip=""'


_GROUP = re.compile(r'<g id="(?P<id>[^"]+)" class="node">.*?</g>\n', re.S)
_NUM = r"-?\d+(?:\.\d+)?"


def _points(group: str) -> list[tuple[float, float]]:
    pts = [tuple(map(float, p.split(","))) for m in re.finditer(r'points="([^"]+)"', group) for p in m.group(1).split()]
    pts += [(float(x), float(y)) for x, y in re.findall(rf'cx="({_NUM})" cy="({_NUM})"', group)]
    for m in re.finditer(r' d="([^"]+)"', group):
        pts += [(float(x), float(y)) for x, y in re.findall(rf"({_NUM}),({_NUM})", m.group(1))]
    return pts


def _find(svg: str, gid: str) -> re.Match:
    m = re.search(r'<g id="' + re.escape(gid) + r'" class="node">.*?</g>\n', svg, re.S)
    if m is None:
        raise graphviz.DotFailed(f"`dot -Tsvg` wrote SVG without the box `{gid}` of a composed block")
    return m


def _paste(svg: str, gid: str, content: str) -> str:
    """Put a block's SVG where its slot was drawn (the slot's lower-left corner is the block's origin)."""
    m = _find(svg, gid)
    pts = _points(m.group(0))
    x0, y1 = min(p[0] for p in pts), max(p[1] for p in pts)
    return svg[:m.start()] + f'<g transform="translate({x0:g},{y1:g})">\n{content}</g>\n' + svg[m.end():]


def _fragment(svg: str) -> _Layout:
    """A block's SVG as content to paste: the drawing without the page around it, and its ports."""
    box = re.search(rf'viewBox="0\.00 0\.00 ({_NUM}) ({_NUM})"', svg)
    if box is None or '<g id="graph0"' not in svg:
        raise graphviz.DotFailed("`dot -Tsvg` wrote SVG of an unexpected form (no viewBox or graph group)")
    w, h = float(box.group(1)), float(box.group(2))
    body = svg[svg.index("<g id=\"graph0\""):]
    body = body[body.index(">") + 1: body.rindex("</g>")]
    body = re.sub(r"<!--.*?-->\n?", "", body, flags=re.S)
    body = re.sub(r"^\s*(<title>[^<]*</title>\s*)?<polygon fill=\"white\"[^>]*>\n", "\n", body, count=1)

    def ports(prefix: str) -> list[tuple[float, float, bool]]:
        """(x, y, is a point) of each port, in port order."""
        found = {}
        for m in _GROUP.finditer(body):
            if m.group("id").startswith(prefix):
                pts = _points(m.group(0))
                found[int(m.group("id")[len(prefix):])] = (sum(p[0] for p in pts) / len(pts),
                                                          sum(p[1] for p in pts) / len(pts), "<ellipse" in m.group(0))
        return [found[k] for k in sorted(found)]
    ins, outs = ports("gfin_"), ports("gfout_")
    # A point sits inside the block's border: a stub joins it to the rim. An out-port is declared at the
    # x of the nearest in-port (its stub bends along the bottom margin), so that a chain of repetitions
    # stands in one column instead of drifting sideways by the difference at every step.
    line = '<path fill="none" stroke="#707070" stroke-width="0.9" d="%s"/>\n'
    stubs = [line % f"M{x:.2f},{-h:.2f} L{x:.2f},{y:.2f}" for x, y, point in ins if point]
    starts = [x for x, _, point in ins if point]
    out_xs = []
    for x, y, point in outs:
        to = min(starts, key=lambda s: abs(s - x)) if starts and point else x
        out_xs.append(to)
        if point:
            stubs.append(line % f"M{x:.2f},{y:.2f} L{x:.2f},-3 L{to:.2f},-3 L{to:.2f},0")
    body += "".join(stubs)   # over the block's fill
    body = re.sub(r' id="(?:node|edge|clust|gfin_|gfout_)\d+"', "", body)   # unique only within one block
    return _Layout(body, w, h, [x for x, _, _ in ins], out_xs)
