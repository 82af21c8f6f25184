"""Expansion: blocks, repeat with carried streams, imports, params/presets, references, summaries."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import cli
import graphformer
from graphformer.frontend.check import check_file
from graphformer.frontend.load import UsageError
from graphformer.analysis.summary import param_shapes, total_params

SPECS = Path(__file__).resolve().parents[2] / "specs"


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


COATTN = """\
    graphformer: 1
    name: two-streams
    params: {d: 16, heads: 2, layers: 3}
    dims: {B: 2, n: 5, m: 7}
    inputs:
      text:  {shape: [B, n, d]}
      image: {shape: [B, m, d]}
    blocks:
      co:
        params: {width: d}
        inputs: {text: [B, n, d], image: [B, m, d]}
        nodes:
          t2i: {op: cross_attend, in: {query: text, context: image}, heads: heads}
          i2t: {op: cross_attend, in: {query: image, context: text}, heads: heads}
          t:   {op: residual, in: [text, t2i]}
          i:   {op: residual, in: [image, i2t]}
          tp:  {op: linear, in: t, out: width}
        outputs: {text: tp, image: i}
    nodes:
      layers: {op: co, in: {text: text, image: image}, repeat: layers}
      pooled: {op: pool, in: layers.text}
    outputs: {text: pooled, image: layers.image}
