"""Checkpoints in, runtimes out (issue 28): a transformers save_pretrained directory given where a spec is
expected (build, export, generate, summary), genai_config.json beside a decoder step, dtype aliases,
generate's --device/--dtype, from_pretrained returning the model, and generation switching in and out of
torch.inference_mode on one model. The checkpoint is a tiny random LlamaForCausalLM written offline."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import cli  # noqa: E402
import graphformer  # noqa: E402

T = transformers
T.logging.set_verbosity_error()
PROMPT = [5, 17, 3, 44, 9]
NEW = 8


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(directory, transformers' greedy continuation of PROMPT)."""
    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=97, hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                        num_key_value_heads=1, intermediate_size=72, max_position_embeddings=64, rope_theta=321.0,
                        rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)
    ref = T.LlamaForCausalLM(cfg).eval()
    directory = tmp_path_factory.mktemp("ckpt") / "tiny-llama"
    ref.save_pretrained(directory)
    ref.generation_config.save_pretrained(directory)
    (directory / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    tokenizers = pytest.importorskip("tokenizers")
    words = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(97)}, unk_token="w0"))
    words.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    words.save(str(directory / "tokenizer.json"))
    with torch.no_grad():
        out = ref.generate(torch.tensor([PROMPT]), max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                           pad_token_id=0)
    return directory, out[0, len(PROMPT):].tolist()


def run(capsys, *argv):
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:    # argparse's own usage errors
        rc = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def ids(text: str) -> list[int]:
    return [int(t) for t in text.split()]


def test_generate_takes_the_directory_as_its_spec(llama, capsys):
    directory, want = llama
    rc, out, err = run(capsys, "generate", directory, "--prompt-ids", ",".join(map(str, PROMPT)),
                       "--max-new-tokens", NEW)
    assert rc == 0, err
    assert out.split() == [f"w{t}" for t in PROMPT + want]   # printed through the directory's tokenizer.json
    assert f"imported {directory}: llama config" in err and "random weights" not in err


def test_generate_reads_the_directory_tokenizer(llama, capsys):
    directory, want = llama
    rc, out, err = run(capsys, "generate", directory, "--prompt", " ".join(f"w{t}" for t in PROMPT),
                       "--max-new-tokens", NEW)
    assert rc == 0, err
    assert out.split() == [f"w{t}" for t in PROMPT + want]


def test_generate_weights_dir_defaults_to_the_hf_map(llama, capsys, tmp_path):
    directory, want = llama
    rc, _, err = run(capsys, "import", "hf", directory, "-o", tmp_path / "spec.yaml")
    assert rc == 0, err
    rc, out, err = run(capsys, "generate", tmp_path / "spec.yaml", "--weights", directory, "--prompt-ids",
                       ",".join(map(str, PROMPT)), "--max-new-tokens", NEW, "--dtype", "fp32", "--device", "cpu")
    assert rc == 0, err
    assert ids(out) == want


def test_build_and_summary_take_the_directory(llama, capsys, tmp_path):
    directory, _ = llama
    rc, out, err = run(capsys, "build", directory, "--dtype", "bf16", "-o", tmp_path / "x.safetensors")
    assert rc == 0, err
    assert "bfloat16" in out and "through weight map `hf`" in out and (tmp_path / "x.safetensors").is_file()
    rc, out, err = run(capsys, "summary", directory)
    assert rc == 0 and "32,920" in out, err
    rc, _, err = run(capsys, "build", directory, "--set", "layers=1")   # --set still wins: the weights then don't fit
    assert rc == 1 and "layers" in err


