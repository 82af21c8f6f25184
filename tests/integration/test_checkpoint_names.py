"""Weight maps read the names checkpoints store, not only a module's own (docs/weight-maps.md, `renames`).

transformers 5 holds LLaVA's and PaliGemma's text model as `model.language_model.layers.0...`, but its
`save_pretrained` (like every hub checkpoint) stores `language_model.model.layers.0...` and
`language_model.lm_head.weight`; the hub's towers add `vision_tower.vision_model.`. Here tiny random references
(built offline) are saved, whole and sharded, and `graphformer build --weights DIR --weights-map hf` (the CLI,
in-process) gives a model whose logits are the reference's; `import hf DIR` end to end; the weights written back
under the map's stored names are what `from_pretrained` reads; a file holding one tensor under both names is
refused; GF291 / GF292 at the rename or rule. And every bundled `hf` map reads what save_pretrained writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.backends.torch.parallel import export_safetensors  # noqa: E402
from graphformer.backends.torch.weights import load_weights  # noqa: E402
from graphformer.cli import main  # noqa: E402
from graphformer.weights.maps import (WeightMapError, convert_state_dict, read_name, read_state_dict,  # noqa: E402
                                      stored_name, to_reference)
from parity import assert_close, randomize  # noqa: E402

T.logging.set_verbosity_error()
SPECS = Path(__file__).resolve().parents[2] / "specs"


# ---------------------------------------------------------------- the two multimodal families

def _llava():
    """(reference, its inputs, ours)."""
    from test_llava import prompt, reference
    ids, pixels = prompt()
    return reference(), {"input_ids": ids, "pixel_values": pixels}, {"tokens": ids, "pixels": pixels}


def _paligemma():
    from test_paligemma import batch, tiny_config
    torch.manual_seed(0)
    ref = randomize(T.PaliGemmaForConditionalGeneration(tiny_config())).eval()
    ids, pixels, _, types = batch()
    return (ref, {"input_ids": ids, "pixel_values": pixels, "token_type_ids": types},
            {"tokens": ids, "pixels": pixels, "prefix": (types == 0).long()})


def _gemma3_vision():
    from test_gemma3_vision import batch, tiny_config
    torch.manual_seed(0)
    ref = randomize(T.Gemma3ForConditionalGeneration(tiny_config())).eval()
    ids, pixels, _, types = batch()
    return ref, {"input_ids": ids, "pixel_values": pixels, "token_type_ids": types}, {"tokens": ids, "pixels": pixels}


# family → (reference, its inputs, ours); the key is the spec's file name
FAMILIES = {"llava": _llava, "paligemma": _paligemma, "gemma3-vision": _gemma3_vision}


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    return rc, out, err


def logits(model, feeds):
    with torch.no_grad():
        out = model(**feeds)
    return out["logits"] if isinstance(out, dict) else out.logits


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("shards", [None, "20KB"])
def test_build_reads_save_pretrained_directory(family, shards, tmp_path, capsys):
    ref, theirs, ours = FAMILIES[family]()
    ckpt = tmp_path / "ckpt"
    ref.save_pretrained(ckpt, **({"max_shard_size": shards} if shards else {}))
    stored = set(read_state_dict(str(ckpt)))
    assert any(k.startswith("language_model.model.layers.") for k in stored)   # the on-disk names, not the module's
    if shards:
        assert len(json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]) == len(stored)
        assert len(list(ckpt.glob("model-*-of-*.safetensors"))) > 2
    spec_file = SPECS / f"{family}.yaml"
    rc, out, err = run(capsys, "build", spec_file, "--preset", "tiny", "--weights", ckpt, "--weights-map", "hf",
                       "-o", tmp_path / "ours.safetensors")
    assert rc == 0 and "through weight map `hf`" in out, err
    model = graphformer.build(graphformer.load(spec_file, "tiny"), seed=1).eval()
    model.load_state_dict({k: torch.as_tensor(v) for k, v in read_state_dict(str(tmp_path / "ours.safetensors")).items()})
    assert_close(logits(model, ours), logits(ref, theirs), f"{family} from save_pretrained" + (" sharded" if shards else ""))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_import_hf_directory_end_to_end(family, tmp_path, capsys):
    ref, theirs, ours = FAMILIES[family]()
    ref.save_pretrained(tmp_path / "ckpt")
    rc, out, err = run(capsys, "import", "hf", tmp_path / "ckpt", "-o", tmp_path / "spec.yaml")
    assert rc == 0 and "warning" not in err and "--weights-map hf" in out + err, err
    rc, out, err = run(capsys, "build", tmp_path / "spec.yaml", "--weights", tmp_path / "ckpt",
                       "-o", tmp_path / "ours.safetensors")
    assert rc == 0, err
    model = graphformer.build(graphformer.load(tmp_path / "spec.yaml"), seed=1).eval()
    model.load_state_dict({k: torch.as_tensor(v) for k, v in read_state_dict(str(tmp_path / "ours.safetensors")).items()})
    assert_close(logits(model, ours), logits(ref, theirs), f"{family} imported")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_written_back_under_the_stored_names_loads_with_from_pretrained(family, tmp_path):
    """Weights loaded from the checkpoint and written back through the map, named by that checkpoint (its names
    and shapes: `reference=`), are a directory `from_pretrained` reads to the reference's logits; the module's
    own state dict loads the same."""
    ref, theirs, ours = FAMILIES[family]()
    ref.save_pretrained(tmp_path / "ckpt")
    original = read_state_dict(str(tmp_path / "ckpt"))
    spec = graphformer.load(SPECS / f"{family}.yaml", "tiny")
    model = graphformer.build(spec, seed=1).eval()
    load_weights(model, original, "hf")
    assert_close(logits(model, ours), logits(ref, theirs), f"{family} loaded")
    out = tmp_path / "back"
    out.mkdir()
    ref.config.save_pretrained(out)
    export_safetensors(model, str(out / "model.safetensors"), "hf", reference=original)
    assert set(read_state_dict(str(out))) == set(original)
    again, info = type(ref).from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert_close(logits(again.eval(), theirs), logits(ref, theirs), f"{family} written back")
    load_weights(model, ref.state_dict(), "hf")   # the module's own names read too
    assert_close(logits(model, ours), logits(ref, theirs), f"{family} from state_dict()")


def test_without_a_reference_the_hub_names_are_written(tmp_path):
    """No reference to name the keys: each is written under the rename's `from`, the hub's layout
    (`vision_tower.vision_model.`), which from_pretrained reads (PaliGemma: no unit axes to restore)."""
    ref, theirs, ours = FAMILIES["paligemma"]()
    spec = graphformer.load(SPECS / "paligemma.yaml", "tiny")
    back = to_reference(spec, convert_state_dict(spec, ref.state_dict(), "hf"), "hf")
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in back
    assert "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight" in back
    assert not any(k.startswith("model.") for k in back) and "language_model.lm_head.weight" not in back   # tied
    from graphformer.backends.torch.weights import write_safetensors
    ref.config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    write_safetensors(back, str(tmp_path / "model.safetensors"), {"format": "pt"})
    again, info = type(ref).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert_close(logits(again.eval(), theirs), logits(ref, theirs), "paligemma written without a reference")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_hubs_layout_reads_the_same(family, tmp_path):
    """The hub's files (transformers 4) hold the towers one level down, `vision_tower.vision_model.`, and older
    ones the position-id buffer: they convert to the very tensors the module's state dict gives."""
    ref, _, _ = FAMILIES[family]()
    ref.save_pretrained(tmp_path)
    saved = read_state_dict(str(tmp_path))
    hub = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): saved[k] for k in saved}
    hub["vision_tower.vision_model.embeddings.position_ids"] = torch.arange(16)[None]
    spec = graphformer.load(SPECS / f"{family}.yaml", "tiny")
    got, want = convert_state_dict(spec, hub, "hf"), convert_state_dict(spec, ref.state_dict(), "hf")
    assert got.keys() == want.keys() and all(torch.equal(torch.as_tensor(got[k]), want[k]) for k in want)


