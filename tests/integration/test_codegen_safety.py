"""Names and values are data (docs/robustness.md, "Names and values"): the torch backend's generated
forward holds only validated names and finite numbers; hostile names are refused by `check` (GF104) at
their line; diagram writers keep every user string inside its label."""
from __future__ import annotations

import ast
import glob
import io
import json
import keyword
import os
import re
import shutil
import subprocess
import tokenize

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from graphformer.render import graphviz, mermaid
from graphformer.render.diagram import build as build_diagram
from graphformer.cli import main as cli_main
from graphformer.frontend.check import check_file

torch = pytest.importorskip("torch")
import graphformer as gf  # noqa: E402
from graphformer.backends.torch import plan  # noqa: E402
from graphformer.backends.torch.module import Block  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPECS = sorted(glob.glob(os.path.join(ROOT, "specs", "*.yaml")))

# What generated code is made of; written here independently of plan._ALLOWED.
KINDS = {"Module", "FunctionDef", "arguments", "arg", "Assign", "Delete", "Return", "Call", "keyword", "Attribute",
         "Subscript", "Slice", "Name", "Constant", "Tuple", "Dict", "IfExp", "BoolOp", "Or", "Compare", "Is", "Eq",
         "BinOp", "Add", "Sub", "Mult", "Div", "UnaryOp", "USub", "Load", "Store", "Del"}
READABLE = {"mods", "torch", "F", "prepare_key_mask"}
PATH_COMMENT = re.compile(r"# [A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*|# once for every attention that reads it")


def assert_plain(src: str) -> set[str]:
    """`src` is one `def run(mods, ...)` of assignments and calls over names it binds: no import, no
    attribute `__x`, no name it didn't bind, finite numbers only, comments that are node paths."""
    tree = ast.parse(src)
    kinds = {type(n).__name__ for n in ast.walk(tree)}
    assert kinds <= KINDS, f"unexpected constructs {kinds - KINDS} in\n{src}"
    (fn,) = tree.body
    assert fn.name == "run" and fn.args.args[0].arg == "mods" and not fn.decorator_list
    bound = {a.arg for a in fn.args.args} | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)
                                               and isinstance(n.ctx, ast.Store)}
    for n in ast.walk(fn):
        if isinstance(n, ast.Name):
            assert n.id in bound | READABLE and n.id.isascii(), n.id
        if isinstance(n, ast.Attribute):
            assert not n.attr.startswith("__"), n.attr
        if isinstance(n, ast.Constant) and isinstance(n.value, float):
            assert n.value == n.value and abs(n.value) != float("inf")
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            assert PATH_COMMENT.fullmatch(tok.string), tok.string
    return kinds


@pytest.mark.parametrize("path", SPECS, ids=[os.path.basename(p) for p in SPECS])
def test_generated_code_of_every_bundled_spec_is_plain(path):
    model = gf.build(gf.load(path, "tiny"), device="meta")
    sources = [src for m in model.modules() if isinstance(m, Block) for src in m._src if src]
    assert sources
    for src in sources:
        assert_plain(src)


# ---------------------------------------------------------------- hostile names

# Every place a name is written, one per line; the `{x}` of one of them is replaced by the name under test.
TEMPLATE = """\
graphformer: 1
name: case
params:
  {param}: 4
  d_model: 8
dims: {{B: 2, n: 4}}
inputs:
  {input}: {{shape: [B, n, d_model]}}
blocks:
  blk:
    params:
      {block_param}: 1
    inputs:
      {block_input}: [B, n, d_model]
    nodes:
      {block_node}: {{op: norm}}
    outputs:
      {block_output}: bn
  {block}: {{inputs: {{y: [B, n, d_model]}}, nodes: {{z: {{op: norm}}}}, outputs: {{y: z}}}}
nodes:
  {node}: {{op: blk}}
outputs:
  {output}: first.bo
weight_maps:
  {weight_map}: {{rules: [{{from: a, to: first.bn.weight}}]}}
"""
DEFAULTS = {"param": "p", "input": "x", "block_param": "bp", "block_input": "bi", "block_node": "bn",
            "block_output": "bo", "block": "other", "node": "first", "output": "y", "weight_map": "hf"}
LINE = {k: next(i for i, line in enumerate(TEMPLATE.splitlines(), 1) if "{" + k + "}" in line) for k in DEFAULTS}
PLACES = sorted(DEFAULTS)

HOSTILE = [
    "a\n    getattr(__import__('os'), 'system')('touch pwned')\n    #",   # finding 1: a comment that ends
    "a\nclick a call alert(1)\n", 'a"] --> b["', "a</script>", "__debug__", "__init__", "__", "x²", "ﬁ",
    "class", "None", "True", "lambda", "1st", "a-b", "a b", "a.b", "", "é", "a\u202eb", "a\tb", "\x7f",
    "a;b", "a'b", "a\\b", "${x}", "x" * 201,
]