"""


def test_repeat_threads_every_carried_stream(tmp_path):
    r = check_file(write(tmp_path, "co.yaml", COATTN))
    assert r.ok, r.diagnostics
    ir = r.ir
    # repetition i+1 reads both streams from repetition i
    assert ir.node("layers.1.t2i").inputs == {"query": "layers.0.tp", "context": "layers.0.i"}
    assert ir.node("layers.0.t2i").inputs == {"query": "text", "context": "image"}
    assert ir.outputs == {"text": "pooled", "image": "layers.2.i"}
    assert str(ir.node("pooled").shape) == "[B, 16]"
    frames = ir.node("layers.2.tp").scope
    assert [(f.path, f.block, f.index, f.count) for f in frames] == [("layers", "co", 2, 3)]


def test_block_params_are_overridable_at_the_call(tmp_path):
    text = COATTN.replace("{op: co, in: {text: text, image: image}, repeat: layers}",
                          "{op: co, in: {text: text, image: image}, width: 8}")
    r = check_file(write(tmp_path, "co.yaml", text))
    # width 8 breaks the carried `text` stream only when repeated; a single call is fine
    assert r.ok, r.diagnostics
    assert str(r.ir.node("layers.tp").shape) == "[B, n, 8]"
    r = check_file(write(tmp_path, "co2.yaml", text.replace("width: 8}", "width: 8, repeat: 2}")))
    assert [d.code for d in r.diagnostics if d.is_error] == ["GF126"]


def test_forward_references_and_implicit_chaining(tmp_path):
    p = write(tmp_path, "f.yaml", """\
        graphformer: 1
        name: fwd
        inputs: {x: {shape: [B, 4]}}
        nodes:
          b: {op: residual, in: [x, a]}
          a: {op: relu, in: x}
          c: {op: tanh}
        outputs: {y: c}
    """)
    r = check_file(p)
    assert r.ok, r.diagnostics
    assert r.ir.node("b").inputs == {"xs0": "x", "xs1": "a"}
    assert r.ir.node("c").inputs == {"x": "a"}  # previous node in the file, not the previous in data flow


def test_imports_share_blocks_and_take_params_from_the_root():
    r = check_file(str(SPECS / "translation.yaml"), preset="tiny")
    assert r.ok, r.diagnostics
    assert "decoder.1.cross" in r.ir
    assert r.ir.node("decoder.1.cross").inputs["context"] == "enc_norm"


def test_import_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "graphformer: 1\nname: a\nimports: [b.yaml]\n")
    write(tmp_path, "b.yaml", "graphformer: 1\nname: b\nimports: [a.yaml]\n")
    r = check_file(str(tmp_path / "a.yaml"))
    assert [d.code for d in r.diagnostics if d.is_error] == ["GF140"]
    assert "a.yaml → b.yaml → a.yaml" in r.diagnostics[0].message


def test_presets_and_overrides():
    spec = graphformer.load(SPECS / "gpt2.yaml", preset="tiny", overrides={"layers": 3})
    assert spec.params["layers"] == 3 and spec.params["d_model"] == 32
    assert "blocks.2.attn" in spec.ir and "blocks.3.attn" not in spec.ir
    with pytest.raises(UsageError, match="did you mean `layers`"):
        graphformer.load(SPECS / "gpt2.yaml", overrides={"layer": 3})
    with pytest.raises(UsageError, match="unknown preset"):
        graphformer.load(SPECS / "gpt2.yaml", preset="huge")


def test_spec_error_carries_diagnostics(tmp_path):
    p = write(tmp_path, "bad.yaml", "graphformer: 1\nname: bad\ninputs: {x: {shape: [B, 4]}}\n"
                                    "nodes: {y: {op: linear, out: n}}\noutputs: {y: y}\n")
    with pytest.raises(graphformer.SpecError) as err:
        graphformer.load(p)
    (d,) = err.value.diagnostics
    assert (d.code, d.span.line, d.span.col) == ("GF131", 4, 30)


@pytest.mark.parametrize("where", ["call", "import"])
def test_a_block_param_without_a_value_is_one_error_not_a_cascade(tmp_path, where):
    """A misspelt value passed to a block (at the call, or into an imported block) is GF131 there, once:
    the body is not expanded with a stand-in value whose shapes would then disagree everywhere."""
    if where == "call":
        text = COATTN.replace("{op: co, in: {text: text, image: image}", "{op: co, in: {text: text, image: image}, "
                              "width: widht")
        assert "widht" in text
        line = next(i for i, l in enumerate(textwrap.dedent(text).splitlines(), 1) if "widht" in l)
    else:
        text = (SPECS / "llava.yaml").read_text().replace("vision_width: vision_width,", "vision_width: vision_widht,")
        line = next(i for i, l in enumerate(text.splitlines(), 1) if "vision_widht" in l)
    r = check_file(write(tmp_path, "bad.yaml", text))
    assert [(d.code, d.span.line) for d in r.diagnostics if d.is_error] == [("GF131", line)]


def test_tied_weights_are_counted_once():
    spec = graphformer.load(SPECS / "gpt2.yaml", preset="tiny")
    names = param_shapes(spec.ir)
    assert "lm_head.weight" not in names and "tok.weight" in names
    assert spec.ir.node("lm_head").attrs.tied == "tok"


# Parameter counts of the references at their default configs (the torch-free side of the parity
# tests; tests/integration/test_parity_text.py recomputes them from the libraries on the meta device).
@pytest.mark.parametrize("spec,expected", [
    ("encoder-block.yaml", 3_152_384), ("decoder-block.yaml", 4_204_032), ("transformer.yaml", 44_140_544),
    ("bert-base.yaml", 109_482_240), ("gpt2.yaml", 124_439_808), ("albert.yaml", 11_683_584),
])
def test_summary_param_counts(spec, expected):
    assert total_params(graphformer.load(SPECS / spec).ir) == expected


def test_gpt3_size_summary_is_exact(capsys):
    rc = cli.main(["summary", str(SPECS / "gpt2.yaml"), "--set", "layers=96", "d_model=12288", "heads=96",
                   "max_len=2048", "--format", "json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"] == 174_604_259_328 and isinstance(doc["params"], int)


def test_summary_flops_with_dims(capsys):
    assert cli.main(["summary", str(SPECS / "encoder-block.yaml"), "--dims", "B=1", "n=10", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    d, ff, n = 512, 2048, 10
    attn = 2 * n * d * d * 4 + 4 * n * n * d
    ffn = 2 * n * d * ff * 2
    assert doc["flops"] >= attn + ffn
    assert cli.main(["summary", str(SPECS / "encoder-block.yaml"), "--dims", "q=1"]) == 2


def test_check_all_bundled_specs_clean(capsys):
    specs = sorted(str(p) for p in SPECS.glob("*.yaml"))
    assert cli.main(["check", *specs]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "error" not in err


def test_json_and_github_formats(tmp_path, capsys):
    p = write(tmp_path, "bad.yaml", "graphformer: 1\nname: bad\ninputs: {x: {shape: [B, 4]}}\n"
                                    "nodes: {y: {op: lineer, out: 3}}\noutputs: {y: y}\n")
    assert cli.main(["check", p, "--format", "json"]) == 1
    (d,) = json.loads(capsys.readouterr().out)
    assert (d["code"], d["line"], d["col"], d["severity"]) == ("GF100", 4, 17, "error")
    assert "did you mean `linear`" in d["message"]
    assert cli.main(["check", p, "--format", "github"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"::error file={p},line=4,col=17::[GF100] unknown op `lineer`")


REPEAT_INDEX = """\
    graphformer: 1
    name: alternating
    params: {d: 8, layers: 4}
    dims: {B: 2, n: 5}
    inputs:
      x: {shape: [B, n, d]}
    blocks:
      layer:
        params: {width: d}
        inputs: {x: [B, n, d]}
        nodes:
          up:   {op: linear, out: width}
          down: {op: linear, out: d}
        outputs: {x: down}
    nodes:
      stack: {op: layer, repeat: layers, width: d + (repeat_index % 2) * 4 + repeat_index}
      once:  {op: layer, width: WIDTH}
    outputs: {y: once}
