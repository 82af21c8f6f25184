"""`graphformer draw`: the diagram view model, DOT and Mermaid text, rendering, the CLI, the gallery."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cli
import graphformer
from graphformer.render.diagram import build
from graphformer.render import graphviz
from graphformer.render.graphviz import INSTALL_HINT, to_dot
from graphformer.render.mermaid import _Ids, to_mermaid

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p for p in (ROOT / "specs").glob("*.yaml") if not p.name.startswith("."))
HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
MAGIC = {"svg": b"<svg", "png": b"\x89PNG", "pdf": b"%PDF"}

TWO_STREAMS = """\
    graphformer: 1
    name: two-streams
    params: {d: 16, dv: 24, heads: 2, layers: 3}
    dims: {B: 2, n: 5, m: 7}
    inputs:
      text:  {shape: [B, n, d]}
      image: {shape: [B, m, dv]}
    blocks:
      co_layer:
        inputs: {t: [B, n, d], v: [B, m, dv]}
        nodes:
          t2v:   {op: cross_attend, in: {query: t, context: v}, heads: heads}
          t_res: {op: residual, in: [t, t2v]}
          v2t:   {op: cross_attend, in: {query: v, context: t}, heads: heads}
          v_res: {op: residual, in: [v, v2t]}
        outputs: {t: t_res, v: v_res}
    nodes:
      co:     {op: co_layer, in: {t: text, v: image}, repeat: layers}
      t_pool: {op: pool, in: co.t}
      v_pool: {op: pool, in: co.v, kind: mean}
    outputs: {text_vec: t_pool, image_vec: v_pool}
