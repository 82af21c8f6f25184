"""GPT-J against transformers GPTJForCausalLM, built offline from a tiny odd config (4 heads of 10, rotary on
6 of them in interleaved pairs: partial and interleaved together) with perturbed weights, loaded through the
spec's own `hf` map: logits with and without left padding, gradients, greedy tokens against transformers'
`generate` (the KV cache), ONNX Runtime against torch (and the decoder step with past), `import hf`, and the
parameter count of GPT-J-6B on the meta device."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import (assert_close, assert_greedy_tokens, assert_lm_grads, assert_lm_logits,  # noqa: E402
                    assert_onnx_logits, hf_greedy, imported, lm_batch, ours, prompts)

T = transformers
T.logging.set_verbosity_error()
SPECS = Path(__file__).resolve().parents[2] / "specs"
V = 97
TINY = dict(vocab_size=V, n_embd=40, n_layer=2, n_head=4, rotary_dim=6, n_inner=56, n_positions=64,
            bos_token_id=1, eos_token_id=2)


def reference(**kw):
    torch.manual_seed(0)
    ref = T.GPTJForCausalLM(T.GPTJConfig(**{**TINY, **kw}))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():   # norm scales and biases away from 1 and 0, so a wrong map can't hide
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return ref.eval()


def pair(**sets):
    ref = reference()
    spec = graphformer.load(SPECS / "gpt-j.yaml", preset="tiny", overrides=sets)
    return spec, ref, ours(spec, ref)


def test_logits_equal_transformers_with_and_without_padding():
    spec, ref, model = pair()
    ids, mask = lm_batch(V)
    assert_lm_logits(model, ref, ids, mask, "gpt-j")


def test_the_rotate_half_layout_would_be_far_off(tmp_path):
    """The same weights through Llama's rotate-half layout miss: the interleaved pairs are what GPT-J needs."""
    spec, ref, model = pair()
    path = tmp_path / "gpt-j.yaml"
    path.write_text((SPECS / "gpt-j.yaml").read_text().replace("rope_interleaved: true", "rope_interleaved: false"))
    halves = ours(graphformer.load(path, preset="tiny"), ref)
    ids, _ = lm_batch(V)
    with torch.no_grad():
        want = ref(input_ids=ids).logits
        assert (halves(tokens=ids)["logits"] - want).abs().max() > 1e-2
        assert_close(model(tokens=ids)["logits"], want, "gpt-j logits, interleaved")


def test_gradients_equal_transformers():
    spec, ref, model = pair()
    ids, mask = lm_batch(V)
    assert_lm_grads(model, ref, spec, ids, "gpt-j", mask=mask)


@pytest.mark.parametrize("padded", [False, True])
def test_greedy_tokens_equal_transformers_generate(padded):
    spec, ref, model = pair()
    assert_greedy_tokens(model, ref, *prompts(padded=padded), 20, f"gpt-j, padded={padded}")


def test_onnx_runtime_equals_torch_with_a_padding_mask():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    spec, ref, model = pair()
    ids, mask = lm_batch(V)
    with torch.no_grad():
        want = model(tokens=ids, mask=mask)["logits"]
    assert_onnx_logits(to_onnx(spec, model, inputs=["mask"]), ids, mask, want, "gpt-j onnx logits")


def test_onnx_with_past_steps_equal_torch_and_give_transformers_tokens():
    pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    from graphformer.backends.torch.generation import Decoder
    from test_onnx_past import OrtDecoder, session
    spec, ref, model = pair()
    dec = OrtDecoder(session(to_onnx(spec, ref.state_dict(), weights_map="hf", with_past=True)))
    ids, mask = prompts(padded=True)
    want = hf_greedy(ref, ids, mask, 10)
    torch_dec = Decoder(model, 3, want.shape[1])
    with torch.no_grad():
        first = dec.prompt(ids.numpy(), mask.numpy())[:, -1]
        assert_close(torch.from_numpy(first), torch_dec.prompt(ids, mask), "gpt-j onnx prompt step")
        tokens = [first.argmax(-1)]
        while len(tokens) < 10:
            step = dec.step(tokens[-1][:, None])[:, -1]
            assert_close(torch.from_numpy(step), torch_dec.step(torch.from_numpy(tokens[-1])),
                         f"gpt-j onnx step {len(tokens)}")
            tokens.append(step.argmax(-1))
    assert np.array_equal(np.stack(tokens, 1), want[:, 8:].numpy())


def test_parameter_count_of_gpt_j_6b_equals_transformers_on_meta():
    spec = graphformer.load(SPECS / "gpt-j.yaml", preset="gpt-j-6b")
    with torch.device("meta"):
        ref = T.GPTJForCausalLM(T.GPTJConfig())   # the published EleutherAI/gpt-j-6b config's values
    assert total_params(spec.ir) == sum(p.numel() for p in ref.parameters()) == 6_050_882_784
    assert len(convert_state_dict(spec, ref.state_dict(), "hf")) == len(
        dict(graphformer.build(spec, device="meta").named_parameters()))


def test_import_hf_then_checkpoint_equals_transformers(tmp_path, capsys):
    ref = reference()
    spec, model = imported(ref, tmp_path, capsys)
    assert_lm_logits(model, ref, *lm_batch(V), "gpt-j imported")


@pytest.mark.parametrize("cfg,message", [
    ({"rotary_dim": 5}, "needs an even number"),
    ({"rotary_dim": 12}, "no wider than the head"),
    ({"rotary_dim": None}, "fits only a single head"),
    ({"tie_word_embeddings": True}, "untied"),
])
def test_import_hf_refuses_what_the_spec_cannot_say(cfg, message):
    from graphformer.frontend.hf import HFImportError, convert_config
    with pytest.raises(HFImportError, match=message):
        convert_config({"model_type": "gptj", **TINY, **cfg})
