"""A weight map's `strip_prefix` as one string or a list: a key loses the longest listed prefix that starts it,
keys without one are read as they are, and the spec file's list reaches the IR's map (no torch)."""
from __future__ import annotations

from graphformer.frontend.check import check_file
from graphformer.ir import WeightMap
from graphformer.weights.maps import read_name


def test_the_longest_prefix_that_starts_the_key_is_stripped():
    wmap = WeightMap((), strip_prefix=("model.", "model.encoder.", "dinov2_with_registers."))
    assert read_name(wmap, "model.encoder.layer.0.w") == "layer.0.w"          # the longest of two that match
    assert read_name(wmap, "model.head.w") == "head.w"
    assert read_name(wmap, "dinov2_with_registers.embeddings.cls_token") == "embeddings.cls_token"
    assert read_name(wmap, "classifier.weight") == "classifier.weight"      # no prefix: as it is
    assert read_name(wmap, "models.x") == "models.x"                        # a prefix is a whole start, dot included
    assert read_name(WeightMap(()), "model.x") == "model.x"                 # no strip_prefix


def test_a_spec_takes_one_prefix_or_a_list(tmp_path):
    base = ("graphformer: 1\nname: m\ndims: {B: 2}\ninputs:\n  x: {shape: [B, 4]}\nnodes:\n"
            "  fc: {op: linear, out: 3}\noutputs: {y: fc}\nweight_maps:\n  hf:\n    strip_prefix: PREFIX\n"
            "    rules:\n      - {from: fc.weight, to: fc.weight}\n      - {from: fc.bias, to: fc.bias}\n")
    for written, want in (("a.", ("a.",)), ("[a., b.c.]", ("a.", "b.c.")), ('""', ())):
        path = tmp_path / "m.yaml"
        path.write_text(base.replace("PREFIX", written))
        result = check_file(str(path))
        assert result.ok, [d.message for d in result.diagnostics]
        assert result.ir.weight_maps["hf"].strip_prefix == want
    path.write_text(base.replace("PREFIX", "[a., 3]"))
    assert [d.code for d in check_file(str(path)).diagnostics if d.severity == "error"] == ["GF102"]
