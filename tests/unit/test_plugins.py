"""Plugin ops (graphformer/ops/plugins.py, docs/plugins.md) registered through fake `graphformer.ops` entry
points: what `check`, `summary`, `draw`, `list --ops` and the analyses make of them, the `requires:` field,
lazy loading, and broken plugins skipped with a warning. Torch-free; tests/slow/test_plugins_installed.py installs
the example package for real and builds and exports it."""
from __future__ import annotations

import importlib.metadata
import json

import pytest
from pydantic import Field

from graphformer import cli
from graphformer.analysis.decoding import plan_decoder
from graphformer.analysis.summary import total_params
from graphformer.analysis.tp_plan import derive
from graphformer.base.diagnostics import SpecError
from graphformer.frontend.check import check_file
from graphformer.ops import REGISTRY, plugins
from graphformer.ops.base import (POSITION, UNKNOWN, UNPLANNED, Attrs, OpDef, PluginOpDef, ShapeError, keeps,
                                  numel, same_shape)
from graphformer.ops.plugins import DemoEntryPoint, Plugin, _DemoDist


class ScaleAttrs(Attrs):
    by: int = Field(2, description="the width must be a multiple of this")


def _scale_shape(a, ins):
    x = same_shape(ins, ["x"])
    if x.shape[-1].value % a.by:
        raise ShapeError("GF123", f"width {x.shape[-1]} is not a multiple of {a.by}", "x", attr="by")
    return x


SCALE = OpDef("channel_scale", "core", "x · weight", ScaleAttrs, ("x",), _scale_shape,
              params=lambda a, ins: {"weight": (ins["x"].shape[-1].value,)},
              flops=lambda a, ins, out: numel(out.shape), sequence=POSITION, tp=UNPLANNED, saves=keeps("x"))
VAGUE = PluginOpDef("vague", "core", "declares no traits", ScaleAttrs, ("x",), lambda a, ins: ins["x"])
DIST = _DemoDist("graphformer-scale", "1.2.3")
GOOD = DemoEntryPoint("scale", Plugin((SCALE, VAGUE)), DIST)

SPEC = """\
graphformer: 1
name: case
requires: [{requires}]
params: {{d_model: 16, heads: 4, vocab: 50, by: 4}}
dims: {{B: 2, n: 8}}
inputs:
  tokens: {{shape: [B, n], dtype: int64}}
nodes:
  tok:    {{op: embedding, in: tokens, vocab: vocab, dim: d_model}}
  attn:   {{op: attention, heads: heads, causal: true}}
  scale:  {{op: {op}, by: by}}
  logits: {{op: linear, out: vocab}}
outputs: {{logits: logits}}
"""


@pytest.fixture
def installed():
    """Install fake entry points for one test: `installed(ep, ...)`."""
    stack = []

    def install(*eps):
        cm = plugins.demonstration(list(eps))
        cm.__enter__()
        stack.append(cm)
    yield install
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def spec(tmp_path, op="channel_scale", requires="graphformer-scale") -> str:
    path = tmp_path / "case.yaml"
    text = SPEC.format(op=op, requires=requires)
    path.write_text(text if op in ("channel_scale", "vague") else text.replace(", by: by", ""))
    return str(path)


