"""`draw --format html`: the page's data and escaping (no browser), then the page itself in a real
headless Chromium (skipped with the reason when Chromium or playwright is missing)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import cli
import graphformer
from graphformer.render import html as viewer
from browser import BrowserMissing, chromium

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def draw_html(tmp_path: Path, spec: str, *args: str, name: str = "page.html") -> Path:
    out = tmp_path / name
    assert cli.main(["draw", str(spec), "-o", str(out), *args]) == 0
    return out


def page_data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="gf-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


# ---------------------------------------------------------------- without a browser

def test_script_json_cannot_end_the_script_element():
    text = viewer.script_json({"doc": "a </script><script>alert(1)</script> <!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text)["doc"] == "a </script><script>alert(1)</script> <!-- & \u2028"


@needs_dot
def test_page_is_self_contained_and_carries_the_ir(tmp_path, capsys):
    text = draw_html(tmp_path, SPECS / "gpt2.yaml", "--dims", "B=1").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page must not load anything"
    data = page_data(text)
    assert data["calls"] == {"blocks": {"label": "layer × 12", "count": 12, "experts": False}}
    assert [v["expanded"] for v in data["views"]] == [[], ["blocks"]]
    attn = data["nodes"]["blocks.3.attn"]
    assert attn["op"] == "attention" and attn["shape"] == "[B, n, 768]" and attn["concrete"] == "[1, 8, 768]"
    assert attn["at"].startswith(str(SPECS / "gpt2.yaml") + ":") and attn["attrs"]["heads"] == 12
    assert attn["params"] == 4 * (768 * 768 + 768)
    ir = graphformer.load(str(SPECS / "gpt2.yaml")).ir
    from graphformer.analysis.summary import total_params
    assert data["summary"]["paramCount"] == total_params(ir) == 124_439_808
    assert data["views"][0]["drawnAs"]["blocks.11.attn"] == "blocks.0.attn"


@needs_dot
def test_every_combination_of_blocks_is_laid_out(tmp_path, capsys):
    data = page_data(draw_html(tmp_path, SPECS / "clip-vit-b32.yaml", "--preset", "tiny").read_text())
    assert sorted(data["calls"]) == ["text_model.layers", "vision_model.layers"]
    assert sorted(tuple(v["expanded"]) for v in data["views"]) == [
        (), ("text_model.layers",), ("text_model.layers", "vision_model.layers"), ("vision_model.layers",)]


def test_many_calls_get_a_few_views():
    calls = {f"c{i}": {} for i in range(6)}
    sets = viewer.view_sets(calls)
    assert len(sets) == 8 and frozenset() in sets and frozenset(calls) in sets


def test_html_is_chosen_by_extension_and_needs_dot(tmp_path, capsys, monkeypatch):
    from graphformer.commands.draw import output_format
    assert output_format("model.html", None) == output_format("model.htm", None) == "html"
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert cli.main(["draw", str(SPECS / "gpt2.yaml"), "-o", str(tmp_path / "m.html")]) == 2
    assert "dot" in capsys.readouterr().err and not (tmp_path / "m.html").exists()


# ---------------------------------------------------------------- in Chromium

@pytest.fixture(scope="module")
def browser():
    try:
        with chromium() as b:
            yield b
    except BrowserMissing as e:
        pytest.skip(str(e))


def wait_js(page, expression: str, polls: int = 3000) -> None:
    """Poll a JS expression until true, at most `polls` times 20 ms apart (a bound by count, not a clock).
    (wait_for_function's polling evaluates strings, which the page's Content-Security-Policy refuses;
    evaluate goes through the debugger protocol and is not affected.)"""
    import time
    for _ in range(polls):
        if page.evaluate(expression):
            return
        time.sleep(0.02)
    raise AssertionError(f"`{expression}` still false after {polls} polls")


class Page:
    """A loaded viewer page that records console errors and every request it makes."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        wait_js(self.page, "!!(window.graphformerViewer && window.graphformerViewer.ready)")
        self.first_render_ms = self.page.evaluate("window.graphformerViewer.firstRenderMs")
        self.url = path.as_uri()

    def node(self, path: str):
        return self.page.locator(f"#stage g.node:has(> title:text-is('{path}'))")

    def settle(self):
        """Wait until a view being unpacked is shown."""
        wait_js(self.page, "!document.body.classList.contains('gf-busy')")

    def drawn(self) -> set[str]:
        return set(self.page.eval_on_selector_all("#stage g.node", "gs => gs.map(g => g.dataset.id).filter(Boolean)"))

    def panel(self) -> str:
        return self.page.inner_text("#panel")

    def close(self):
        self.page.close()


@pytest.fixture(scope="module")
def gpt2_page(tmp_path_factory):
    return draw_html(tmp_path_factory.mktemp("viewer"), SPECS / "gpt2.yaml", "--dims", "B=1")


