"""ONNX export with past keys and values (`to_onnx(..., with_past=True)`, `graphformer export --with-past`):
a prompt and then one token at a time run in ONNX Runtime through `past_key_values.{i}.*` → `present.{i}.*`,
and every step's logits equal the torch build's cached decoder (graphformer.backends.torch.generation.Decoder) to 1e-5 ×
their scale; greedy tokens equal `graphformer.generate` and, from transformers' weights, transformers' `generate`; a chunk of several tokens after a past equals a
full recompute; specs that are no decoder are refused with a code."""
from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import graphformer as gf  # noqa: E402
from graphformer.backends.onnx import export_onnx, to_onnx  # noqa: E402
from graphformer.backends.torch.generation import Decoder  # noqa: E402
from parity import prompts as parity_prompts  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTOL = 1e-5
NEW = 20


def build(name: str):
    """The tiny spec's torch build, weights perturbed off the init's zero biases and unit scales."""
    spec = gf.load(os.path.join(ROOT, "specs", f"{name}.yaml"), "tiny")
    model = gf.build(spec, seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return spec, model


def session(model_proto) -> "ort.InferenceSession":
    return ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])


class OrtDecoder:
    """A greedy loop's bookkeeping around the exported step, as a runtime would do it: the attention mask
    grows by one column per token, positions count each row's real tokens, presents become the next past."""

    def __init__(self, sess):
        self.sess = sess
        self.inputs = {i.name: i for i in sess.get_inputs()}
        self.outputs = [o.name for o in sess.get_outputs()]

    def prompt(self, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Logits [B, n, vocab] of the prompt, past = 0."""
        b = ids.shape[0]
        self.mask = np.ones_like(ids) if mask is None else mask
        self.seen = self.mask.sum(1, keepdims=True)
        positions = np.where(self.mask > 0, self.mask.cumsum(1) - 1, 1)   # transformers' left-padding positions
        past = {k: np.zeros((b, i.shape[1], 0, i.shape[3]), np.float32) for k, i in self.inputs.items()
                if k.startswith("past_key_values.")}
        return self._run(ids, positions, past)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """tokens [B, k] after the past → logits [B, k, vocab]."""
        k = tokens.shape[1]
        self.mask = np.concatenate([self.mask, np.ones_like(tokens)], axis=1)
        positions = self.seen + np.arange(k)
        self.seen = self.seen + k
        past = {"past_key_values." + name[len("present."):]: v for name, v in self.present.items()}
        return self._run(tokens, positions, past)

    def greedy(self, ids: "torch.Tensor", mask: "torch.Tensor | None", new: int) -> np.ndarray:
        """The `new` greedy tokens [B, new] after the prompt: the argmax of each step fed to the next."""
        tokens = [self.prompt(ids.numpy(), None if mask is None else mask.numpy())[:, -1].argmax(-1)]
        while len(tokens) < new:
            tokens.append(self.step(tokens[-1][:, None])[:, -1].argmax(-1))
        return np.stack(tokens, 1)

    def _run(self, ids, positions, past):
        feed = {"input_ids": ids.astype(np.int64), **past}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = self.mask.astype(np.int64)
        if "position_ids" in self.inputs:
            feed["position_ids"] = positions.astype(np.int64)
        out = dict(zip(self.outputs, self.sess.run(None, feed)))
        self.present = {k: v for k, v in out.items() if k.startswith("present.")}
        return out["logits"]


def assert_close(got: np.ndarray, want, where: str) -> None:
    want = want.numpy() if hasattr(want, "numpy") else want
    assert got.shape == want.shape, f"{where}: shape {got.shape} vs {want.shape}"
    err, scale = float(np.abs(got - want).max()), max(1.0, float(np.abs(want).max()))
    assert err <= RTOL * scale, f"{where}: max abs err {err:.3g} (scale {scale:.3g})"


def prompts(b=3, n=6, padded=False):
    return parity_prompts(b, n, padded)


# llama: grouped-query heads, rotary; gpt2: learned position table, no mask input; mistral: a window of
# 5, passed many times over; qwen2: multi-query with q/k/v biases; phi-2: partial rotary; mixtral: experts;
# gemma2: soft-caps, window 4 in every other layer; olmo2: q/k norm over the whole projection.
CASES = [("llama", True), ("gpt2", False), ("mistral-7b", True), ("qwen2", True), ("phi-2", False),
         ("mixtral-8x7b", False), ("gemma2", True), ("olmo2", True)]


@pytest.mark.parametrize("name,padded", CASES)
def test_prompt_then_steps_equal_the_torch_decoder(name, padded):
    spec, model = build(name)
    ort_dec = OrtDecoder(session(to_onnx(spec, model, with_past=True)))
    ids, mask = prompts(padded=padded)
    seq = gf.generate(model, ids, NEW, mask=mask)                     # the torch build's greedy tokens
    dec = Decoder(model, 3, seq.shape[1])
    with torch.no_grad():
        full = model(tokens=ids, **({"mask": mask} if mask is not None else {}))["logits"]
        want = dec.prompt(ids, mask)
    got = ort_dec.prompt(ids.numpy(), None if mask is None else mask.numpy())
    keep = np.ones(ids.shape, bool) if mask is None else mask.numpy().astype(bool)
    assert_close(got[keep], full.numpy()[keep], f"{name} prompt, every real position")
    assert_close(got[:, -1], want, f"{name} prompt")
    tokens = [got[:, -1].argmax(-1)]
    for t in range(ids.shape[1], seq.shape[1] - 1):
        with torch.no_grad():
            want = dec.step(seq[:, t])
        got = ort_dec.step(tokens[-1][:, None])[:, -1]
        assert_close(got, want, f"{name} step {t}")
        tokens.append(got.argmax(-1))
    assert np.array_equal(np.stack(tokens, 1), seq[:, ids.shape[1]:].numpy()), f"{name}: greedy tokens differ"


@pytest.mark.parametrize("case,padded", [("gpt2", False), ("llama", True), ("mistral-window", True)])
def test_greedy_tokens_equal_transformers_generate(case, padded):
    """Hugging Face weights through the spec's `hf` map: the ONNX Runtime loop's tokens are transformers'."""
    pytest.importorskip("transformers")
    from parity import assert_same_tokens, hf_greedy
    from test_generate import reference_pair
    spec, ref, _ = reference_pair(case)
    dec = OrtDecoder(session(to_onnx(spec, ref.state_dict(), weights_map="hf", with_past=True)))
    ids, mask = prompts(n=8, padded=padded)
    assert_same_tokens(dec.greedy(ids, mask, NEW), hf_greedy(ref, ids, mask, NEW)[:, 8:], f"{case} onnx")


@pytest.mark.parametrize("name", ["llama", "mistral-7b", "gpt2"])
def test_several_tokens_after_a_past_equal_a_full_recompute(name):
    """A chunk of 4 after a prompt of 6 (and then 7 more in one go, past the window of 5): the causal band is
    offset by the past's length."""
    spec, model = build(name)
    ort_dec = OrtDecoder(session(to_onnx(spec, model, with_past=True)))
    ids = torch.randint(0, 97, (2, 17), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(tokens=ids)["logits"].numpy()
    ort_dec.prompt(ids[:, :6].numpy())
    assert_close(ort_dec.step(ids[:, 6:10].numpy()), full[:, 6:10], f"{name} chunk 6:10")
    assert_close(ort_dec.step(ids[:, 10:17].numpy()), full[:, 10:17], f"{name} chunk 10:17")


def test_a_window_layer_may_keep_only_the_last_window_of_its_past():
    """Mistral's window is 5: a runtime that trims the past (and the mask) to the last 4 columns after each
    step gets the same logits as one that keeps everything, since the band is relative to the cache's end."""
    spec, model = build("mistral-7b")
    sess = session(to_onnx(spec, model, with_past=True))
    full, trimmed = OrtDecoder(sess), OrtDecoder(sess)
    ids, mask = prompts(padded=True)
    a, b = full.prompt(ids.numpy(), mask.numpy()), trimmed.prompt(ids.numpy(), mask.numpy())
    for t in range(12):
        trimmed.present = {k: v[:, :, -4:] for k, v in trimmed.present.items()}
        trimmed.mask = trimmed.mask[:, -4:]
        nxt = a[:, -1].argmax(-1)[:, None]
        a, b = full.step(nxt), trimmed.step(nxt)
        assert_close(b, a, f"step {t}")
    assert full.present["present.0.key"].shape[2] == 6 + 12 and trimmed.present["present.0.key"].shape[2] == 5


@pytest.mark.parametrize("opset", [17, 21])
def test_interface_names_shapes_and_checks(opset):
    spec, model = build("llama")   # heads 6, kv_heads 2, head_dim 8, 2 layers
    m = to_onnx(spec, model, opset=opset, with_past=True)
    onnx.checker.check_model(m, full_check=True)
    onnx.shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    ins = {i.name: dims(i) for i in m.graph.input}
    outs = {o.name: dims(o) for o in m.graph.output}
    cache = [f"{i}.{kind}" for i in range(2) for kind in ("key", "value")]
    assert list(ins) == ["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{c}" for c in cache]
    assert ins["input_ids"] == ins["position_ids"] == ["B", "n"] and ins["attention_mask"] == ["B", "past + n"]
    assert ins["past_key_values.1.value"] == ["B", 2, "past", 8]       # kv_heads, not heads
    assert list(outs) == ["logits", "hidden"] + [f"present.{c}" for c in cache]
    assert outs["present.0.key"] == ["B", 2, "past + n", 8] and outs["logits"] == ["B", "n", 97]
    # the initializers are still exactly the weights
    assert {t.name for t in m.graph.initializer} == set(model.state_dict())


def test_written_file_equals_the_in_memory_model(tmp_path):
    spec, model = build("gpt2")
    inline, external = tmp_path / "a.onnx", tmp_path / "b.onnx"
    export_onnx(spec, model, inline, with_past=True)
    export_onnx(spec, model, external, with_past=True, external_data_threshold=0)
    want = to_onnx(spec, model, with_past=True)
    assert onnx.load(str(inline)) == want
    loaded = onnx.load(str(external))
    assert [i.name for i in loaded.graph.input] == [i.name for i in want.graph.input]
    assert [o.name for o in loaded.graph.output] == [o.name for o in want.graph.output]


def test_a_spec_that_is_no_decoder_is_refused_with_a_code():
    spec = gf.load(os.path.join(ROOT, "specs", "bert-base.yaml"), "tiny")
    with pytest.raises(gf.SpecError) as e:
        to_onnx(spec, None, with_past=True)
    d = e.value.diagnostics[0]
    assert d.code == "GF211" and d.node == "encoder.0.attn" and "not causal" in d.message


def _cli(*argv) -> int:
    """The package's CLI (the top-level cli.py only forwards to it; test_onnx_export runs that one)."""
    from graphformer.cli import main
    return main(list(argv))


def test_cli_writes_a_decoder_step(tmp_path, capsys):
    out = tmp_path / "llama.onnx"
    assert _cli("export", os.path.join(ROOT, "specs", "llama.yaml"), "--preset", "tiny", "--with-past",
                "-o", str(out)) == 0
    assert "with past keys and values" in capsys.readouterr().err
    assert "past_key_values.0.key" in {i.name for i in onnx.load(str(out)).graph.input}


@pytest.mark.parametrize("spec,code", [("bert-base", "GF211"), ("decoder-block", "GF211"),
                                       ("decision-transformer", "GF213"), ("perceiver-io", "GF211")])
def test_cli_refuses_specs_that_are_no_decoder(tmp_path, capsys, spec, code):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    assert _cli("export", os.path.join(ROOT, "specs", f"{spec}.yaml"), "--preset", "tiny", "--with-past",
                "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert f"error[{code}]" in err and "Traceback" not in err
    assert out.read_bytes() == b"previous"


BIASED = """
graphformer: 1
name: biased
params: {d: 16, heads: 2, vocab: 50}
dims: {B: 2, n: 5}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  alibi:  {shape: [1, heads, n, n]}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d}
  attn:   {op: attention, in: {x: tok, bias: alibi}, heads: heads, causal: true}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""


def test_a_logit_bias_is_refused(tmp_path):
    path = tmp_path / "biased.yaml"
    path.write_text(BIASED)
    with pytest.raises(gf.SpecError) as e:
        to_onnx(gf.load(str(path)), None, with_past=True)
    d = e.value.diagnostics[0]
    assert d.code == "GF211" and d.node == "attn" and "logit `bias`" in d.message