def test_one_tensor_stored_under_both_names_is_refused():
    ref, _, _ = FAMILIES["paligemma"]()
    spec = graphformer.load(SPECS / "paligemma.yaml", "tiny")
    sd = dict(ref.state_dict())
    sd["language_model.model.norm.weight"] = sd["model.language_model.norm.weight"].clone()   # equal, still refused
    with pytest.raises(WeightMapError) as e:
        convert_state_dict(spec, sd, "hf")
    assert e.value.problems == ["reference tensors `model.language_model.norm.weight` and "
                                "`language_model.model.norm.weight` are one tensor under two names (map `hf` reads "
                                "both as `language_model.norm.weight`): the checkpoint holds both; keep one of them"]


def test_names_read_and_stored():
    wmap = graphformer.load(SPECS / "llava.yaml", "tiny").ir.weight_maps["hf"]
    for stored, read in [("language_model.model.layers.3.mlp.up_proj.weight", "language_model.layers.3.mlp.up_proj.weight"),
                         ("model.language_model.norm.weight", "language_model.norm.weight"),
                         ("language_model.lm_head.weight", "lm_head.weight"),
                         ("vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias", "vision_tower.encoder.layers.0.mlp.fc1.bias"),
                         ("multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_1.bias")]:
        assert read_name(wmap, stored) == read
    assert stored_name(wmap, "language_model.layers.3.mlp.up_proj.weight") == "language_model.model.layers.3.mlp.up_proj.weight"
    seg = graphformer.load(SPECS / "segformer.yaml").ir.weight_maps["hf"]   # renames with an index, mid-key
    old = "segformer.encoder.block.1.0.attention.self.sr.weight"
    assert read_name(seg, old) == "stages.1.blocks.0.attention.sequence_reduction.sequence_reduction.weight"
    assert stored_name(seg, read_name(seg, old)) == old.removeprefix("segformer.")


