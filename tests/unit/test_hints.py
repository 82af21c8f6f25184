"""Help lines that say what to change: a width mismatch (GF120) names the attribute or param that sets the
conflicting size and the value that makes both sides agree; a missing field (GF103) says what the field
is for and shows the op's example."""
from __future__ import annotations

import textwrap

import pytest

from graphformer.frontend.check import check_file
from graphformer.ops import REGISTRY

HEAD = """\
graphformer: 1
name: w
params: {d_model: 64, d_ff: 128}
inputs:
  x: {shape: [B, n, d_model]}
outputs: {y: res}
nodes:
"""


def _help(tmp_path, nodes: str, code: str) -> str | None:
    path = tmp_path / "w.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(nodes), "  "))
    diags = [d for d in check_file(str(path)).diagnostics if d.code == code]
    assert diags, [d.message for d in check_file(str(path)).diagnostics]
    return diags[0].help


@pytest.mark.parametrize("nodes, hint", [
    ("""\
     down: {op: linear, out: 32}
     res: {op: residual, in: [x, down]}
     """, "set `out` of `down` to 64 (now 32)"),
    ("""\
     down: {op: linear, out: d_ff}
     act: {op: gelu}
     norm: {op: norm}
     res: {op: residual, in: [x, norm]}
     """, "set `d_ff` to 64 (it is `out` of `down`, now 128)"),   # followed back through size-keeping ops
    ("""\
     down: {op: linear, out: 2 * d_ff}
     res: {op: residual, in: [x, down]}
     """, "make `out` of `down` (`2 * d_ff` = 256) equal 64"),
    ("""\
     wide: {op: linear, out: 48}
     cat: {op: concat, in: [x, wide], axis: 1}
     res: {op: residual, in: [x, cat]}
     """, "set `out` of `wide` to 64 (now 48)"),
])
def test_width_mismatch_names_what_sets_it(tmp_path, nodes, hint):
    assert hint in _help(tmp_path, nodes, "GF120")


def test_no_hint_when_nothing_in_the_graph_sets_the_size(tmp_path):
    (tmp_path / "w.yaml").write_text(HEAD.replace("inputs:\n", "inputs:\n  z: {shape: [B, n, 32]}\n")
                                     + textwrap.indent(textwrap.dedent("""\
                                       res: {op: residual, in: [x, z]}
                                       """), "  "))
    diags = [d for d in check_file(str(tmp_path / "w.yaml")).diagnostics if d.code == "GF120"]
    assert diags and diags[0].help is None   # an input's declared shape: no attribute to name


def test_missing_field_says_what_it_is_for_with_an_example(tmp_path):
    help_ = _help(tmp_path, """\
        res: {op: linear}
        """, "GF103")
    assert "`out`: output features" in help_ and REGISTRY["linear"].example in help_


def test_every_required_attribute_is_described():
    undocumented = [f"{name}.{f}" for name, op in REGISTRY.items() for f, info in op.attrs.model_fields.items()
                    if info.is_required() and not info.description]
    assert not undocumented, undocumented