def test_a_plugin_op_is_checked_counted_and_listed_like_a_builtin(installed, tmp_path, capsys):
    installed(GOOD)
    assert REGISTRY["channel_scale"] is SCALE and plugins.origin("channel_scale") == "graphformer-scale 1.2.3"
    assert plugins.origin("linear") == "builtin"
    result = check_file(spec(tmp_path))
    assert result.ok, result.diagnostics
    assert total_params(result.ir) == 50 * 16 + 4 * (16 * 16 + 16) + 16 + 16 * 50 + 50
    assert cli.main(["list", "--ops", "--format", "json"]) == 0
    rows = {r["op"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["channel_scale"]["from"] == "graphformer-scale 1.2.3" and rows["linear"]["from"] == "builtin"
    assert rows["vague"]["unknown_traits"] == ["sequence", "tp"]


def test_a_plugin_shape_error_is_reported_where_the_node_is_written(installed, tmp_path, capsys):
    installed(GOOD)
    path = spec(tmp_path)
    assert cli.main(["check", path, "--set", "by=3"]) == 1
    err = capsys.readouterr().err
    assert "case.yaml:11:" in err and "error[GF123]" in err and "not a multiple of 3" in err


def test_draw_and_summary_show_the_plugin_op(installed, tmp_path, capsys):
    installed(GOOD)
    out = tmp_path / "case.dot"
    assert cli.main(["draw", spec(tmp_path), "-o", str(out)]) == 0
    assert "channel_scale" in out.read_text()
    assert cli.main(["summary", spec(tmp_path)]) == 0
    assert "channel_scale" in capsys.readouterr().out


def test_registry_loads_plugins_lazily_and_once(monkeypatch):
    calls = []
    real = importlib.metadata.entry_points

    def fake(**kw):
        if kw.get("group") == plugins.GROUP:
            calls.append(1)
            return [GOOD]
        return real(**kw)
    plugins.reset()
    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    try:
        assert calls == []                       # nothing read the registry yet: nothing imported
        assert "channel_scale" in REGISTRY and len(REGISTRY) > 1 and REGISTRY.get("vague") is VAGUE
        assert calls == [1]
    finally:
        monkeypatch.undo()
        plugins.reset()
    assert "channel_scale" not in REGISTRY


@pytest.mark.parametrize("target, why", [
    (ModuleNotFoundError("No module named 'nope'"), "failed to import: ModuleNotFoundError"),
    (SystemExit(3), "failed to import: SystemExit"),
    (SCALE, "not a graphformer.ops.plugins.Plugin"),
    (Plugin((PluginOpDef("linear", "core", "clash", ScaleAttrs, ("x",), lambda a, ins: ins["x"]),)),
     "op `linear` is already defined (builtin)"),
    (Plugin((PluginOpDef("odd", "core", "bad ports", ScaleAttrs, ["x"], lambda a, ins: ins["x"]),)),
     "`ports` is not a tuple"),
    (Plugin((SCALE,), torch="os; rm -rf"), "`torch` is not a module name"),
])
def test_a_broken_plugin_is_skipped_with_a_warning_and_the_others_load(installed, tmp_path, target, why):
    installed(DemoEntryPoint("bad", target, _DemoDist("graphformer-bad", "0.1")), GOOD)
    problems = plugins.problems()
    assert len(problems) == 1 and "plugin `bad` (graphformer-bad 0.1) skipped" in problems[0] and why in problems[0]
    assert "channel_scale" in REGISTRY and plugins.origin("linear") == "builtin"
    result = check_file(spec(tmp_path))
    assert result.ok and [d.code for d in result.diagnostics] == ["GF257"]


def test_two_plugins_with_one_op_name_the_second_is_skipped(installed):
    installed(GOOD, DemoEntryPoint("scale2", Plugin((SCALE,)), _DemoDist("graphformer-other", "2.0")))
    assert plugins.origin("channel_scale") == "graphformer-scale 1.2.3"
    assert "already defined (graphformer-scale 1.2.3)" in plugins.problems()[0]


def test_an_op_of_a_required_package_not_installed_names_the_package(tmp_path, capsys):
    assert cli.main(["check", spec(tmp_path, requires="graphformer-scale")]) == 1
    err = capsys.readouterr().err
    assert "error[GF253]: op `channel_scale` is not installed: this spec requires `graphformer-scale`" in err
    assert "case.yaml:11:" in err and "pip install graphformer-scale" in err


def test_a_required_package_not_installed_is_an_error_at_its_entry(installed, tmp_path):
    installed(GOOD)
    result = check_file(spec(tmp_path, requires="graphformer-scale, graphformer-absent"))
    codes = [(d.code, d.span.line, d.span.col) for d in result.diagnostics]
    assert codes == [("GF253", 3, 31)] and "`graphformer-absent`" in result.diagnostics[0].message


def test_requires_is_data_never_imported(tmp_path, monkeypatch):
    """`requires: [os]`: looked up in the installed packages' metadata, never imported."""
    def no_import(name, *a, **k):
        raise AssertionError(f"imported {name}")
    monkeypatch.setattr(importlib, "import_module", no_import)
    result = check_file(spec(tmp_path, op="gelu", requires="os"))
    assert [d.code for d in result.diagnostics if d.is_error] == ["GF253"] and "package `os`" in result.diagnostics[0].message
    bad = check_file(spec(tmp_path, op="gelu", requires="'os; import x'"))
    assert not bad.ok and bad.diagnostics[0].code != "GF253"


def test_analyses_refuse_undeclared_traits_instead_of_guessing(installed, tmp_path):
    installed(GOOD)
    ir = check_file(spec(tmp_path, op="vague")).ir
    with pytest.raises(SpecError) as e:
        plan_decoder(ir, ("logits",))
    assert e.value.diagnostics[0].code == "GF255" and e.value.diagnostics[0].node == "scale"
    with pytest.raises(SpecError) as e:
        derive(ir, 2)
    assert e.value.diagnostics[0].code == "GF256"
    ok = check_file(spec(tmp_path)).ir       # channel_scale declares its traits: both analyses go on
    assert plan_decoder(ok, ("logits",)).slots and derive(ok, 2)


def test_plugin_traits_are_optional_but_from_the_vocabulary():
    assert VAGUE.sequence == VAGUE.tp == UNKNOWN and VAGUE.saves is not None
    with pytest.raises(AssertionError):
        PluginOpDef("x", "core", "", ScaleAttrs, ("x",), lambda a, ins: ins["x"], sequence="sometimes")
    with pytest.raises(TypeError):   # a built-in OpDef still declares them
        OpDef("x", "core", "", ScaleAttrs, ("x",), lambda a, ins: ins["x"])


def test_no_plugins_switch_loads_none(installed, monkeypatch):
    monkeypatch.setenv("GRAPHFORMER_NO_PLUGINS", "1")
    installed(GOOD)
    assert "channel_scale" not in REGISTRY and plugins.origin("channel_scale") == "builtin"


def test_an_imported_file_requires_its_packages_too(tmp_path):
    (tmp_path / "lib.yaml").write_text("""\
graphformer: 1
name: lib
requires: [graphformer-absent]
blocks:
  mix:
    inputs: {x: [B, n, 16]}
    nodes:
      s: {op: channel_scale, in: x}
    outputs: {x: s}
""")
    (tmp_path / "main.yaml").write_text("""\
graphformer: 1
name: main
imports: [lib.yaml]
dims: {B: 2, n: 8}
inputs:
  x: {shape: [B, n, 16]}
nodes:
  m: {op: mix}
outputs: {y: m}
""")
    result = check_file(str(tmp_path / "main.yaml"))
    errors = [d for d in result.diagnostics if d.is_error]
    assert [d.code for d in errors] == ["GF253"] and "`graphformer-absent`" in errors[0].message
    assert errors[0].span.file.endswith("lib.yaml") and errors[0].span.line == 8
