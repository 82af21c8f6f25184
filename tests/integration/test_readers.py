"""One reader for every input file (docs/robustness.md, "Reading"): config.json, tokenizer.json, shard
indexes and weight files are read as regular files only (a FIFO, /dev/zero or a directory is exit 2, never a
hang or an unbounded read), within a limit per kind, and names a directory's own data gives stay inside it.
Then a table of type-confused config.json fields, each refused cleanly (exit 1, the field and value
named) by `import hf`, `build --weights DIR` and `from_pretrained`. No transformers: the checkpoint is
written from a graphformer build through the `hf` map's inverse."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import cli
import graphformer
from graphformer.base import reading
from graphformer.base.errors import WeightFileError
from graphformer.frontend.hf import HFImportError, read_config

LLAMA = {"model_type": "llama", "vocab_size": 97, "hidden_size": 40, "num_hidden_layers": 1,
         "num_attention_heads": 5, "num_key_value_heads": 1, "intermediate_size": 72,
         "max_position_embeddings": 64, "rope_theta": 321.0, "rms_norm_eps": 1e-6, "hidden_act": "silu",
         "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False}


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def write_json(path, data):
    path.write_text(json.dumps(data, allow_nan=True))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A save_pretrained-like directory (config.json, model.safetensors) and its imported spec."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("torch")
    from safetensors.numpy import save_file
    from graphformer.weights.maps import to_reference
    root = tmp_path_factory.mktemp("ckpt")
    ckpt = root / "ckpt"
    ckpt.mkdir()
    write_json(ckpt / "config.json", LLAMA)
    assert cli.main(["import", "hf", str(ckpt), "-o", str(root / "spec.yaml")]) == 0
    spec = graphformer.load(root / "spec.yaml")
    model = graphformer.build(spec)
    state = to_reference(spec, {k: v.detach().numpy() for k, v in model.state_dict().items()}, "hf")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(ckpt / "model.safetensors"))
    return ckpt, root / "spec.yaml"


def copy_of(checkpoint, tmp_path, config=None):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint[0], ckpt)
    if config is not None:
        write_json(ckpt / "config.json", config)
    return ckpt


# ---------------------------------------------------------------- not a regular file, too big

def test_reader_refuses_what_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "dir").mkdir()
    for name, why in (("fifo", "not a regular file"), ("zero", "not a regular file"), ("dir", "a directory"),
                      ("missing", "no such file")):
        with pytest.raises(reading.FileProblem, match=why):
            reading.read_input(tmp_path / name, "config")


def test_reader_bounds_every_kind(tmp_path):
    for kind, limit in reading.LIMITS.items():
        big = tmp_path / kind
        with open(big, "wb") as fh:
            fh.truncate(limit + 1)      # sparse: the size is refused before a byte is read
        with pytest.raises(reading.FileProblem, match=f"limit for a {kind} file is {limit:,}"):
            reading.read_input(big, kind)


@pytest.mark.parametrize("kind", ["fifo", "zero", "dir", "big"])
def test_config_json_that_is_no_regular_file_is_exit_2(tmp_path, capsys, kind):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    cfg = ckpt / "config.json"
    if kind == "fifo":
        os.mkfifo(cfg)
    elif kind == "zero":
        (tmp_path / "zero").symlink_to("/dev/zero")
        cfg.symlink_to(tmp_path / "zero")
    elif kind == "dir":
        cfg.mkdir()
    else:
        write_json(cfg, {**LLAMA, "pad": " " * reading.LIMITS["config"]})
    rc, _, err = run(capsys, "import", "hf", ckpt)
    assert rc == 2 and "config.json" in err, err
    with pytest.raises(HFImportError) as e:
        graphformer.from_pretrained(ckpt)
    assert e.value.code == 2
    if kind != "zero":   # named directly, the file itself is refused; `zero` is also a link out of ckpt
        rc, _, err = run(capsys, "import", "hf", cfg)
        assert rc == 2, err


def test_config_json_linking_out_of_its_directory_is_refused(tmp_path, capsys):
    outside = write_json(tmp_path / "elsewhere.json", LLAMA)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").symlink_to(outside)
    rc, _, err = run(capsys, "import", "hf", ckpt)
    assert rc == 2 and "outside" in err
    assert read_config(outside)["model_type"] == "llama"   # named by the user itself, a file is read


def test_config_json_nesting_too_deeply_is_exit_2(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    rc, _, err = run(capsys, "import", "hf", cfg)
    assert rc == 2 and "nests too deeply" in err


@pytest.mark.parametrize("kind", ["fifo", "zero", "big"])
def test_tokenizer_that_is_no_regular_file_is_exit_2(tmp_path, capsys, kind):
    pytest.importorskip("tokenizers")
    tok = tmp_path / "tokenizer.json"
    if kind == "fifo":
        os.mkfifo(tok)
    elif kind == "zero":
        tok.symlink_to("/dev/zero")
    else:
        with open(tok, "wb") as fh:
            fh.truncate(reading.LIMITS["tokenizer"] + 1)
    rc, _, err = run(capsys, "generate", "specs/gpt2.yaml", "--preset", "tiny", "--tokenizer", tok,
                     "--prompt", "hi", "--max-new-tokens", "1")
    assert rc == 2 and "--tokenizer" in err and ("regular file" in err or "limit" in err), err


def test_tokenizer_is_read_through_the_reader(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from graphformer.commands.generate import _tokenizer
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"hi": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    assert _tokenizer(str(tmp_path / "tokenizer.json")).encode("hi there").ids == [0, 1]


# ---------------------------------------------------------------- weight files and shard indexes

def shard_index(ckpt, shard_name):
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00001.safetensors")
    keys = list(json.loads((ckpt / "model-00001-of-00001.safetensors").read_bytes()[8:][
        :int.from_bytes((ckpt / "model-00001-of-00001.safetensors").read_bytes()[:8], "little")]))
    write_json(ckpt / "model.safetensors.index.json",
               {"metadata": {}, "weight_map": {k: shard_name for k in keys if k != "__metadata__"}})


@pytest.mark.parametrize("case", ["dotdot", "absolute", "link-out", "not-a-string"])
def test_shard_index_naming_a_file_outside_the_directory_is_refused(checkpoint, tmp_path, capsys, case):
    ckpt = copy_of(checkpoint, tmp_path)
    outside = tmp_path / "x.safetensors"
    shutil.copy(ckpt / "model.safetensors", outside)   # a valid file: reading it would load silently
    shard_index(ckpt, {"dotdot": "../x.safetensors", "absolute": str(outside), "link-out": "link.safetensors",
                       "not-a-string": ["x"]}[case])
    (ckpt / "link.safetensors").symlink_to(outside)
    rc, _, err = run(capsys, "build", checkpoint[1], "--weights", ckpt)
    assert rc == 2 and "--weights" in err and ("outside" in err or "leaves" in err or "absolute" in err
                                                or "not a file name" in err), err
    with pytest.raises(WeightFileError):
        graphformer.from_pretrained(ckpt)


def test_shards_inside_the_directory_and_the_hub_cache_layout_load(checkpoint, tmp_path, capsys):
    ckpt = copy_of(checkpoint, tmp_path)
    shard_index(ckpt, "model-00001-of-00001.safetensors")
    rc, _, err = run(capsys, "build", checkpoint[1], "--weights", ckpt)
    assert rc == 0, err
    # the Hugging Face cache: snapshots/<rev>/<file> are links into ../../blobs/
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    for f in ckpt.iterdir():
        shutil.copy(f, repo / "blobs" / f.name)
        (snap / f.name).symlink_to(os.path.join("..", "..", "blobs", f.name))
    rc, _, err = run(capsys, "build", checkpoint[1], "--weights", snap)
    assert rc == 0, err
    spec = graphformer.from_pretrained(snap).spec
    assert spec.params["d_model"] == 40


@pytest.mark.parametrize("case", ["fifo", "zero", "huge-header", "header-past-end"])
def test_weight_file_that_is_no_safetensors_file_is_refused(tmp_path, capsys, case):
    from graphformer.weights.maps import read_state_dict
    path = tmp_path / "w.safetensors"
    if case == "fifo":
        os.mkfifo(path)
    elif case == "zero":
        path.symlink_to("/dev/zero")
    else:
        size = 2**40 if case == "huge-header" else 64
        path.write_bytes(size.to_bytes(8, "little") + b"{}")
    with pytest.raises(WeightFileError, match="regular file|header"):
        read_state_dict(str(path))
    rc, _, err = run(capsys, "build", "specs/gpt2.yaml", "--preset", "tiny", "--weights", path,
                     "--weights-map", "hf")
    assert rc == 2, err


# ---------------------------------------------------------------- type-confused config fields

def deep(n):
    v = 1
    for _ in range(n):
        v = [v]
    return v


# (family base, field, value): every one a clean refusal naming the field
BAD_FIELDS = [
    ("llama", "hidden_act", ["silu"]),                     # a list for a string
    ("llama", "rms_norm_eps", float("nan")),
    ("llama", "rope_theta", float("inf")),
    ("llama", "num_attention_heads", 0),
    ("llama", "num_attention_heads", 2_000_000_000),       # with a string head_dim: 2 GB before
    ("llama", "num_hidden_layers", -1),
    ("llama", "hidden_size", 10**400),
    ("llama", "vocab_size", "97"),
    ("llama", "intermediate_size", 72.5),
    ("llama", "num_key_value_heads", True),                # a bool for an int
    ("llama", "max_position_embeddings", None),
    ("llama", "head_dim", "x"),
    ("llama", "attention_bias", "yes"),
    ("llama", "tie_word_embeddings", 1),                   # an int for a bool
    ("llama", "rope_scaling", "llama3"),                   # a string for an object
    ("llama", "rope_parameters", {"rope_type": "llama3", "factor": "8", "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    ("llama", "rope_parameters", {"rope_type": ["llama3"]}),
    ("llama", "rope_scaling", {"rope_type": "llama3", "factor": None}),
    ("llama", "hidden_act", deep(500)),                    # nested: no recursion in the message
    ("mistral", "sliding_window", -5),
    ("qwen2", "layer_types", "full_attention"),
    ("mixtral", "num_experts_per_tok", 0),
    ("phi", "partial_rotary_factor", "0.5"),
    ("gpt2", "n_inner", [3]),
    ("gpt2", "activation_function", {"gelu": 1}),
    ("vit", "image_size", [224, "224"]),
    ("vit", "id2label", ["cat", "dog"]),
    ("swin", "depths", None),
    ("swin", "num_heads", [3, 6, 12, -24]),
    ("swin", "mlp_ratio", float("nan")),
    ("bert", "type_vocab_size", -1),
    ("clip", "text_config", "x"),
    ("clip", "vision_config", {"num_attention_heads": 0}),
    ("whisper", "encoder_layers", 1e9),
    ("decision_transformer", "state_dim", {"": 1}),
]
BASES = {"llama": LLAMA, "mistral": {**LLAMA, "model_type": "mistral"}}


def bad_config(family, field, value):
    base = dict(BASES.get(family, {"model_type": family}))
    if field == "head_dim":
        base["num_attention_heads"] = 2_000_000_000
    if "." not in field:
        base[field] = value
    return base


def test_every_field_a_family_reads_has_a_type():
    from graphformer.frontend import hf
    tables = [f.fields for f in hf.FAMILIES.values()] + [hf.CLIP_TEXT, hf.CLIP_VISION]
    read = {name for t in tables for name in t} | hf.ROPE_READ | {
        "sliding_window", "use_sliding_window", "layer_types", "partial_rotary_factor", "num_key_value_heads",
        "depths", "num_heads", "mlp_ratio", "num_labels", "id2label", "pooler_output_size", "text_config",
        "vision_config", "eos_token_id"}
    assert read - set(hf.FIELD_TYPES) == set()


@pytest.mark.parametrize("family,field,value", BAD_FIELDS, ids=lambda v: str(v)[:20])
def test_type_confused_field_is_refused_by_import_and_from_pretrained(tmp_path, capsys, family, field, value):
    cfg = bad_config(family, field, value)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    write_json(ckpt / "config.json", cfg)
    rc, out, err = run(capsys, "import", "hf", ckpt, "-o", tmp_path / "x.yaml")
    named = f"`{field}"   # (nested fields are named `field.key`)
    assert rc == 1 and named in err and len(err) < 600, err
    assert not (tmp_path / "x.yaml").exists()
    with pytest.raises(HFImportError) as e:
        graphformer.from_pretrained(ckpt)
    assert e.value.code == 1 and named in str(e.value)


@pytest.mark.parametrize("family,field,value", [c for c in BAD_FIELDS if c[0] == "llama"][:8],
                         ids=lambda v: str(v)[:20])
def test_type_confused_field_is_refused_by_build_weights_dir(checkpoint, tmp_path, capsys, family, field, value):
    ckpt = copy_of(checkpoint, tmp_path, bad_config(family, field, value))
    rc, _, err = run(capsys, "build", checkpoint[1], "--weights", ckpt)
    assert rc == 1 and f"`{field}" in err, err


def test_model_type_of_the_wrong_type_is_exit_2(tmp_path, capsys):
    rc, _, err = run(capsys, "import", "hf", write_json(tmp_path / "config.json", {"model_type": ["llama"]}))
    assert rc == 2 and "`model_type`" in err


# ---------------------------------------------------------------- what import hf writes

def test_a_directory_name_with_a_newline_cannot_inject_yaml(checkpoint, tmp_path, capsys):
    ckpt = tmp_path / "x\nnodes: {}\nname: pwned\n#\u2028y"
    shutil.copytree(checkpoint[0], ckpt)
    rc, out, err = run(capsys, "import", "hf", ckpt, "-o", tmp_path / "s.yaml")
    assert rc == 0, err
    text = (tmp_path / "s.yaml").read_text()
    header = [line for line in text.splitlines() if "imported by" in line]
    assert len(header) == 1 and "\\n" in header[0] and "\\u2028" in header[0]
    assert "pwned" not in graphformer.load(tmp_path / "s.yaml").name
    assert "\n" not in err.split("next:")[1].rstrip("\n")   # the hint shows the name escaped


def test_from_pretrained_builds_nothing_a_few_bytes_of_weights_cannot_fill(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    write_json(ckpt / "config.json", {"model_type": "gpt2", "vocab_size": 97, "n_embd": 40, "n_layer": 1,
                                      "n_head": 5, "n_positions": 1 << 24})   # 671M parameters
    (ckpt / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    with pytest.raises(WeightFileError, match="fewer than the 671,112,320 parameters"):
        graphformer.from_pretrained(ckpt)


def test_torch_weight_files_are_memory_mapped_and_the_old_format_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from graphformer.weights.maps import read_state_dict
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(sd, tmp_path / "new.bin")
    assert torch.equal(read_state_dict(str(tmp_path / "new.bin"))["w"], sd["w"])
    torch.save(sd, tmp_path / "old.bin", _use_new_zipfile_serialization=False)   # sizes from its pickle
    with pytest.raises(WeightFileError, match="mmap"):
        read_state_dict(str(tmp_path / "old.bin"))
    os.mkfifo(tmp_path / "fifo.bin")
    with pytest.raises(WeightFileError, match="regular file"):
        read_state_dict(str(tmp_path / "fifo.bin"))


def test_shard_index_listing_too_many_files_is_refused(tmp_path):
    from graphformer.weights.checkpoint import MAX_SHARDS, checkpoint_files
    write_json(tmp_path / "model.safetensors.index.json",
               {"weight_map": {f"t{i}": f"s{i}.safetensors" for i in range(MAX_SHARDS + 1)}})
    with pytest.raises(WeightFileError, match="the limit is 10,000"):
        checkpoint_files(str(tmp_path))


def test_build_weights_dir_with_a_fifo_config_is_exit_2(checkpoint, tmp_path, capsys):
    ckpt = copy_of(checkpoint, tmp_path)
    (ckpt / "config.json").unlink()
    os.mkfifo(ckpt / "config.json")
    rc, _, err = run(capsys, "build", checkpoint[1], "--weights", ckpt)
    assert rc == 2 and "not a regular file" in err, err
