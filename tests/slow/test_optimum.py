"""optimum, a client nobody here wrote, on the directories `graphformer export DIR --with-past -o out/` writes
from transformers save_pretrained directories (tiny configs, random weights): ORTModelForCausalLM for every
causal family of the catalogue that optimum runs, ORTModelForSeq2SeqLM for T5 (v1.0 and v1.1) and
ORTModelForSpeechSeq2Seq for Whisper generate the greedy tokens of transformers' `generate` (run here, in the
project's environment). optimum-onnx pins transformers < 4.58, so it runs in its own virtual environment
(tests/optimum_venv.py: made once, cached; skipped when it cannot be made, failed under
GRAPHFORMER_STRICT_DEPS=1, where .ci/run has made it), one client process for every directory
(tests/slow/optimum_client.py).

Families optimum does not run as exported here: deepseek-v2 (optimum knows no `deepseek_v2`, and its first
step's empty past would have expanded per-head keys, not the latent the export caches) and llava (not a
causal LM class). optimum derives the empty past of the first step from the config: per-head width
hidden_size / num_attention_heads (head_dim for gemma and gpt_oss), and key/value heads num_key_value_heads
only for the model types it lists (llama, mistral, qwen2, gpt_oss, ...), else num_attention_heads: so the
Mixtral, Gemma-2 and OLMo-2 configs here use as many key/value heads as heads, and Gemma-2's head_dim is
hidden_size / heads (a grouped-query Mixtral or a Gemma-2 with a wider head_dim fails in optimum itself,
at its dummy past, whatever the exporter)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnx")

import cli  # noqa: E402
import optimum_venv  # noqa: E402
import seq2seq_refs as refs  # noqa: E402
from causal_refs import CAUSAL, PROMPT, causal_reference  # noqa: E402

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optimum_client.py")
STRICT = os.environ.get("GRAPHFORMER_STRICT_DEPS") == "1"   # CI: the environment must be there (tests/conftest.py)
NEW = 10
SEQ2SEQ = {"t5": "seq2seq", "t5-v1_1": "seq2seq", "whisper": "speech"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{case: (transformers' tokens, optimum's answer)}: every directory exported, one client run for all."""
    try:
        python = optimum_venv.ensure()
    except optimum_venv.VenvError as e:
        (pytest.fail if STRICT else pytest.skip)(f"{e} (GRAPHFORMER_STRICT_DEPS=1: .ci/run makes it)")
    root = tmp_path_factory.mktemp("optimum")
    requests, want = [], {}
    for name in CAUSAL:
        ckpt, out = root / name, root / f"{name}-onnx"
        want[name] = causal_reference(name, ckpt, NEW)
        assert cli.main(["export", str(ckpt), "--with-past", "-o", f"{out}/"]) == 0, name
        requests.append({"kind": "causal", "dir": str(out), "inputs": {"input_ids": PROMPT,
                         "attention_mask": [[1] * len(PROMPT[0])] * len(PROMPT)}, "max_new_tokens": NEW})
    for name, kind in SEQ2SEQ.items():
        ckpt, out = root / name, root / f"{name}-onnx"
        refs.MODELS[name](ckpt)
        want[name] = refs.reference_tokens(name, ckpt, NEW)
        assert cli.main(["export", str(ckpt), "--with-past", "-o", f"{out}/"]) == 0, name
        requests.append({"kind": kind, "dir": str(out), "inputs": refs.encoder_inputs(name), "max_new_tokens": NEW})
    r = subprocess.run([python, CLIENT], input=json.dumps(requests), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    answers = json.loads(r.stdout.strip().splitlines()[-1])
    return {name: (want[name], answer) for name, answer in zip([*CAUSAL, *SEQ2SEQ], answers)}


@pytest.mark.parametrize("name", [*CAUSAL, *SEQ2SEQ])
def test_optimum_generates_the_tokens_of_transformers(results, name):
    want, got = results[name]
    assert "error" not in got, got.get("trace", got)
    expected = {"t5": "ORTModelForSeq2SeqLM", "t5-v1_1": "ORTModelForSeq2SeqLM", "whisper": "ORTModelForWhisper"}
    assert got["class"] == expected.get(name, "ORTModelForCausalLM")
    tokens = refs.generated(name, got["tokens"]) if name in SEQ2SEQ else got["tokens"]
    assert tokens == want, (name, tokens, want)
    new = [t for row in want for t in row[-NEW:]]
    assert len(set(new)) > 2, want   # the weights say something: not one token repeated