def test_export_with_past_writes_a_directory_runtimes_load(llama, capsys, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    np = pytest.importorskip("numpy")
    directory, want = llama
    out = tmp_path / "out"
    rc, _, err = run(capsys, "export", directory, "--with-past", "-o", f"{out}/")
    assert rc == 0, err
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "genai_config.json", "config.json", "generation_config.json",
            "tokenizer_config.json", "tokenizer.json"} <= names, names
    genai = json.loads((out / "genai_config.json").read_text())
    model, decoder = genai["model"], genai["model"]["decoder"]
    assert (model["type"], model["context_length"], model["vocab_size"]) == ("llama", 64, 97)
    assert (model["bos_token_id"], model["eos_token_id"], model["pad_token_id"]) == (1, 2, 2)
    assert (decoder["num_attention_heads"], decoder["num_key_value_heads"], decoder["head_size"],
            decoder["num_hidden_layers"], decoder["hidden_size"]) == (5, 1, 8, 2, 40)
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert decoder["outputs"]["present_value_names"] == "present.%d.value"
    assert genai["search"]["past_present_share_buffer"] is False
    # the decoder step, driven greedily as a runtime does, continues the prompt as transformers does
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in sess.get_inputs()}
    assert set(decoder["inputs"].values()) - {"past_key_values.%d.key", "past_key_values.%d.value"} <= feed_names
    past = {i.name: np.zeros((1, 1, 0, 8), np.float32) for i in sess.get_inputs()
            if i.name.startswith("past_key_values.")}
    tokens, got = list(PROMPT), []
    step = np.array([tokens])
    for _ in range(NEW):
        n = len(tokens)
        pos = np.arange(n - step.shape[1], n)[None]
        outs = dict(zip([o.name for o in sess.get_outputs()],
                        sess.run(None, {"input_ids": step, "attention_mask": np.ones((1, n), np.int64),
                                        "position_ids": pos, **past})))
        nxt = int(outs["logits"][0, -1].argmax())
        got.append(nxt)
        tokens.append(nxt)
        step = np.array([[nxt]])
        past = {"past_key_values." + k[len("present."):]: v for k, v in outs.items() if k.startswith("present.")}
    assert got == want


def test_export_of_a_spec_writes_genai_config_without_token_ids(capsys, tmp_path):
    onnx = pytest.importorskip("onnx")
    rc, _, err = run(capsys, "export", "specs/gpt2.yaml", "--preset", "tiny", "--with-past", "-o",
                     tmp_path / "gpt2.onnx")
    assert rc == 0, err
    genai = json.loads((tmp_path / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["filename"] == "gpt2.onnx"
    graph = onnx.load(str(tmp_path / "gpt2.onnx")).graph
    named = {v.replace("%d", "0") for v in genai["model"]["decoder"]["inputs"].values()}
    assert named <= {i.name for i in graph.input}        # only the inputs the model has
    assert genai["model"]["decoder"]["num_hidden_layers"] == sum(i.name.endswith(".key") for i in graph.input)
    assert not {"bos_token_id", "eos_token_id"} & set(genai["model"])
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["build", "{d}", "--preset", "tiny"], "--preset tiny"),
    (["build", "specs/gpt2.yaml", "--preset", "tiny", "--dtype", "f8"], "is not a dtype"),
    (["generate", "{d}", "--prompt-ids", "1", "--max-new-tokens", "1", "--device", "meta"], "needs values"),
    (["generate", "{d}", "--prompt-ids", "1", "--max-new-tokens", "1", "--device", "tpu"], "device"),
])
def test_usage_errors_exit_2(llama, capsys, argv, message):
    rc, _, err = run(capsys, *[a.format(d=llama[0]) for a in argv])
    assert rc == 2 and message in err, err


def test_dtype_aliases_in_python():
    from graphformer.base.dtypes import canonical_dtype
    assert [canonical_dtype(x) for x in ("bf16", "FP16", "fp32", "half", "bfloat16", "int8")] == \
        ["bfloat16", "float16", "float32", "float16", "bfloat16", "int8"]
    model = graphformer.build(graphformer.load("specs/gpt2.yaml", "tiny"), dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(graphformer.UsageError, match="unsupported dtype"):
        graphformer.build(graphformer.load("specs/gpt2.yaml", "tiny"), dtype="fp8")


def test_from_pretrained_returns_the_model_with_its_spec(llama):
    directory, want = llama
    model = graphformer.from_pretrained(directory, dtype="fp32")
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.spec.name == "llama" and model.spec.params["kv_heads"] == 1
    out = graphformer.generate(model, torch.tensor([PROMPT]), NEW)
    assert out[0, len(PROMPT):].tolist() == want


def test_generate_in_and_out_of_inference_mode_on_one_model():
    model = graphformer.build(graphformer.load("specs/llama.yaml", "tiny"), seed=0).eval()
    tokens = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        first = graphformer.generate(model, tokens, 4)
    second = graphformer.generate(model, tokens, 4)       # used to raise "Inplace update to inference tensor"
    with torch.inference_mode():
        third = graphformer.generate(model, tokens, 4)
    assert torch.equal(first, second) and torch.equal(second, third)
    assert len(model.__dict__["_graphformer_decoders"]) == 1    # one kept cache, not one per mode
