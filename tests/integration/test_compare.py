"""`graphformer compare`: our build against transformers' model on the same inputs, from the command line."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from graphformer.cli import main  # noqa: E402
from graphformer.specs import __path__ as _specs  # noqa: E402

LLAMA = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, architectures=["LlamaForCausalLM"])
LLAMA_SET = ["vocab=97", "d_model=32", "d_ff=48", "layers=2", "heads=4", "kv_heads=2", "max_len=64", "eps=1e-6",
             "rope_theta=10000"]


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def config_dir(tmp_path, name: str, cfg: dict):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def llama_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare") / "llama"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(d)
    return d


def test_checkpoint_directory_equals(capsys, llama_ckpt):
    rc, out, err = run(capsys, llama_ckpt)
    assert rc == 0, out + err
    assert "LlamaForCausalLM (weights of" in out
    assert "inputs: tokens → input_ids [2, 8]; left out: mask" in out
    assert " logits " in out and " ok" in out and "not compared" in out and "hidden" in out
    assert "Loading weights" not in err   # transformers' own bar is silenced


def test_padded_rows_compared_where_kept(capsys, llama_ckpt):
    rc, out, _ = run(capsys, llama_ckpt, "--padded")
    assert rc == 0 and "equal at the kept positions" in out
    assert "tokens → input_ids [2, 8], mask → attention_mask [2, 8]" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("logits"))
    assert "[2, 8, 97]" not in row   # only the kept positions: fewer than 16 rows


def test_a_spec_that_computes_something_else_is_exit_1(capsys, tmp_path, llama_ckpt):
    text = (_specs[0] + "/llama.yaml")
    wrong = tmp_path / "bidirectional-llama.yaml"
    wrong.write_text(open(text).read().replace("causal: true", "causal: false"))
    rc, out, _ = run(capsys, wrong, "--reference", llama_ckpt, "--set", *LLAMA_SET)
    assert rc == 1
    assert "DIFFERS (largest at" in out and "the spec does not compute what LlamaForCausalLM does" in out


def test_the_config_checked_before_anything_runs(capsys, llama_ckpt):
    rc, _, err = run(capsys, "llama", "--preset", "tiny", "--reference", llama_ckpt)
    assert rc == 1 and "describes another model than the spec" in err and "`heads`" in err


@pytest.mark.parametrize("cfg, outputs", [
    (dict(model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
          intermediate_size=37, max_position_embeddings=64, architectures=["BertModel"]),
     ["last_hidden_state", "pooler_output"]),
    (dict(model_type="t5", vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
          architectures=["T5ForConditionalGeneration"]), ["logits", "encoder_hidden"]),
    (dict(model_type="vit", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
          intermediate_size=37, architectures=["ViTModel"]), ["last_hidden_state", "pooler_output"]),
], ids=["bert", "t5", "vit"])
def test_a_config_alone_gives_a_seeded_random_reference(capsys, tmp_path, cfg, outputs):
    rc, out, err = run(capsys, config_dir(tmp_path, cfg["model_type"], cfg))
    assert rc == 0, out + err
    assert "random weights (seed 0)" in out
    compared = [line.split()[0] for line in out.splitlines() if line.rstrip().endswith(" ok")]
    assert compared == outputs


def test_pairing_by_hand(capsys, llama_ckpt):
    rc, out, _ = run(capsys, llama_ckpt, "--input", "tokens=input_ids", "--output", "logits=logits")
    assert rc == 0
    rc, _, err = run(capsys, llama_ckpt, "--input", "tokens=ids")
    assert rc == 2 and "takes no `ids`" in err and "input_ids" in err
    rc, _, err = run(capsys, llama_ckpt, "--output", "nope=logits")
    assert rc == 2 and "no output `nope`" in err
    rc, _, err = run(capsys, llama_ckpt, "--input", "tokens")
    assert rc == 2 and "OURS=THEIRS" in err


def test_a_spec_input_without_partner_is_named(capsys, tmp_path, llama_ckpt):
    renamed = tmp_path / "ids-llama.yaml"
    renamed.write_text(open(_specs[0] + "/llama.yaml").read().replace("tokens: {shape", "ids: {shape").replace("in: tokens", "in: ids"))
    rc, _, err = run(capsys, renamed, "--reference", llama_ckpt, "--set", *LLAMA_SET)
    assert rc == 2 and "spec input `ids` has no counterpart" in err and "input_ids" in err
    rc, out, _ = run(capsys, renamed, "--reference", llama_ckpt, "--set", *LLAMA_SET, "--input", "ids=input_ids")
    assert rc == 0, out


@pytest.mark.parametrize("cfg, code, expect", [
    ({"model_type": "llama", "architectures": ["os.system"]}, 2, "`os.system` is not a model class of transformers"),
    ({"model_type": "llama", "architectures": ["AutoModel"]}, 2, "is not a model class"),
    ({"model_type": "llama", "architectures": [5]}, 1, "`architectures` is [5]; expected a list"),
    ({"model_type": "not-a-model"}, 2, "not supported"),
])
def test_names_from_a_config_are_looked_up_never_run(capsys, tmp_path, cfg, code, expect):
    rc, _, err = run(capsys, config_dir(tmp_path, "c", {**LLAMA, **cfg}))
    assert rc == code and expect in err, err


def test_pickled_reference_weights_are_refused(capsys, tmp_path):
    d = config_dir(tmp_path, "bin", dict(LLAMA, model_type="llama"))
    (d / "pytorch_model.bin").write_bytes(b"not read")
    rc, _, err = run(capsys, "llama", "--reference", d)
    assert rc == 2 and "safetensors only" in err


def test_usage(capsys, tmp_path):
    rc, _, err = run(capsys, "llama")
    assert rc == 2 and "--reference DIR" in err
    rc, _, err = run(capsys, "llama", "--reference", tmp_path / "missing")
    assert rc == 2
    rc, _, err = run(capsys, "llama", "--reference", tmp_path, "--rtol", "0")
    assert rc == 2 and "--rtol" in err


def test_greedy_tokens_compared(capsys, llama_ckpt):
    rc, out, err = run(capsys, llama_ckpt, "--generate", "12")
    assert rc == 0 and "greedy tokens: equal, 12 new tokens after prompts of 8 in 2 rows" in out, out + err
    rc, _, err = run(capsys, llama_ckpt, "--generate", "-1")
    assert rc == 2 and "--generate" in err


def test_greedy_tokens_of_a_wrong_cache_differ(capsys, tmp_path, llama_ckpt):
    """A window the reference doesn't have: the forward at 8 positions is equal (the window is wider), the
    continuation past it is not."""
    text = open(_specs[0] + "/llama.yaml").read().replace("causal: true", "causal: true, window: 9")
    windowed = tmp_path / "windowed-llama.yaml"
    windowed.write_text(text)
    rc, out, _ = run(capsys, windowed, "--reference", llama_ckpt, "--set", *LLAMA_SET, "--generate", "16")
    assert rc == 1 and "equal: 1 of 1 outputs" in out and "greedy tokens DIFFER first at row" in out, out