def is_identifier(name: str) -> bool:
    """The rule, stated independently of graphformer.frontend.format.name_problem."""
    return (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None and not keyword.iskeyword(name)
            and not (name.startswith("__") and name.endswith("__")) and len(name) <= 200)


def check_named(tmp_path, place: str, name: str):
    text = TEMPLATE.format(**{**DEFAULTS, place: json.dumps(name)})
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return check_file(str(path))


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_are_refused_where_they_are_written(tmp_path, place, name):
    result = check_named(tmp_path, place, name)
    hits = [d for d in result.diagnostics if d.code == "GF104"]
    assert hits and all(d.span.line == LINE[place] for d in hits), [str(d) for d in result.diagnostics]


def test_the_template_is_fine_as_it_is(tmp_path):
    assert check_named(tmp_path, "node", "first").ok


names = (st.sampled_from(HOSTILE)
         | st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
         | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
         | st.sampled_from(sorted(keyword.kwlist)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(place=st.sampled_from(PLACES), name=names)
def test_fuzzed_names_are_refused_unless_identifiers(tmp_path, place, name):
    if name in DEFAULTS.values() or name in ("a", "blk", "d_model", "B", "n", "z", "norm"):
        return   # collides with the template's own names
    result = check_named(tmp_path, place, name)
    hits = [d for d in result.diagnostics if d.code == "GF104"]
    if is_identifier(name):
        assert not hits
    else:
        assert hits and hits[0].span.line == LINE[place], (name, [str(d) for d in result.diagnostics])


@pytest.mark.parametrize("label", ["a b", "a\nb", "-x", ".x", "", "é", "a/b", "x" * 201])
def test_spec_and_preset_names_are_labels(tmp_path, label):
    for text in (f"graphformer: 1\nname: {json.dumps(label)}\ninputs: {{x: {{shape: [2]}}}}\n",
                 f"graphformer: 1\nname: s\npresets:\n  {json.dumps(label)}: {{}}\ninputs: {{x: {{shape: [2]}}}}\n"):
        path = tmp_path / "s.yaml"
        path.write_text(text)
        codes = [d.code for d in check_file(str(path)).diagnostics]
        assert "GF104" in codes, (label, codes)


def test_labels_may_hold_dashes_and_dots(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("graphformer: 1\nname: qwen2-0.5b\npresets: {t5-v1_1-base: {}}\n"
                    "inputs: {x: {shape: [2]}}\nnodes: {a: {op: norm}}\noutputs: {y: a}\n")
    assert check_file(str(path)).ok


# ---------------------------------------------------------------- values

BASE = "graphformer: 1\nname: s\nparams: {d_model: 8, s: 2.0}\ninputs: {x: {shape: [B, n, d_model]}}\n"


@pytest.mark.parametrize("nodes, code", [
    ("a: {op: scale, by: .nan}", "GF102"),
    ("a: {op: scale, by: -.inf}", "GF102"),
    ("a: {op: norm, eps: .inf}", "GF102"),
    ("a: {op: scale, by: '1e999'}", "GF130"),
    ("a: {op: scale, by: '1e308 * 10'}", "GF130"),
    ("a: {op: norm, eps: 'nan'}", "GF130"),
])
def test_non_finite_numbers_are_refused(tmp_path, nodes, code):
    path = tmp_path / "s.yaml"
    path.write_text(BASE + f"nodes:\n  {nodes}\noutputs: {{y: a}}\n")
    result = check_file(str(path))
    assert not result.ok and [d.code for d in result.diagnostics if d.is_error] == [code]
    assert all(d.span.line == 6 for d in result.diagnostics)


def test_non_finite_param_defaults_and_block_params_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("graphformer: 1\nname: s\nparams: {d_model: 8, eps: .nan}\n"
                    "inputs: {x: {shape: [B, n, d_model]}}\n"
                    "blocks: {b: {params: {e: .inf}, inputs: {x: [B, n, d_model]}, nodes: {a: {op: norm}},"
                    " outputs: {x: a}}}\nnodes: {a: {op: b}}\noutputs: {y: a}\n")
    diags = check_file(str(path)).diagnostics
    assert sorted((d.code, d.span.line) for d in diags) == [("GF102", 3), ("GF102", 5)]


def test_a_bad_expression_is_one_error_not_also_a_missing_field(tmp_path):
    """Finding 3: `by: "d_model +"` was GF103 (missing `by`) and GF130."""
    path = tmp_path / "s.yaml"
    path.write_text(BASE + 'nodes:\n  a: {op: scale, by: "d_model +"}\noutputs: {y: a}\n')
    assert [d.code for d in check_file(str(path)).diagnostics] == ["GF130"]


def test_finite_numbers_reach_the_generated_code_as_repr(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(BASE + "nodes:\n  a: {op: scale, by: 1e-300}\noutputs: {y: a}\n")
    model = gf.build(gf.load(str(path)))
    assert "1e-300" in model.code and assert_plain(model.code)
    x = torch.ones(2, 3, 8)
    assert torch.equal(model(x=x)["y"], x * 1e-300)


# ---------------------------------------------------------------- the generator itself

@pytest.mark.parametrize("src", [
    "import os\ndef run(mods):\n    return {}\n",
    "def run(mods):\n    __import__('os').system('true')\n    return {}\n",
    "def run(mods, x):\n    y = x * nan  # a\n    return {'y': y}\n",
    "def run(mods, x):\n    y = x.__class__  # a\n    return {'y': y}\n",
    "def run(mods, x):\n    y = exec('1')  # a\n    return {'y': y}\n",
    "def run(mods, x):\n    y = (lambda: 1)()  # a\n    return {'y': y}\n",
    "def run(mods, x):\n    y = f'{x}'\n    return {'y': y}\n",
    "def run(mods, x):\n    y = x * 1e999\n    return {'y': y}\n",
    "def run(mods, x=open):\n    return {}\n",
    "def run(mods):\n    return {}\ndef other():\n    pass\n",
    "@staticmethod\ndef run(mods):\n    return {}\n",
    "def run(mods):\n    for a in mods:\n        pass\n    return {}\n",
])
def test_check_source_refuses_what_the_generator_never_writes(src):
    with pytest.raises(plan.CodegenError):
        plan.compile_run(src)


def test_comments_and_locals_are_built_from_safe_text_only():
    with pytest.raises(plan.CodegenError):
        plan._comment("a\n    import os\n    #")
    assert plan._comment("blocks.3.attn") == "  # blocks.3.attn"
    names = plan._Names()
    made = [names.new(i, hint) for i, hint in enumerate(["x²", "x2", "ﬁ", "fi", "__debug__", "class", "mods", "1a"])]
    assert len(set(made)) == len(made) and all(m.isascii() and m.isidentifier() and not keyword.iskeyword(m)
                                                and not m.startswith("__") for m in made)


# ---------------------------------------------------------------- diagrams

HOSTILE_TEXT = 'x"]\nclick first call alert(1)\n  a --> b\n`#;<b>&\\N\r\u2028\x00end\n}'


def _hostile_diagram(text: str):
    diagram = build_diagram(gf.load(os.path.join(ROOT, "specs", "encoder-block.yaml"), "tiny").ir)
    diagram.name = diagram.subtitle = text
    for n in diagram.nodes:
        n.title = n.detail = n.tooltip = text
        n.name = text + "2"
    for e in diagram.edges:
        e.label = text
    for c in diagram.clusters.values():
        c.label = c.name = text
    return diagram


def test_mermaid_and_dot_keep_user_text_inside_labels():
    for write in (mermaid.to_mermaid, graphviz.to_dot):
        plain, hostile = write(_hostile_diagram("x")), write(_hostile_diagram(HOSTILE_TEXT))
        assert plain.count("\n") == hostile.count("\n")   # no statement added or split
        assert not any(line.lstrip().startswith(("click", "a -->")) for line in hostile.splitlines())
        assert "\r" not in hostile and "\x00" not in hostile and "\u2028" not in hostile
    text = mermaid.to_mermaid(_hostile_diagram(HOSTILE_TEXT))
    front = text.split("---\n")[1]
    assert yaml.safe_load(front)["title"].startswith('x"]\\x0aclick')


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_dot_parses_hostile_labels_as_text():
    dot = graphviz.to_dot(_hostile_diagram(HOSTILE_TEXT))
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=True).stdout.decode()
    assert "<script" not in svg and "click first call" in svg


# ---------------------------------------------------------------- sizes past exact counting

@pytest.mark.parametrize("argv", [["build"], ["build", "--device", "meta"], ["export", "-o", "{tmp}/m.onnx"]])
def test_sizes_past_exact_counting_are_a_clean_error(tmp_path, capsys, argv):
    """Finding 4: `--set d_model=1000000008` was a DimError traceback (and a torch overflow on meta)."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    rc = cli_main([argv[0], os.path.join(ROOT, "specs", "gpt2.yaml"), "--preset", "tiny",
                   "--set", "d_model=1000000008", *argv[1:]])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err and "too large to count" in err
    assert not os.path.exists(tmp_path / "m.onnx")