@needs_dot
@pytest.mark.parametrize("spec", ["gpt2.yaml", "clip-vit-b32.yaml", "encoder-block.yaml"])
def test_page_loads_without_errors_or_network(browser, tmp_path, spec, capsys):
    page = Page(browser, draw_html(tmp_path, SPECS / spec))
    assert page.errors == []
    assert page.requests == [page.url], "the page fetched something besides itself"
    assert "parameters" in page.panel()
    page.close()


@needs_dot
def test_clicking_a_node_shows_its_shapes_and_neighbours(browser, gpt2_page):
    page = Page(browser, gpt2_page)
    page.node("blocks.0.attn").click()
    text = page.panel()
    assert text.startswith("blocks.0.attn") and "attention" in text
    assert "[B, n, 768]" in text and "= [1, 8, 768]" in text          # symbolic, then at B=1 n=8
    assert "blocks.0.ln1" in text and "blocks.0.drop1" in text         # its input and its consumer
    assert "specs/gpt2.yaml:" in text and "stands for 12 repetitions" in text
    assert "gf-sel" in page.node("blocks.0.attn").get_attribute("class")
    assert "gf-in" in page.node("blocks.0.ln1").get_attribute("class")
    assert "gf-out" in page.node("blocks.0.drop1").get_attribute("class")
    assert page.errors == []
    page.close()


@needs_dot
def test_expanding_a_block_adds_its_nodes_in_place(browser, gpt2_page):
    page = Page(browser, gpt2_page)
    before = page.drawn()
    assert "blocks.0.attn" in before and "blocks.1.attn" not in before
    box = page.page.locator("#stage g.cluster:has(> title:text-is('cluster_blocks'))").bounding_box()
    page.node("blocks:title").click()
    page.settle()
    after = page.drawn()
    assert before <= after and {f"blocks.{i}.attn" for i in range(12)} <= after
    first = page.page.locator("#stage g.cluster:has(> title:text-is('cluster_blocks.0'))").bounding_box()
    assert abs(first["x"] - box["x"]) < 2 and abs(first["y"] - box["y"]) < 2, "the block moved on screen"
    page.node("blocks.0:title").click()                                 # collapse again
    page.settle()
    assert page.drawn() == before
    assert page.errors == []
    page.close()


@needs_dot
def test_search_finds_a_node_and_reveals_it(browser, gpt2_page):
    page = Page(browser, gpt2_page)
    page.page.keyboard.press("/")
    page.page.keyboard.type("blocks.5.up")
    assert page.page.inner_text("#results").startswith("blocks.5.up")
    page.page.keyboard.press("Enter")
    assert page.panel().startswith("blocks.5.up") and "drawn as blocks.0.up" in page.panel()
    page.page.click("#panel a[data-reveal]")
    page.settle()
    assert "blocks.5.up" in page.drawn()
    assert "gf-sel" in page.node("blocks.5.up").get_attribute("class")
    node, canvas = page.node("blocks.5.up").bounding_box(), page.page.locator("#canvas").bounding_box()
    assert abs(node["x"] + node["width"] / 2 - (canvas["x"] + canvas["width"] / 2)) < 5, "not centred"
    assert abs(node["y"] + node["height"] / 2 - (canvas["y"] + canvas["height"] / 2)) < 5, "not centred"
    assert page.errors == []
    page.close()


@needs_dot
def test_a_doc_that_closes_the_script_element_is_shown_as_text(browser, tmp_path, capsys):
    src = (SPECS / "encoder-block.yaml").read_text()
    hostile = 'doc: "ends here </script><script>document.title=\'pwned\'</script> <!-- &amp;"\n'
    spec = tmp_path / "hostile.yaml"
    spec.write_text(re.sub(r"doc: >\n(  .*\n)+", hostile, src, count=1))
    page = Page(browser, draw_html(tmp_path, spec))
    assert "ends here </script><script>document.title='pwned'</script> <!-- &amp;" in page.panel()
    assert page.page.title() != "pwned" and page.errors == []
    page.close()


# Speed is measured, not asserted: the page times itself (performance.now()) and this test prints the
# numbers; bench/bench_viewer.py tabulates them against the goals in docs/performance.md. What keeps them
# small — one layout per distinct block — is asserted by counts in tests/unit/test_draw.py.


