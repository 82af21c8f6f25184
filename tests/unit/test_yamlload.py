from graphformer.frontend import yamlload

import pytest

from graphformer.base.diagnostics import Span, SpecError
from graphformer.frontend.yamlload import MAX_FILE_BYTES, FileProblem, load_yaml_file, load_yaml_text


def error(text, file="spec.yaml"):
    with pytest.raises(SpecError) as info:
        load_yaml_text(text, file)
    assert len(info.value.diagnostics) == 1
    return info.value.diagnostics[0]


SPEC = """\
model:
  name: tiny
  d_model: 64
  layers:
    - kind: attn
      heads: 4
    - {kind: mlp, hidden: 256}
ratio: 0.5
flag: true
none: ~
"""


def test_data_and_scalar_types():
    ld = load_yaml_text(SPEC, "s.yaml")
    assert ld.data["model"]["layers"][1] == {"kind": "mlp", "hidden": 256}
    assert ld.data["ratio"] == 0.5 and ld.data["flag"] is True and ld.data["none"] is None
    assert ld.text == SPEC and ld.file == "s.yaml"


def test_spans_of_keys_and_values():
    ld = load_yaml_text(SPEC, "s.yaml")
    assert ld.key_spans[("model", "name")] == Span("s.yaml", 2, 3, 7)
    assert ld.spans[("model", "name")] == Span("s.yaml", 2, 9, 13)
    assert ld.spans[("model", "d_model")] == Span("s.yaml", 3, 12, 14)
    assert ld.key_spans[("model", "layers")] == Span("s.yaml", 4, 3, 9)
    assert ld.spans[("model", "layers", 0)].line == 5
    assert ld.spans[("model", "layers", 0)].col == 7
    assert ld.spans[("model", "layers", 0, "heads")] == Span("s.yaml", 6, 14, 15)
    assert ld.spans[("model", "layers", 1)] == Span("s.yaml", 7, 7, 31)
    assert ld.key_spans[("model", "layers", 1, "hidden")] == Span("s.yaml", 7, 19, 25)
    assert ld.spans[("model", "layers", 1, "hidden")] == Span("s.yaml", 7, 27, 30)
    assert ld.spans[()].line == 1 and ld.spans[()].col == 1


def test_end_col_of_quoted_and_block_scalars():
    ld = load_yaml_text('a: "hello world"\nb: |\n  x\n  y\n')
    assert ld.spans[("a",)] == Span("<string>", 1, 4, 17)
    assert ld.spans[("b",)].end_col is None  # multi-line: no end column


def test_span_prefix_fallback():
    ld = load_yaml_text(SPEC, "s.yaml")
    assert ld.span(("model", "layers", 0, "heads")) == ld.spans[("model", "layers", 0, "heads")]
    assert ld.span(("model", "layers", 0, "missing", 3)) == ld.spans[("model", "layers", 0)]
    assert ld.span(("model", "name"), key=True) == ld.key_spans[("model", "name")]
    assert ld.span(("model", "nope"), key=True) == ld.key_spans[("model",)]
    assert ld.span(("zzz",)) == ld.spans[()]
    assert ld.span(()) == ld.spans[()]


def test_duplicate_key_reports_both_positions():
    d = error("a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\n")
    assert d.code == "GF002" and d.message == "duplicate key `x`"
    assert (d.span.line, d.span.col) == (5, 3)
    assert len(d.labels) == 1
    assert (d.labels[0].span.line, d.labels[0].span.col) == (3, 3)
    assert d.labels[0].message == "first defined here"


def test_syntax_error_position():
    d = error("a: 1\nb: [1, 2\nc: 3\n")
    assert d.code == "GF001" and d.message.startswith("invalid YAML: ")
    assert d.span.line == 3 and d.span.file == "spec.yaml"
    d = error("a:\n  b: 1\n   c: 2\n")
    assert d.code == "GF001" and (d.span.line, d.span.col) == (3, 5)


def test_tab_indentation():
    d = error("a:\n\tb: 1\n")
    assert d.code == "GF001" and (d.span.line, d.span.col) == (2, 1)
    assert "tab" in d.help