"""

NESTED = """\
    graphformer: 1
    name: nested
    params: {d: 8}
    dims: {B: 2, n: 4}
    inputs:
      x: {shape: [B, n, d]}
    blocks:
      inner:
        inputs: {h: [B, n, d]}
        nodes:
          lin: {op: linear, out: d}
          act: {op: relu}
        outputs: {h: act}
      outer:
        inputs: {h: [B, n, d]}
        nodes:
          ln:   {op: norm}
          body: {op: inner, repeat: 2}
          res:  {op: residual, in: [h, body]}
        outputs: {h: res}
    nodes:
      stack: {op: outer, in: x, repeat: 3}
      end:   {op: norm}
    outputs: {y: end}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def draw(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["draw", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def edges(diagram) -> set[tuple[str, str]]:
    return {(e.src, e.dst) for e in diagram.edges}


def dot_node_ids(dot: str) -> set[str]:
    return set(re.findall(r'^\s*"([^"]+)" \[', dot, re.M))


# ---------------------------------------------------------------- every bundled spec, every format

@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_draws_to_dot_and_mermaid(spec, capsys):
    code, dot, err = draw(capsys, str(spec))
    assert code == 0, err
    assert dot.startswith(f'digraph "{graphformer.load(str(spec)).name}"') and dot.rstrip().endswith("}")
    ir = graphformer.load(str(spec)).ir
    ids = dot_node_ids(dot)
    for name in ir.outputs:
        assert f"output:{name}" in ids
    for name in ir.inputs:
        assert name in ids
    code, mmd, err = draw(capsys, str(spec), "--format", "mermaid")
    assert code == 0, err
    assert "flowchart TB" in mmd
    assert mmd.count("subgraph ") == len(re.findall(r"^\s*end$", mmd, re.M))
    # every edge's ends are declared nodes
    declared = set(re.findall(r"^\s*([A-Za-z]\w*)[(\[]", mmd, re.M))
    for a, b in re.findall(r"^\s*(\w+) -->\|\"[^\"]*\"\| (\w+)$", mmd, re.M):
        assert a in declared and b in declared


@needs_dot
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_renders(spec, tmp_path, capsys):
    for fmt, magic in MAGIC.items():
        out = tmp_path / f"d.{fmt}"
        code, _, err = draw(capsys, str(spec), "--preset", "tiny", "-o", str(out))
        assert code == 0, err
        assert magic in out.read_bytes()[:400]


@needs_dot
def test_svg_ids_are_ir_paths(tmp_path, capsys):
    out = tmp_path / "g.svg"
    assert draw(capsys, str(ROOT / "specs/gpt2.yaml"), "-o", str(out))[0] == 0
    svg = out.read_text()
    assert "<title>blocks.0.attn</title>" in svg
    assert "× 12" in svg


# ---------------------------------------------------------------- collapsing and expanding repeats

def test_collapsed_gpt2_is_one_block_times_12():
    ir = graphformer.load(str(ROOT / "specs/gpt2.yaml")).ir
    collapsed, expanded = build(ir), build(ir, expand=True)
    dot = to_dot(collapsed)
    assert "layer × 12" in dot
    assert "blocks.1." not in dot
    assert len(expanded.nodes) - len(collapsed.nodes) == 11 * 10   # 10 nodes per layer, 11 layers folded
    assert len(collapsed.nodes) < len(expanded.nodes) / 5
    full = to_dot(expanded)
    assert '"blocks.11.attn"' in full and "layer 12/12" in full and "× 12" not in full
    # the carried stream leaves the block from the last repetition and enters the first
    assert ("blocks.11.res2", "ln_f") in edges(expanded)
    assert ("blocks.0.res2", "ln_f") in edges(collapsed)
    assert ("drop", "blocks.0.ln1") in edges(collapsed)


def test_collapse_reroutes_memory_and_drops_carried_edges():
    ir = graphformer.load(str(ROOT / "specs/transformer.yaml"), "tiny").ir
    e = edges(build(ir))
    assert ("enc_norm", "decoder.0.cross") in e            # memory into the (one drawn) decoder layer
    assert ("encoder.0.norm2", "enc_norm") in e             # out of the last repetition, drawn from rep 0
    assert not any("encoder.1" in a or "encoder.1" in b for a, b in e)
    assert ("encoder.0.norm2", "encoder.0.attn") not in e   # the carried edge between repetitions is gone
    x = edges(build(ir, expand=True))
    assert {("enc_norm", "decoder.0.cross"), ("enc_norm", "decoder.1.cross"),
            ("encoder.1.norm2", "enc_norm"), ("encoder.0.norm2", "encoder.1.attn")} <= x
    labels = {(ed.src, ed.dst): ed.label for ed in build(ir).edges}
    assert labels["enc_norm", "decoder.0.cross"] == "context: [B, s, 32]"


def test_two_carried_streams(tmp_path):
    ir = graphformer.load(write(tmp_path, "co.yaml", TWO_STREAMS)).ir
    d = build(ir)
    assert [c.label for c in d.clusters.values()] == ["co_layer × 3"]
    e = edges(d)
    assert {("text", "co.0.t2v"), ("image", "co.0.t2v"), ("image", "co.0.v2t"), ("text", "co.0.v2t"),
            ("co.0.t_res", "t_pool"), ("co.0.v_res", "v_pool")} <= e
    assert not any(a.startswith("co.0.") and b in ("co.0.t2v", "co.0.v2t") for a, b in e)
    dot = to_dot(d)
    # both inputs on the first rank, in the spec's order, so the two streams start side by side
    assert '{ rank=min; "text"; "image"; }' in dot and '"text" -> "image" [style=invis]' in dot
    assert '{ rank=max; "output:text_vec"; "output:image_vec"; }' in dot


def test_nested_repeats_collapse_to_nested_clusters(tmp_path):
    ir = graphformer.load(write(tmp_path, "n.yaml", NESTED)).ir
    d = build(ir)
    assert {c.id: (c.label, c.parent) for c in d.clusters.values()} == {
        "stack": ("outer × 3", None), "stack.0.body": ("inner × 2", "stack")}
    assert [n.id for n in d.nodes] == ["x", "stack.0.ln", "stack.0.body.0.lin", "stack.0.body.0.act",
                                       "stack.0.res", "end", "output:y"]
    assert edges(d) == {("x", "stack.0.ln"), ("stack.0.ln", "stack.0.body.0.lin"),
                        ("stack.0.body.0.lin", "stack.0.body.0.act"), ("x", "stack.0.res"),
                        ("stack.0.body.0.act", "stack.0.res"), ("stack.0.res", "end"), ("end", "output:y")}
    x = build(ir, expand=True)
    assert len(x.clusters) == 3 + 3 * 2 and "stack.2.body.1" in x.clusters
    assert ("stack.2.res", "end") in edges(x)
    mmd = to_mermaid(d)
    assert "n_end(" in mmd  # `end` would close a mermaid subgraph


# ---------------------------------------------------------------- labels and shapes

def test_labels_say_what_matters():
    gpt2 = to_dot(build(graphformer.load(str(ROOT / "specs/gpt2.yaml")).ir))
    assert "<b>attention</b> 12 heads · causal" in gpt2
    assert "<b>linear</b> → 3072" in gpt2
    assert "<b>activation</b> gelu_tanh" in gpt2
    assert "no bias · tied to tok" in gpt2
    assert "eps" not in gpt2                  # the default eps is not news
    assert "[B, n, 768]" in gpt2 and "[B, n] int64" in gpt2
    bert = to_dot(build(graphformer.load(str(ROOT / "specs/bert-base.yaml")).ir))
    assert "eps 1e-12" in bert and "mask: [B, n] int64" in bert


def test_a_collapsed_repeat_lists_the_attribute_values_that_vary():
    """Swin shifts every second layer's windows (`repeat_index`): the one box drawn for both says so."""
    swin = build(graphformer.load(str(ROOT / "specs/swin-t.yaml")).ir)
    label = {n.id: n.detail for n in swin.nodes}
    assert label["stage3.0.windows"] == "window 7 · shift 0 / 3"
    assert label["stage3.0.rel_bias"] == "window 7 · 12 heads · shift 0 / 3"
    assert label["stage3.0.attn"] == "12 heads"
    assert [e.label for e in swin.edges if e.dst == "stage1.0.attn" and e.label.startswith("bias")] == [
        "bias: [1, 3, 49, 49] / [64*B, 3, 49, 49]"]   # unshifted and shifted layers' biases: one edge


def test_a_collapsed_repeat_draws_one_edge_whose_shapes_vary():
    """Wav2Vec2's feature encoder halves the length in each of its six convolutions: one edge, first and last."""
    w = build(graphformer.load(str(ROOT / "specs/wav2vec2.yaml")).ir)
    (edge,) = [e for e in w.edges if e.src == "convs.0.conv" and e.dst == "convs.0.act"]
    assert edge.label == "[B, 512, 32*t + 7] / … / [B, 512, t]"
    assert len(w.edges) == len({(e.src, e.dst, e.label.split(":")[0]) for e in w.edges})


def test_inputs_and_outputs_look_different_from_ops():
    d = build(graphformer.load(str(ROOT / "specs/gpt2.yaml")).ir)
    kinds = {n.id: (n.kind, n.style) for n in d.nodes}
    assert kinds["tokens"] == ("input", "input")
    assert kinds["output:logits"] == ("output", "output")
    assert kinds["tok"][1] != "input" and kinds["lm_head"][1] != "output"


def test_dims_make_shapes_concrete(capsys):
    code, dot, err = draw(capsys, str(ROOT / "specs/gpt2.yaml"), "--dims", "B=1", "n=16")
    assert code == 0, err
    assert "[1, 16, 768]" in dot and "[B, n" not in dot and "B=1, n=16" in dot
    code, _, err = draw(capsys, str(ROOT / "specs/gpt2.yaml"), "--dims", "T=3")
    assert code == 2 and "`T` is not a symbolic dim" in err


def test_direction_and_mermaid_ids(capsys):
    code, dot, _ = draw(capsys, str(ROOT / "specs/encoder-block.yaml"), "--direction", "LR")
    assert code == 0 and "rankdir=LR" in dot
    code, mmd, _ = draw(capsys, str(ROOT / "specs/encoder-block.yaml"), "--format", "mermaid", "--direction", "LR")
    assert code == 0 and "flowchart LR" in mmd
    ids = _Ids()
    assert ids("blocks.0.attn") == "blocks_0_attn"
    assert ids("blocks_0.attn") == "blocks_0_attn_2"   # collisions stay distinct
    assert ids("end") == "n_end" and ids("3x") == "n_3x"
    assert ids("blocks.0.attn") == "blocks_0_attn"     # stable


# ---------------------------------------------------------------- CLI: formats, errors, atomic writes

@pytest.mark.parametrize("ext,start", [(".dot", b"digraph"), (".gv", b"digraph"), (".mmd", b"---\ntitle:"),
                                       (".mermaid", b"---\ntitle:")])
def test_format_follows_extension(ext, start, tmp_path, capsys):
    out = tmp_path / f"d{ext}"
    assert draw(capsys, str(ROOT / "specs/gpt2.yaml"), "-o", str(out))[0] == 0
    assert out.read_bytes().startswith(start)


def test_usage_errors(tmp_path, capsys):
    spec = str(ROOT / "specs/gpt2.yaml")
    code, _, err = draw(capsys, spec, "-o", str(tmp_path / "d.jpeg"))
    assert code == 2 and "cannot tell the format" in err
    for fmt in ("png", "pdf"):
        code, out, err = draw(capsys, spec, "--format", fmt)
        assert code == 2 and "-o FILE" in err and out == ""
    code, _, err = draw(capsys, spec, "-o", str(tmp_path / "missing" / "d.dot"))
    assert code == 2 and "does not exist" in err
    assert list(tmp_path.iterdir()) == []


def test_spec_errors_exit_1_and_write_nothing(tmp_path, capsys):
    bad = write(tmp_path, "bad.yaml", """\
        graphformer: 1
        name: bad
        dims: {B: 2, n: 4}
        inputs: {x: {shape: [B, n, 8]}}
        nodes:
          a: {op: attention, heads: 3}
        outputs: {y: a}
    """)
    out = tmp_path / "d.dot"
    code, _, err = draw(capsys, bad, "-o", str(out))
    assert code == 1 and "bad.yaml:6" in err and "GF123" in err
    assert not out.exists()


def test_missing_dot_is_an_environment_error(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "d.png"
    code, _, err = draw(capsys, str(ROOT / "specs/gpt2.yaml"), "-o", str(out))
    assert code == 2 and INSTALL_HINT in err
    assert not out.exists()
    # text formats never need the binary
    assert draw(capsys, str(ROOT / "specs/gpt2.yaml"), "-o", str(tmp_path / "d.dot"))[0] == 0
    assert draw(capsys, str(ROOT / "specs/gpt2.yaml"), "-o", str(tmp_path / "d.mmd"))[0] == 0


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as a fake `dot`")
def test_failed_render_leaves_the_old_file_alone(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dot").write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 1\n")
    (fake / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "d.svg"
    out.write_text("previous diagram")
    code, _, err = draw(capsys, str(ROOT / "specs/gpt2.yaml"), "-o", str(out))
    assert code == 2 and "syntax error in line 1" in err
    assert out.read_text() == "previous diagram"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "d.svg"]   # no temp file left


def test_draw_needs_no_torch(tmp_path):
    code = textwrap.dedent(f"""
        import argparse, sys
        from graphformer.commands import draw
        p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command"); draw.add_parser(sub)
        args = p.parse_args(["draw", {str(ROOT / 'specs/bert-base.yaml')!r}, "-o", {str(tmp_path / 'b.mmd')!r}])
        assert draw.run(args) == 0
        assert "torch" not in sys.modules, "draw imported torch"
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b.mmd").read_text().startswith("---\ntitle: bert-base")


# ---------------------------------------------------------------- the gallery

def _gallery():
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "scripts" / "gallery.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_gallery_is_current(spec):
    gallery = _gallery()
    fresh = gallery.texts(spec)
    for ext in ("dot", "mmd"):
        path = ROOT / "docs" / "gallery" / f"{spec.stem}.{ext}"
        assert path.exists(), f"{path.name} is missing: run `python scripts/gallery.py`"
        assert path.read_text() == fresh[ext], f"{path.name} is stale: run `python scripts/gallery.py`"
    readme = (ROOT / "docs" / "gallery" / "README.md").read_text()
    assert f"({spec.stem}.svg)" in readme


def test_gallery_has_no_orphans():
    names = {p.stem for p in SPECS}
    drawn = {p.stem for p in (ROOT / "docs" / "gallery").glob("*.dot")}
    assert drawn == names


# ---------------------------------------------------------------- every op has a lowering

def test_every_op_has_a_diagram_lowering_and_a_short_label():
    from graphformer.render.diagram import FAMILY_STYLE, PALETTE, attr_detail
    from graphformer.render.graphviz import LOWERINGS
    from graphformer.ops import REGISTRY
    families = {op.family for op in REGISTRY.values()}
    assert sorted(families - set(FAMILY_STYLE)) == [], "give the new op family a style: FAMILY_STYLE in backends/diagram.py"
    assert sorted(set(REGISTRY) - set(LOWERINGS)) == []
    assert set(LOWERINGS.values()) <= set(PALETTE)
    for name, op in REGISTRY.items():
        fields = op.attrs.model_fields
        if any(f.is_required() and f.annotation is not int for f in fields.values()):
            continue
        attrs = op.attrs(**{k: 4 for k, f in fields.items() if f.is_required()})
        assert len(attr_detail(name, attrs)) <= 40, name


# ---------------------------------------------------------------- the viewer's numbers; composed layouts

def test_params_read_as_written():
    from graphformer.render.html import param_text
    assert param_text(50257) == "50,257" and param_text(0) == "0"
    assert param_text(1e-06) == "1e-6" and param_text(1e-5) == "1e-5" and param_text(10000.0) == "10000.0"
    assert param_text(0.02) == "0.02" and param_text(1e20) == "1e20" and param_text(2.5e-07) == "2.5e-7"
    assert param_text("none") == "none" and param_text("gelu_tanh") == "gelu_tanh"
    assert param_text(True) == "true" and param_text(False) == "false"
    assert param_text([4096, None]) == "[4,096, none]"


def test_panel_summary_types_active_params_and_memory():
    from graphformer.render.html import summary_data
    ir = graphformer.load(str(ROOT / "specs" / "mixtral-8x7b.yaml"), preset="tiny").ir
    s = summary_data(ir, ir.resolve_dims({}))
    assert all(isinstance(v, str) for v in s["params"].values())
    assert not any(v in ("0", "NaN") for k, v in s["params"].items() if k in ("eps", "rope_scaling"))
    assert 0 < s["activeCount"] < s["paramCount"]                     # top 2 of the experts
    assert s["memory"]["weights"] == 4 * s["paramCount"] and s["memory"]["training_peak"] > s["memory"]["weights"]


@needs_dot
def test_expanded_layout_is_one_dot_run_per_distinct_block():
    from graphformer.render import compose
    ir = graphformer.load(str(ROOT / "specs" / "llama.yaml"), preset="tiny", overrides={"layers": 9}).ir
    d = build(ir, expand=True)
    c = compose._Composer(d)
    svg = graphviz.render(c.top(), "svg", engine="nop2").decode()   # top(): the composed layout, as DOT
    assert c.dot_runs == 2                                            # one layer, then the graph around them
    titles = set(re.findall(r"<title>([^<]*)</title>", svg))
    assert {f"blocks.{i}.attn" for i in range(9)} <= titles and {f"cluster_blocks.{i}" for i in range(9)} <= titles
    assert "layer 9/9" in svg and "@R@" not in svg and "@K" not in svg
    # the mask feeds every layer: one arrow reaches the first layer's marked port, none the others
    assert len([t for t in titles if t.startswith("mask&#45;&gt;")]) == 1
    assert svg.count(">mask</text>") == 9 + 1                         # a port per layer, and the input
    # a chain of layers stands in one column: each layer's box starts at the same x
    xs = {round(float(x)) for x in re.findall(r'<title>cluster_blocks\.\d+</title>\n.*\n<path [^>]* d="M(-?[\d.]+),', svg)}
    assert len(xs) == 1


@needs_dot
@pytest.mark.slow
def test_draw_expanded_svg_of_the_deepest_model(tmp_path, capsys):
    out = tmp_path / "x.svg"
    assert cli.main(["draw", str(ROOT / "specs" / "llama.yaml"), "--preset", "llama2-70b", "--expand", "-o", str(out)]) == 0
    assert len(re.findall(r"<title>cluster_blocks\.\d+</title>", out.read_text())) == 80


NESTED_MASKED = """\
    graphformer: 1
    name: nested
    params: {d: 16, inner: 3, outer: 2}
    inputs:
      x: {shape: [B, n, d]}
      mask: {shape: [B, n], dtype: int64}
    blocks:
      sub:
        inputs: {x: [B, n, d], mask: [B, n]}
        nodes:
          ln: {op: norm, in: x}
          attn: {op: attention, in: {x: ln, mask: mask}, heads: 2}
          res: {op: residual, in: [x, attn]}
        outputs: {x: res}
      stage:
        inputs: {x: [B, n, d], mask: [B, n]}
        nodes:
          layers: {op: sub, in: {x: x, mask: mask}, repeat: inner}
          out: {op: linear, in: layers, out: d}
        outputs: {x: out}
    nodes:
      stages: {op: stage, in: {x: x, mask: mask}, repeat: outer}
    outputs: {y: stages}
    """


@needs_dot
@pytest.mark.parametrize("expand", [True, frozenset({"stages"}), frozenset({"stages.0.layers"})])
def test_nested_repetitions_compose(tmp_path, expand):
    from graphformer.render import compose
    spec = tmp_path / "nested.yaml"
    spec.write_text(textwrap.dedent(NESTED_MASKED))
    d = build(graphformer.load(str(spec)).ir, expand=expand)
    svg = compose.render_svg(d)
    titles = set(re.findall(r"<title>([^<]*)</title>", svg))
    assert {n.id for n in d.nodes} <= titles and "@" not in "".join(titles)
    assert len([t for t in titles if t.startswith("mask&#45;&gt;")]) == 1   # the mask: one arrow


@needs_dot
def test_every_expert_of_a_mixture_is_drawn_in_order_from_one_layout():
    from graphformer.render import compose
    ir = graphformer.load(str(ROOT / "specs" / "mixtral-8x7b.yaml"), preset="tiny", overrides={"layers": 3}).ir
    experts = ir.node("blocks.0.moe").attrs.experts
    collapsed = build(ir)
    assert collapsed.clusters["blocks.0.moe.experts"].repeat == experts       # one expert × E, expandable
    d = build(ir, expand=True, experts=True)
    ids = [f"blocks.{i}.moe.experts.{e}" for i in range(3) for e in range(experts)]
    assert all(compose.is_repetition(d.clusters[c]) for c in ids)
    c = compose._Composer(d)
    svg = graphviz.render(c.top(), "svg", engine="nop2").decode()
    assert c.dot_runs == 3                                            # an expert, a layer, the graph around them
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert {f"{x}.down" for x in ids} <= set(titles)
    # the norm before them reaches the first expert only; the others show a marked port `ln2`
    assert len([t for t in titles if t.startswith("blocks.1.ln2&#45;&gt;blocks.1.moe.experts")]) == 1
    # side by side, in their order
    xs = [float(re.search(rf"<title>cluster_blocks\.1\.moe\.experts\.{e}</title>\n.*\n<path [^>]* d=\"M(-?[\d.]+),",
                          svg).group(1)) for e in range(experts)]
    assert xs == sorted(xs)
    # --expand alone keeps one expert × E; --expand-experts alone composes the experts in the collapsed layer
    assert "blocks.1.moe.experts" in build(ir, expand=True).clusters
    assert compose.is_repetition(build(ir, experts=True).clusters["blocks.0.moe.experts.1"])


@needs_dot
@pytest.mark.parametrize("fmt,direction", [("png", "TB"), ("pdf", "TB"), ("svg", "LR"), ("png", "LR")])
def test_expanded_drawings_are_composed_in_every_format_and_direction(tmp_path, capsys, monkeypatch, fmt, direction):
    """Each format and direction goes through the block-by-block layout: the diagram is laid out by
    dot once per distinct block (-Tdot) and drawn as placed (-Knop2), never handed to dot whole."""
    runs = []
    real = graphviz.render
    monkeypatch.setattr(graphviz, "render", lambda text, f, dpi=None, engine=None:
                        runs.append((f, engine)) or real(text, f, dpi, engine))
    out = tmp_path / f"x.{fmt}"
    assert cli.main(["draw", str(ROOT / "specs" / "gpt2.yaml"), "--preset", "tiny", "--set", "layers=5",
                     "--expand", "--direction", direction, "-o", str(out)]) == 0
    assert runs == [("dot", None), ("dot", None), (fmt, "nop2")]
    assert MAGIC[fmt] in out.read_bytes()[:300]
    if fmt == "svg":
        svg = out.read_text()
        assert {f"cluster_blocks.{i}" for i in range(5)} <= set(re.findall(r"<title>([^<]*)</title>", svg))
        assert svg.count("<title>mask&#45;&gt;") == 1
        # left to right, a chain of layers stands in one row: each layer's box starts at the same y
        ys = {round(float(y)) for y in re.findall(r'<title>cluster_blocks\.\d+</title>\n.*\n<path [^>]* d="M-?[\d.]+,(-?[\d.]+)', svg)}
        assert len(ys) == 1, ys