@needs_dot
@pytest.mark.slow
@pytest.mark.parametrize("spec", [p.name for p in sorted(SPECS.glob("*.yaml"))] + ["llama.yaml:llama2-70b"])
def test_every_model_opens_and_expands_in_the_page(browser, tmp_path, spec, capsys):
    name, _, preset = spec.partition(":")
    page = Page(browser, draw_html(tmp_path, SPECS / name, *(["--preset", preset] if preset else [])))
    data = page_data((tmp_path / "page.html").read_text())
    assert 1 <= len(data["views"]) <= len(viewer.view_sets(data["calls"]))
    expand_ms = 0.0
    if data["calls"]:
        page.page.click("#expand-all")
        wait_js(page.page, "window.graphformerViewer.lastShowMs !== undefined")
        page.settle()
        expand_ms = page.page.evaluate("window.graphformerViewer.lastShowMs")
    drawn = page.drawn()
    print(f"\n{spec}: first render {page.first_render_ms:.0f} ms, expand all {expand_ms:.0f} ms, "
          f"{len(drawn)} boxes, page {(tmp_path / 'page.html').stat().st_size / 1e6:.2f} MB")
    every = [n for n in data["nodes"] if data["nodes"][n]["op"] != "input"]
    assert set(every) <= drawn, "expand all draws every node"
    # search a node of the last repetition, then its panel
    target = ([n for n in every if re.search(r"\.\d+\.", n)] or every)[-1]
    page.page.keyboard.press("/")
    page.page.keyboard.type(target)
    page.page.keyboard.press("Enter")
    assert page.panel().startswith(target) and "shapes" in page.panel().lower()
    assert page.errors == []
    page.close()


@needs_dot
def test_the_panel_shows_params_as_written_active_parameters_and_memory(browser, tmp_path, capsys):
    page = Page(browser, draw_html(tmp_path, SPECS / "mixtral-8x7b.yaml"))
    text = page.panel()
    assert re.search(r"eps\s+1e-5", text) and re.search(r"rope_theta\s+1000000.0", text)
    assert "NaN" not in text and not re.search(r"eps\s+0\b", text)
    assert re.search(r"active\s+[\d,]+ \(12\.\d G\) per token", text), text   # 2 of 8 experts per token
    assert "training peak" in text and "GiB" in text
    assert page.errors == []
    page.close()


@needs_dot
def test_a_shared_input_is_one_arrow(browser, tmp_path, capsys):
    """gpt2 expanded: the mask reaches the first layer's marked port; the other 11 show the port only."""
    page = Page(browser, draw_html(tmp_path, SPECS / "gpt2.yaml", "--expand"))
    titles = page.page.eval_on_selector_all("#stage g.edge > title", "ts => ts.map(t => t.textContent)")
    assert len([t for t in titles if t.startswith("mask->")]) == 1
    assert page.errors == []
    page.close()


@needs_dot
def test_view_writes_the_page_and_opens_it(tmp_path, capsys, monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda uri: opened.append(uri) or True)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert cli.main(["view", str(SPECS / "encoder-block.yaml")]) == 0
    (page,) = tmp_path.glob("graphformer-encoder-block-*.html")
    assert opened == [page.as_uri()] and f"opened {page}" in capsys.readouterr().out
    assert page_data(page.read_text())["name"] == "encoder-block"
    bad = tmp_path / "bad.yaml"
    bad.write_text("graphformer: 1\nname: bad\nnodes: {a: {op: nope}}\n")
    assert cli.main(["view", str(bad)]) == 1
    assert list(tmp_path.glob("graphformer-bad-*")) == [] and len(opened) == 1


@needs_dot
def test_a_mixtures_experts_expand_one_by_one_in_the_page(browser, tmp_path, capsys):
    """Mixtral: the experts' title draws all 8 experts of the layer in place; Expand all expands the
    layers and leaves the experts as they are; with both, every expert of every layer is drawn."""
    page = Page(browser, draw_html(tmp_path, SPECS / "mixtral-8x7b.yaml"))
    data = page_data((tmp_path / "page.html").read_text())
    assert data["calls"]["blocks.0.moe.experts"] == {"label": "mlp × 8", "count": 8, "experts": True}
    before = page.drawn()
    page.node("blocks.0.moe.experts:title").click()
    page.settle()
    after = page.drawn()
    experts = {f"blocks.0.moe.experts.{e}.{n}" for e in range(8) for n in ("gate", "up", "act", "glu", "down")}
    assert experts <= after and len(after - before) == len(experts) - 5   # 8 experts where one was drawn
    page.page.click("#expand-all")
    page.settle()
    assert {f"blocks.{i}.moe.experts.7.down" for i in range(32)} <= page.drawn()
    page.page.click("#collapse-all")
    page.settle()
    page.page.click("#expand-all")
    page.settle()
    drawn = page.drawn()
    assert "blocks.31.attn" in drawn and "blocks.31.moe.experts.1.down" not in drawn
    assert page.errors == []
    page.close()


@needs_dot
def test_a_wide_model_opens_at_a_readable_zoom(browser, tmp_path, capsys):
    page = Page(browser, draw_html(tmp_path, SPECS / "swin-t.yaml"))
    scale = float(re.search(r"scale\(([\d.]+)\)", page.page.eval_on_selector("#stage", "s => s.style.transform")).group(1))
    assert scale >= 0.55, "too small to read"
    assert page.errors == []
    page.close()