# ---------------------------------------------------------------- the spec's mistakes

SPEC = """\
graphformer: 1
name: case
params: {d: 4}
dims: {B: 2}
inputs:
  x: {shape: [B, d]}
nodes:
  up: {op: linear, in: x, out: d}
outputs: {y: up}
weight_maps:
  hf:
    renames:
      - RENAME
    rules:
      - {from: RULE.weight, to: up.weight}
      - {from: RULE.bias, to: up.bias}
"""


@pytest.mark.parametrize("rename,rule,code,line,col", [
    ("{from: model.up, to: model.up}", "up", "GF291", 13, 9),
    ("{from: \"model.{i}\", to: up}", "up", "GF291", 13, 9),
    ("{from: model..up, to: up}", "up", "GF291", 13, 9),
    ("{from: model.dense, to: up}", "model.dense", "GF292", 15, 16),
])
def test_rename_mistakes_are_diagnosed_where_written(tmp_path, capsys, rename, rule, code, line, col):
    path = tmp_path / "case.yaml"
    path.write_text(SPEC.replace("RENAME", rename).replace("RULE", rule))
    rc, out, err = run(capsys, "check", path)
    assert rc == 1 and f"case.yaml:{line}:{col}: error[{code}]" in out + err, out + err


def test_renamed_map_loads_a_renamed_file(tmp_path):
    path = tmp_path / "case.yaml"
    path.write_text(SPEC.replace("RENAME", "{from: dense, to: up}").replace("RULE", "up"))
    spec = graphformer.load(path)
    w = {"dense.weight": torch.ones(4, 4), "dense.bias": torch.zeros(4)}
    assert set(convert_state_dict(spec, w, "hf")) == {"up.weight", "up.bias"}
    assert set(to_reference(spec, convert_state_dict(spec, w, "hf"), "hf")) == set(w)


# ---------------------------------------------------------------- every bundled map

def _hf_cases():
    from test_weight_maps_roundtrip import CASES
    return [c for c in CASES if c.endswith("/hf")]


@pytest.mark.parametrize("case", _hf_cases())
def test_every_hf_map_reads_what_save_pretrained_writes(case, tmp_path):
    """What save_pretrained stores (transformers' legacy names where its conversion mapping has them) converts
    to the very tensors the module's own state dict does."""
    from test_weight_maps_roundtrip import _pair
    spec, ref = _pair(case)
    ref.save_pretrained(tmp_path)
    got = convert_state_dict(spec, read_state_dict(str(tmp_path)), "hf")
    want = convert_state_dict(spec, ref.state_dict(), "hf")
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(torch.as_tensor(got[k]), v), k