def test_billion_laughs_rejected_before_converting_anything(monkeypatch):
    # work is bounded by counts, not seconds: the bomb is refused from its 11 anchors' sizes, before a
    # single value is converted (it used to be caught after visiting 200,000 of them)
    lines = ['a0: &a0 "lol"']
    for i in range(1, 11):
        refs = ", ".join(f"*a{i - 1}" for _ in range(10))
        lines.append(f"a{i}: &a{i} [{refs}]")
    visits = []
    real = yamlload._Converter.convert
    monkeypatch.setattr(yamlload._Converter, "convert", lambda self, *a: visits.append(1) or real(self, *a))
    d = error("\n".join(lines) + "\n")
    assert d.code == "GF003" and "200,000" in d.message
    assert visits == []
    assert (d.span.line, d.span.col) == (7, 5)  # `&a6`, the first anchor whose expansion passes the limit


def test_aliases_allowed_and_recursive_alias_rejected():
    ld = load_yaml_text("base: &b {d: 8}\nuse: *b\n")
    assert ld.data["use"] == {"d": 8}
    assert ld.spans[("use", "d")] == ld.spans[("base", "d")]
    assert error("a: &x [1, *x]\n").code == "GF003"


def test_very_deep_nesting():
    d = error("a: " + "[" * 10000 + "]" * 10000 + "\n")
    assert d.code == "GF003" and d.message == "nesting too deep"
    assert (d.span.line, d.span.col) == (1, 1)


def test_moderate_nesting_over_limit():
    d = error("a: " + "[" * 80 + "]" * 80 + "\n")
    assert d.code == "GF003" and d.message == "nesting deeper than 64 levels"


def test_huge_file(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: 1\n" + b"# padding\n" * 310_000)
    with pytest.raises(SpecError) as info:
        load_yaml_file(str(path))
    d = info.value.diagnostics[0]
    assert d.code == "GF003" and d.message == "spec file is 3.1 MB; the limit is 2 MB"
    assert error("a: " + "x" * (MAX_FILE_BYTES + 1)).code == "GF003"


def test_invalid_utf8_position():
    d = error(b"a: 1\nb: 2\nc: \xc3\xa9\xff\n")
    assert d.code == "GF005"
    assert d.message == "file is not valid UTF-8 text (byte 0xff at line 3, column 5)"
    assert (d.span.line, d.span.col) == (3, 5)


def test_nul_bytes():
    d = error(b"a: 1\nb: \x00\x01\x02\n")
    assert d.code == "GF005" and d.message == "file looks binary (contains NUL bytes)"
    assert (d.span.line, d.span.col) == (2, 4)
    assert error("a: \x00").code == "GF005"


def test_control_character():
    d = error("a: 1\nb: x\x07\n")
    assert d.code == "GF005" and (d.span.line, d.span.col) == (2, 5)


def test_bom_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: x\n")
    ld = load_yaml_file(str(path))
    assert ld.data == {"name": "x"}
    assert ld.key_spans[("name",)] == Span(str(path), 1, 1, 5)
    assert load_yaml_text("\ufeffa: 1").data == {"a": 1}


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n"])
def test_empty(text):
    d = error(text)
    assert d.code == "GF006" and d.message == "expected exactly one YAML document"


def test_multiple_documents():
    d = error("a: 1\n---\nb: 2\n")
    assert d.code == "GF006" and d.span.line == 2


@pytest.mark.parametrize("text,kind", [("- 1\n- 2\n", "a list"), ("hello\n", "a string"), ("3\n", "a number")])
def test_top_level_not_mapping(text, kind):
    d = error(text)
    assert d.code == "GF006"
    assert d.message == f"a spec must be a mapping at the top level, found {kind}"
    assert (d.span.line, d.span.col) == (1, 1)


def test_merge_key():
    d = error("base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n")
    assert d.code == "GF004" and d.message == "merge keys (`<<`) are not supported"
    assert (d.span.line, d.span.col) == (3, 3)


def test_non_scalar_key_and_unsafe_tag():
    assert error("? [a, b]\n: 1\n").code == "GF004"
    assert error("a: !!python/object:os.system x\n").code == "GF004"
    assert error("a: !custom {b: 1}\n").code == "GF004"


def test_odd_keys_and_dates():
    ld = load_yaml_text("on: 1\n2: two\nwhen: 2024-01-02\n")
    assert ld.data == {"on": 1, 2: "two", "when": "2024-01-02"}


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileProblem, match="no such file"):
        load_yaml_file(str(tmp_path / "x.yaml"))
    with pytest.raises(FileProblem, match="directory"):
        load_yaml_file(str(tmp_path))
