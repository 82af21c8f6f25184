#!/usr/bin/env python3
"""Regenerate docs/gallery/: the diagram of every bundled spec (default params, symbolic shapes).

For each specs/NAME.yaml this writes NAME.dot and NAME.mmd (the checked artefacts: deterministic text that
tests/unit/test_draw.py compares with a fresh rendering) and NAME.svg and NAME.png (for viewing; these need
Graphviz's `dot`), then docs/gallery/README.md listing them. It also screenshots the HTML viewer
(`draw --format html`) of a few specs into NAME-viewer.png, in headless Chromium (skipped, with a note,
where Chromium or playwright is missing). Run it after changing a spec or the drawing code:
python scripts/gallery.py            (or --text-only where `dot` is not installed)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/browser.py drives headless Chromium (a test helper, not shipped)

from graphformer.frontend.api import load  # noqa: E402
from graphformer.render import graphviz  # noqa: E402
from graphformer.render import html as viewer  # noqa: E402
from browser import BrowserMissing, chromium  # noqa: E402
from graphformer.render.diagram import build  # noqa: E402
from graphformer.base.fileio import atomic_output  # noqa: E402
from graphformer.render.mermaid import to_mermaid  # noqa: E402
from graphformer.base.diagnostics import SpecError  # noqa: E402

SPECS = ROOT / "specs"
GALLERY = ROOT / "docs" / "gallery"
PNG_DPI = 96
# Viewer screenshots: spec -> the node selected in the picture (its panel shows shapes, params, FLOPs).
VIEWER_SHOTS = {"gpt2": "blocks.0.attn", "clip-vit-b32": "text_model.layers.0.self_attn"}
VIEWER_SUFFIX = "-viewer"


def spec_paths() -> list[Path]:
    return sorted(p for p in SPECS.glob("*.yaml") if not p.name.startswith("."))  # skip editors' temp files


def texts(spec: Path) -> dict[str, str]:
    """The gallery's text artefacts of one spec: {"dot": ..., "mmd": ...}."""
    diagram = build(load(str(spec)).ir)
    return {"dot": graphviz.to_dot(diagram), "mmd": to_mermaid(diagram)}


def readme(names: list[str]) -> str:
    lines = ["# Gallery", "",
             "The diagram of every bundled spec at its default size, with symbolic shapes, drawn by",
             "`graphformer draw`. Regenerate with `python scripts/gallery.py`; `tests/unit/test_draw.py` fails",
             "when a `.dot` or `.mmd` file here no longer matches its spec. See [drawing.md](../drawing.md).", ""]
    for name in names:
        lines += [f"## {name}", "",
                  f"`graphformer draw specs/{name}.yaml -o {name}.svg` · "
                  f"[svg]({name}.svg) · [png]({name}.png) · [dot]({name}.dot) · [mermaid]({name}.mmd)", "",
                  f"[![{name}]({name}.svg)]({name}.svg)", ""]
    lines += ["## The HTML viewer", "",
              "`graphformer draw SPEC -o model.html` writes an interactive page (pan, zoom, expand blocks in",
              "place, search, a panel per node); see [drawing.md](../drawing.md#the-html-viewer).", ""]
    for name, node in VIEWER_SHOTS.items():
        lines += [f"`graphformer draw specs/{name}.yaml -o {name}.html`, `{node}` selected:", "",
                  f"![{name} in the viewer]({name}{VIEWER_SUFFIX}.png)", ""]
    return "\n".join(lines)


def viewer_shots() -> None:
    """Screenshot the viewer of each VIEWER_SHOTS spec with its node selected, into NAME-viewer.png."""
    import tempfile
    with chromium() as browser, tempfile.TemporaryDirectory() as tmp:
        for name, node in VIEWER_SHOTS.items():
            page_path = Path(tmp) / f"{name}.html"
            spec = (SPECS / f"{name}.yaml").relative_to(ROOT)   # the panel shows `specs/NAME.yaml:LINE`
            os.chdir(ROOT)
            page_path.write_text(viewer.to_html(load(str(spec)).ir), encoding="utf-8")
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_path.as_uri())
            page.wait_for_function("window.graphformerViewer && window.graphformerViewer.ready")
            page.evaluate("n => window.graphformerViewer.select(n)", node)
            _write(GALLERY / f"{name}{VIEWER_SUFFIX}.png", page.screenshot())
            page.close()
            print(f"gallery: {name}{VIEWER_SUFFIX}.png")


def _write(path: Path, data: bytes) -> None:
    with atomic_output(str(path)) as fh:
        fh.write(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text-only", action="store_true", help="write only the .dot/.mmd files (no `dot` needed)")
    args = ap.parse_args(argv)
    if not args.text_only:
        try:
            graphviz.find_dot()
        except graphviz.DotNotFound as e:
            sys.stderr.write(f"gallery: {e} (or pass --text-only)\n")
            return 2
    GALLERY.mkdir(parents=True, exist_ok=True)
    names, failed = [], False
    for spec in spec_paths():
        try:
            out = texts(spec)
        except SpecError as e:
            sys.stderr.write(f"gallery: {spec.name} has errors, skipped:\n{e.render()}\n")
            failed = True
            continue
        name = spec.stem
        names.append(name)
        _write(GALLERY / f"{name}.dot", out["dot"].encode())
        _write(GALLERY / f"{name}.mmd", out["mmd"].encode())
        if not args.text_only:
            _write(GALLERY / f"{name}.svg", graphviz.render(out["dot"], "svg"))
            _write(GALLERY / f"{name}.png", graphviz.render(out["dot"], "png", dpi=PNG_DPI))
        print(f"gallery: {name}")
    if not args.text_only:
        try:
            viewer_shots()
        except BrowserMissing as e:
            sys.stderr.write(f"gallery: viewer screenshots not taken: {e}\n")
    for stale in sorted(GALLERY.iterdir()):  # diagrams of specs that no longer exist
        stem = stale.stem.removesuffix(VIEWER_SUFFIX) if stale.suffix == ".png" else stale.stem
        if stale.suffix in (".dot", ".mmd", ".svg", ".png") and stem not in names and not failed:
            stale.unlink()
    _write(GALLERY / "README.md", readme(names).encode())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
