"""The diagram and the viewer at full size: every bundled spec at its default size (and llama2-70b).

Per spec: the time to draw it expanded as SVG (`draw --expand -o x.svg`, in process: load, build, lay
out), laid out block by block (render/compose.py); with `--baseline S`, the same drawing handed to `dot`
whole, as before, stopped after S seconds; the viewer page's size and the time to write it; and, when
Chromium and playwright are there, the page's first render and "expand all" measured inside the page
(performance.now()). Writes a table into docs/performance.md (section `viewer`).

    python bench/bench_viewer.py [--baseline 60] [--no-browser] [--only gpt2 llama ...]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from report import cpu as machine, write_section  # noqa: E402  (bench/report.py)

from graphformer.frontend.api import load  # noqa: E402
from graphformer.render import compose, graphviz  # noqa: E402
from graphformer.render import html as viewer  # noqa: E402
from graphformer.render.diagram import build  # noqa: E402

DOC = ROOT / "docs" / "performance.md"
EXTRA = [("llama", "llama2-70b")]   # beyond the defaults: the deepest bundled model


def cases(only: list[str] | None) -> list[tuple[str, str | None]]:
    specs = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))
    out = [(s, None) for s in specs] + EXTRA
    return [c for c in out if not only or c[0] in only]


def cpu() -> float:
    """CPU seconds of this process and of its finished children (`dot`): steadier than the wall clock
    on a shared machine."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def time_svg(spec: str, preset: str | None, experts: bool = False) -> tuple[float, int, int]:
    """CPU seconds to draw expanded as composed SVG (every expert too with `experts`); boxes; dot runs."""
    t = cpu()
    ir = load(str(ROOT / "specs" / f"{spec}.yaml"), preset=preset).ir
    d = build(ir, expand=True, experts=experts)
    c = compose._Composer(d)
    composed = any(compose.is_repetition(x) for x in d.clusters.values())
    svg = graphviz.render(c.top(), "svg", engine="nop2") if composed else graphviz.render(graphviz.to_dot(d), "svg")
    assert b"<svg" in svg
    return cpu() - t, len(d.nodes), max(c.dot_runs, 1)


def time_baseline(spec: str, preset: str | None, limit: float) -> float | None:
    """Seconds for `dot -Tsvg` on the whole expanded diagram (None: not done within `limit`)."""
    ir = load(str(ROOT / "specs" / f"{spec}.yaml"), preset=preset).ir
    text = graphviz.to_dot(build(ir, expand=True))
    t = time.perf_counter()
    try:
        subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, timeout=limit, check=True)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - t


def write_page(spec: str, preset: str | None, out: Path) -> tuple[float, int]:
    t = cpu()
    ir = load(str(ROOT / "specs" / f"{spec}.yaml"), preset=preset).ir
    out.write_text(viewer.to_html(ir))
    return cpu() - t, out.stat().st_size


def wait_js(page, expression: str, timeout_s: float = 60) -> None:
    """Poll until true (wait_for_function's polling evals strings, which the page's CSP refuses)."""
    end = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise TimeoutError(expression)
        time.sleep(0.02)


def measure_pages(pages: list[Path]) -> dict[Path, tuple[float, float, int]]:
    """First render and expand-all (ms) inside Chromium, and console errors, per page."""
    from browser import chromium
    out = {}
    with chromium() as b:
        for path in pages:
            p = b.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            p.on("console", lambda m: m.type in ("error", "warning") and errors.append(m.text))
            p.on("pageerror", lambda e: errors.append(str(e)))
            p.goto(path.as_uri())
            wait_js(p, "!!(window.graphformerViewer && window.graphformerViewer.ready)")
            first = p.evaluate("window.graphformerViewer.firstRenderMs")
            expand = float("nan")
            if p.is_enabled("#expand-all"):
                p.click("#expand-all")
                wait_js(p, "window.graphformerViewer.lastShowMs !== undefined && "
                           "!document.body.classList.contains('gf-busy')")
                expand = p.evaluate("window.graphformerViewer.lastShowMs")
            out[path] = (first, expand, len(errors))
            p.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=float, default=0, help="also time dot on the whole graph, up to S seconds")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    for spec, preset in cases(args.only):
        name = spec + (f" --preset {preset}" if preset else "")
        svg_s, boxes, runs = time_svg(spec, preset)
        moe = any(n.op == "moe" for n in load(str(ROOT / "specs" / f"{spec}.yaml"), preset=preset).ir.nodes())
        experts_s = time_svg(spec, preset, experts=True)[0] if moe else None
        base = time_baseline(spec, preset, args.baseline) if args.baseline else None
        page = tmp / f"{spec}-{preset or 'default'}.html"
        page_s, size = write_page(spec, preset, page)
        rows.append([name, boxes, runs, svg_s, experts_s, base, page_s, size, page])
        print(f"{name}: {boxes} boxes, {runs} dot runs, svg {svg_s:.2f} s, "
              f"every expert {'-' if experts_s is None else f'{experts_s:.1f} s'}, "
              f"dot whole {'-' if not args.baseline else (f'{base:.1f} s' if base else f'> {args.baseline:g} s')}, "
              f"page {page_s:.1f} s {size / 1e3:.0f} kB", flush=True)
    browser = {}
    if not args.no_browser:
        try:
            browser = measure_pages([r[-1] for r in rows])
        except Exception as e:  # noqa: BLE001 - the table is still worth writing without the browser columns
            print(f"no browser measurements: {e}", file=sys.stderr)
    text = report(rows, browser, args.baseline)
    print(text)
    if not args.no_write:
        write_section(str(DOC), "<!-- viewer:begin -->", "<!-- viewer:end -->", text)


def report(rows, browser, baseline: float) -> str:
    def ms(v: float) -> str:
        return "–" if v != v else f"{v:.0f}"
    lines = ["## Diagrams and the viewer at full size", "",
             f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end (shared with other jobs: times vary by about 2× between runs). "
             "Every bundled spec at its default size, expanded: `draw --expand -o x.svg` in process, CPU "
             "seconds of the process and its `dot` runs (load, build, layout: one `dot` run per distinct "
             "repetition, then the composed layout drawn as placed, render/compose.py); for a mixture of "
             "experts also `--expand --expand-experts` (every expert of every layer)"
             + (f"; before, the whole expanded graph handed to `dot` (stopped after {baseline:g} s)" if baseline else "")
             + "; the viewer page (every view precomputed) and, in headless Chromium, its first render and "
             "\"expand all\" measured in the page with performance.now(). `python bench/bench_viewer.py"
             + (f" --baseline {baseline:g}" if baseline else "") + "`.", "",
             "| spec | boxes expanded | dot runs | SVG expanded (CPU s) | with every expert (CPU s) |"
             + (" before: dot whole (s) |" if baseline else "")
             + " page (CPU s) | page (kB) | first render (ms) | expand all (ms) | console errors |",
             "|---|---:|---:|---:|---:|" + ("---:|" if baseline else "") + "---:|---:|---:|---:|---:|"]
    for name, boxes, runs, svg_s, experts_s, base, page_s, size, page in rows:
        first, expand, errors = browser.get(page, (float("nan"),) * 2 + ("–",))
        before = f" {base:.1f} |" if base else f" > {baseline:g} |"
        lines.append(f"| {name} | {boxes} | {runs} | {svg_s:.2f} | {'–' if experts_s is None else f'{experts_s:.1f}'} |"
                     + (before if baseline else "")
                     + f" {page_s:.1f} | {size / 1e3:.0f} | {ms(first)} | {ms(expand)} | {errors} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
