"""`graphformer build SPEC -o DIR --save-map hf`: a checkpoint in the reference's names and shapes, written
without a reference, that the reference's own `from_pretrained` loads (docs/weight-maps.md "Writing a checkpoint").

For every bundled spec with an `hf` map (the cases of test_weight_maps_roundtrip.py, references built offline
from small configs): our build with random weights, written through the CLI, loads into the reference class with
no missing, unexpected or mismatched key, holding exactly our weights (bit for bit, through the map); where
both take the same inputs, both compute the same outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
import test_weight_maps_roundtrip as rt  # noqa: E402
from graphformer import cli  # noqa: E402
from graphformer.weights.maps import _Glob, get_map, to_reference  # noqa: E402

T.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
HF = [c for c in rt.CASES if c.endswith("/hf")]
# the larger references (several seconds each here): run in the slow tier
SLOW = {"llava/hf", "paligemma/hf", "whisper-base/hf", "t5-base/hf", "deepseek-v2/hf", "segformer/hf", "gpt-oss/hf",
        "deepseek-v3/hf", "swin-t/hf", "deberta-v2/hf", "modernbert/hf", "gemma3-vision/hf"}
ALIASES = {"tokens": "input_ids", "mask": "attention_mask", "pixels": "pixel_values", "positions": "position_ids"}
# the maps whose stored shapes differ from the parameters' (`stored_shape`): their outputs must be compared
UNIT_AXES = {"vit-b16/hf", "clip-vit-b32/hf", "ast/hf", "timesformer/hf", "vivit/hf", "dinov2/hf", "llava/hf",
             "rwkv/hf", "siglip/hf"}
# params a case leaves at a value no config says together with its others (GF315), which the reference's class
# doesn't read: set as the config says them, so that --save-map hf writes one (the weights are the same)
SAYABLE = {"videomae/hf": {"pooling": "cls"}}   # VideoMAEModel's final norm goes with [CLS] pooling
COMPARED = {}   # case → the outputs compared with the reference's (printed with -s)


def _case(case):
    """(spec, reference, the CLI's arguments for that spec): the case's `spec(name, preset, **sets)` call caught."""
    seen = {}
    original = rt.spec

    def spy(name, preset="tiny", **sets):
        seen.update(name=name, preset=preset, sets=sets)
        return original(name, preset, **sets)
    rt.spec = spy
    try:
        s, ref = rt.CASES[case]()
    finally:
        rt.spec = original
    argv = [str(rt.SPECS / f"{seen['name']}.yaml")] + (["--preset", seen["preset"]] if seen["preset"] else [])
    sets = {**seen["sets"], **SAYABLE.get(case, {})}
    if sets:
        argv += ["--set", *(f"{k}={_text(v)}" for k, v in sets.items())]
    return s, ref.eval(), argv


def _text(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else json.dumps(v) if isinstance(v, bool) else str(v)


def _save(argv, out, capsys, seed=3):
    rc = cli.main(["build", *argv, "--seed", str(seed), "-o", str(out), "--save-map", "hf", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Traceback" not in captured.out + captured.err
    return captured


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in HF])
def test_written_through_the_cli_loads_with_from_pretrained(case, tmp_path, capsys):
    s, ref, argv = _case(case)
    out = tmp_path / "out"
    _save(argv, out, capsys)
    # a bundled family's spec gets the config.json of its params (test_hf_export.py holds it to the reference); the
    # cases' references match their specs in sizes only, so here the reference's own config takes its place
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    ref.config.save_pretrained(out)
    loaded, info = type(ref).from_pretrained(out, output_loading_info=True)
    wmap = get_map(s, "hf")   # what the map ignores (buffers: batch norm's step counter) is the reference's to make
    missing = {k for k in info["missing_keys"] if not any(_Glob(g).fullmatch(k) for g in wmap.ignore)}
    assert not missing and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ours = graphformer.build(s, seed=3).eval()   # what the CLI built: the same spec, seed and init
    want = to_reference(s, ours.state_dict(), "hf", reference=ref.state_dict())
    got = loaded.eval().state_dict()
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    COMPARED[case] = _same_outputs(ours, loaded)
    print(case, "outputs compared:", COMPARED[case])
    assert COMPARED[case] or case not in UNIT_AXES, "no output compared for a model whose map gives stored shapes"


def _same_outputs(ours, ref) -> list[str]:
    """Our outputs and the reference's, on our example inputs (masks all ones), for every output both name alike
    (LM logits, encoders' hidden states): within fp32 parity. The cases' specs match their references in sizes
    only, so ours is rebuilt from the reference's config as `import hf` reads it (the function's knobs: eps,
    activation, rotary base), holding the same weights. [] where that import or the inputs don't fit."""
    import inspect
    from graphformer.backends.torch import example_inputs
    from graphformer.frontend.hf import HFImportError, convert_config, spec_path
    try:
        # as save_pretrained writes it: `architectures` (which import reads for a head) names the class
        imported = convert_config({**ref.config.to_dict(), "architectures": [type(ref).__name__]})
        s = graphformer.load(spec_path(imported.family), overrides=dict(imported.params))
        twin = graphformer.build(s).eval()
        twin.load_state_dict(ours.state_dict())
    except (HFImportError, RuntimeError, graphformer.SpecError):
        return []
    inputs = {k: torch.ones_like(v) if k in ("mask", "attention_mask") else v
              for k, v in example_inputs(s, seed=0).items()}
    accepted = inspect.signature(ref.forward).parameters
    theirs = {ALIASES.get(k, k): v for k, v in inputs.items()}
    from test_hf_export import DERIVED   # what a reference takes that ours reads off another input
    theirs.update(DERIVED[s.name](s, theirs) if s.name in DERIVED else {})
    if not set(theirs) <= set(accepted):
        return []
    with torch.no_grad():
        mine = twin(**inputs)
        try:
            out = ref(**theirs)
        except RuntimeError:   # DeepSeek-V2's reloaded experts take transformers' grouped kernel, which refuses
            return []          # these tiny strides: its weights are compared above, its function by test_parity_*
    compared = [k for k in mine if isinstance(getattr(out, k, None), torch.Tensor)]
    for k in compared:
        want = getattr(out, k)
        assert (mine[k] - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item()), k
    return compared


def test_a_checkpoint_directory_round_trips_with_its_config(tmp_path, capsys):
    """SPEC a save_pretrained directory: its weights read through the map, written back with its config.json, and
    `from_pretrained` on the result needs nothing else; sharded above --max-shard-size, as save_pretrained shards."""
    ref = rt.randomize(T.LlamaForCausalLM(T.LlamaConfig(**rt.llama_cfg())))
    ref.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "out"
    rc = cli.main(["build", str(tmp_path / "ckpt"), "-o", str(out), "--save-map", "hf", "--max-shard-size", "20KB",
                   "--quiet"])
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert "config.json" in names and "model.safetensors.index.json" in names and len(names) > 4, names
    index = json.loads((out / "model.safetensors.index.json").read_text())
    from graphformer.weights.maps import read_state_dict
    assert set(index["weight_map"]) == set(read_state_dict(str(out))) and len(index["weight_map"]) == len(ref.state_dict())
    loaded = T.LlamaForCausalLM.from_pretrained(out)
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, ref(input_ids=ids).logits)
    # written again, unsharded, into the same directory: the old shards and index go, one file stays
    rc = cli.main(["build", str(tmp_path / "ckpt"), "-o", str(out), "--save-map", "hf", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert T.LlamaForCausalLM.from_pretrained(out) is not None


def test_a_config_that_describes_another_model_is_refused(tmp_path, capsys):
    ref = T.LlamaForCausalLM(T.LlamaConfig(**rt.llama_cfg()))
    ref.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "out"
    rc = cli.main(["build", "llama", "--preset", "tiny", "--set", "layers=3", "--weights", str(tmp_path / "ckpt"),
                   "-o", str(out), "--save-map", "hf", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_usage_errors_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["build", "gpt2", "--preset", "tiny", "--save-map", "hf"]) == 2
    assert "-o DIR" in capsys.readouterr().err
    assert cli.main(["build", "gpt2", "--preset", "tiny", "-o", str(out), "--save-map", "nope"]) == 2
    assert "no weight map `nope`" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:   # argparse's usage error
        cli.main(["build", "gpt2", "--preset", "tiny", "-o", str(out), "--save-map", "hf", "--max-shard-size", "lots"])
    assert exit_.value.code == 2 and "`lots` is not a size" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert cli.main(["build", "gpt2", "--preset", "tiny", "-o", str(tmp_path / "file"), "--save-map", "hf",
                     "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "file").read_text() == "x"


RESHAPED = """\
graphformer: 1
name: reshaped
params: {d: 4, k: 3}
dims: {B: 2, n: 5}
inputs:
  x: {shape: [B, d, n]}
nodes:
  conv: {op: conv1d, in: x, out: d, kernel: k, bias: false}
outputs: {y: conv}
weight_maps:
  ref:
    rules:
      - {from: conv.flat, to: conv.weight, reshape: true}
"""


def test_a_rule_the_writer_cannot_invert_is_gf301_at_its_line(tmp_path, capsys):
    path = tmp_path / "reshaped.yaml"
    path.write_text(RESHAPED)
    out = tmp_path / "out"
    assert cli.main(["build", str(path), "-o", str(out), "--save-map", "ref"]) == 1
    err = capsys.readouterr().err
    assert "error[GF301]" in err and "reshaped.yaml:13:" in err and "Traceback" not in err, err
    assert not out.exists()
    # the map says the stored shape: written, and read back to the same weights
    path.write_text(RESHAPED.replace("reshape: true}", "reshape: true, stored_shape: [d, d * k]}"))
    assert cli.main(["build", str(path), "-o", str(out), "--save-map", "ref", "--quiet"]) == 0, \
        capsys.readouterr().err
    from graphformer.weights.maps import convert_state_dict, read_state_dict
    stored = read_state_dict(str(out / "model.safetensors"))
    assert list(stored) == ["conv.flat"] and tuple(stored["conv.flat"].shape) == (4, 12)
    s = graphformer.load(path)
    model = graphformer.build(s, seed=0)
    assert torch.equal(torch.as_tensor(convert_state_dict(s, stored, "ref")["conv.weight"]),
                       model.state_dict()["conv.weight"])


@pytest.mark.parametrize("shape,message", [
    ("[d, d * k + 1]", "holds 52 elements, but the rule makes 48"),
    ("[d, -1]", "size 1 is -1"),
])
def test_a_stored_shape_that_does_not_fit_is_gf302(tmp_path, shape, message):
    from graphformer.frontend.check import check_file
    path = tmp_path / "reshaped.yaml"
    path.write_text(RESHAPED.replace("reshape: true}", f"reshape: true, stored_shape: {shape}}}"))
    diags = [d for d in check_file(str(path)).diagnostics if d.is_error]
    assert [d.code for d in diags] == ["GF302"] and message in diags[0].message, diags
    assert diags[0].span.line == 13


def test_stored_shape_on_a_rule_that_reads_no_single_tensor_is_gf302(tmp_path):
    from graphformer.frontend.check import check_file
    path = tmp_path / "reshaped.yaml"
    path.write_text(RESHAPED.replace("      - {from: conv.flat, to: conv.weight, reshape: true}",
                                     "      - {to: conv.weight, zero: true, stored_shape: [48]}"))
    diags = [d for d in check_file(str(path)).diagnostics if d.is_error]
    assert [d.code for d in diags] == ["GF302"] and "`zero` rule reads no tensor" in diags[0].message, diags


def test_stored_name_keeps_a_run_an_undone_rename_wrote():
    """LLaVA's renames read `language_model.model` as `language_model` and `language_model.lm_head` as `lm_head`:
    the head is written `language_model.lm_head.weight` (the hub's), not `language_model.model.lm_head.weight`."""
    from graphformer.weights.maps import read_name, stored_name
    wmap = get_map(graphformer.load(rt.SPECS / "llava.yaml", preset="tiny"), "hf")
    for name, stored in [("lm_head.weight", "language_model.lm_head.weight"),
                         ("language_model.layers.0.mlp.up_proj.weight", "language_model.model.layers.0.mlp.up_proj.weight"),
                         ("vision_tower.encoder.layers.1.mlp.fc1.weight",
                          "vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight")]:
        assert stored_name(wmap, name) == stored and read_name(wmap, stored) == name


def test_weights_in_the_spec_own_names_convert_to_the_reference(tmp_path, capsys):
    """A model trained in graphformer keeps the spec's names (`build -o`, a state_dict): `--weights` without a map
    reads them, and `--save-map hf` writes them in the reference's names."""
    from safetensors.torch import save_file
    s = rt.spec("gpt2", None, vocab=97, max_len=32, d_model=24, heads=3, layers=2)
    trained = graphformer.build(s, seed=11)
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(tmp_path / "trained.safetensors"))
    argv = ["build", "gpt2", "--set", "vocab=97", "max_len=32", "d_model=24", "heads=3", "layers=2", "--quiet"]
    assert cli.main(argv + ["--weights", str(tmp_path / "trained.safetensors"), "-o", str(tmp_path / "out"),
                            "--save-map", "hf"]) == 0, capsys.readouterr().err
    assert "in the spec's own names" in capsys.readouterr().out
    config = T.GPT2Config(vocab_size=97, n_positions=32, n_embd=24, n_head=3, n_layer=2)
    config.save_pretrained(tmp_path / "out")
    loaded = T.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = trained.eval()(tokens=ids)["logits"], loaded(input_ids=ids).logits
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    # a reference's checkpoint given without its map: exit 1, naming the problem and the option
    save_file({k: v.contiguous() for k, v in loaded.state_dict().items() if k != "lm_head.weight"},
              str(tmp_path / "ref.safetensors"))
    assert cli.main(argv + ["--weights", str(tmp_path / "ref.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "--weights-map" in err and "Traceback" not in err, err