"""


def test_a_repeated_call_reads_its_repetition_index(tmp_path):
    r = check_file(write(tmp_path, "alt.yaml", REPEAT_INDEX.replace("WIDTH", "d")))
    assert r.ok, r.diagnostics
    widths = [r.ir.node(f"stack.{i}.up").shape.shape[-1].value for i in range(4)]
    assert widths == [8, 13, 10, 15]


def test_repeat_index_outside_a_repeated_call_is_an_unknown_name(tmp_path):
    r = check_file(write(tmp_path, "alt.yaml", REPEAT_INDEX.replace("WIDTH", "repeat_index + 1")))
    (d,) = [d for d in r.diagnostics if d.is_error]
    assert d.code == "GF131" and "`repeat_index`" in d.message and d.span.line == 17
    assert "block call with `repeat`" in d.help


def test_an_unknown_name_at_a_repeated_call_lists_params_not_the_repetition_index(tmp_path):
    r = check_file(write(tmp_path, "alt.yaml", REPEAT_INDEX.replace("WIDTH", "d").replace("(repeat_index % 2) * 4", "zz")))
    (d,) = [d for d in r.diagnostics if d.is_error]
    assert d.code == "GF131" and "`zz`" in d.message
    assert d.help.startswith("params here: `d`, `layers` (and `repeat_index`, the repetition's number);"), d.help


PICKED_BLOCK = """\
    graphformer: 1
    name: pick
    params: {d: 16, ffn: dense}
    presets: {gated: {ffn: gated}, typo: {ffn: dens}}
    dims: {B: 2, n: 5}
    inputs:
      x: {shape: [B, n, d]}
    blocks:
      dense:
        inputs: {x: [B, n, d]}
        nodes:
          up:   {op: linear, out: 2 * d}
          act:  {op: relu}
          down: {op: linear, out: d}
        outputs: {x: down}
      gated:
        inputs: {x: [B, n, d]}
        nodes:
          gate: {op: linear, out: 2 * d}
          act:  {op: gelu}
          up:   {op: linear, in: x, out: 2 * d}
          glu:  {op: mul, in: [act, up]}
          down: {op: linear, out: d}
        outputs: {x: down}
    nodes:
      ff: {op: ffn, repeat: 2}
    outputs: {y: ff}
"""


def test_a_string_param_may_choose_the_block_a_node_calls(tmp_path):
    """T5 v1.1 swaps T5's dense feed-forward for a gated one by preset: `op: ffn` reads the param."""
    path = write(tmp_path, "pick.yaml", PICKED_BLOCK)
    assert "ff.1.up" in graphformer.load(path).ir and "ff.1.gate" not in graphformer.load(path).ir
    gated = graphformer.load(path, preset="gated").ir
    assert "ff.1.gate" in gated and gated.node("ff.1.glu").op == "mul"
    result = check_file(path, preset="typo")
    (d,) = [d for d in result.diagnostics if d.is_error]
    assert d.code == "GF100" and "unknown op `dens` (the value of param `ffn`) — did you mean `dense`?" in d.message


def test_a_param_read_only_by_a_derived_param_is_read(tmp_path):
    """`inner: {expr: expand * d}` reads `expand`: no GF113 for it (Mamba's expand); an unread param still gets one."""
    path = tmp_path / "derived.yaml"
    path.write_text(textwrap.dedent("""\
        graphformer: 1
        name: t
        params: {d: 8, expand: 2, inner: {expr: expand * d}, unused: 3}
        dims: {B: 2, n: 4}
        inputs:
          x: {shape: [B, n, d]}
        nodes:
          up: {op: linear, out: inner}
        outputs: {y: up}
        """))
    r = check_file(str(path))
    assert r.ok
    assert [d.message for d in r.diagnostics if d.code == "GF113"] == ["param `unused` is declared but nothing reads it"]
