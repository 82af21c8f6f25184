"""One decoder plan (decoding.py) for `graphformer.generate` and `export --with-past`: a spec one path refuses,
the other refuses with the same code; every bundled causal spec decodes token by token to exactly what greedy
full recomputation gives."""
from __future__ import annotations

from pathlib import Path

import pytest

import graphformer
from graphformer.analysis.decoding import plan_decoder
from graphformer.base.diagnostics import SpecError

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"

# A causal LM with a convolution over the sequence before its attention: each position of `conv` reads its
# neighbours (padding 1 at both ends: not causal), so a step over the new token alone computes something else,
# and no carried state helps (GF293; a causal one would carry its last frames). It checks ok.
CONV_LM = """\
graphformer: 1
name: conv-lm
params: {vocab: 50, d: 16, heads: 2}
dims: {B: 2, n: 8}
inputs:
  tokens: {shape: [B, n], dtype: int64}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d}
  chans:  {op: transpose}
  conv:   {op: conv1d, out: d, kernel: 3, padding: 1}
  seq:    {op: transpose}
  attn:   {op: attention, heads: heads, causal: true}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""


def _spec(tmp_path, text=CONV_LM, name="conv-lm.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_conv_probe_checks_ok_and_both_planners_refuse_it_with_gf293(tmp_path):
    spec = graphformer.load(str(_spec(tmp_path)))
    for outputs, stages in ((("logits",), True), (None, False)):   # generate's reading, then the ONNX step's
        with pytest.raises(SpecError) as e:
            plan_decoder(spec.ir, outputs, stages=stages)
        d = e.value.diagnostics[0]
        assert (d.code, d.node) == ("GF293", "conv") and d.span is not None


def test_generate_refuses_the_probe_with_the_code_export_with_past_gives(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from graphformer.backends.onnx import to_onnx
    from graphformer.backends.torch.generation import GenerationError
    spec = graphformer.load(str(_spec(tmp_path)))
    with pytest.raises(SpecError) as onnx_refusal:
        to_onnx(spec, None, with_past=True)
    model = graphformer.build(spec, seed=0)
    with pytest.raises(GenerationError) as gen_refusal:
        graphformer.generate(model, torch.tensor([[1, 2, 3]]), 4)
    assert gen_refusal.value.code == 1 and "error[GF293]" in str(gen_refusal.value)
    assert isinstance(gen_refusal.value, SpecError)
    assert gen_refusal.value.diagnostics[0].code == onnx_refusal.value.diagnostics[0].code == "GF293"


@pytest.mark.parametrize("command", [["generate", "--prompt-ids", "1,2,3", "--max-new-tokens", "2"],
                                     ["export", "--with-past", "-o", "x.onnx"]])
def test_both_commands_show_the_same_diagnostic(tmp_path, capsys, command, monkeypatch):
    pytest.importorskip("onnx") if command[0] == "export" else None
    from graphformer.cli import main
    monkeypatch.chdir(tmp_path)
    path = _spec(tmp_path)
    assert main([command[0], str(path), *command[1:]]) == 1
    err = capsys.readouterr().err
    assert "error[GF293]" in err and "`conv` (conv1d) cannot run step by step" in err and "Traceback" not in err
    assert "conv-lm.yaml:10:" in err     # at the node, with its source line


def test_generate_without_a_logits_output_is_gf215(tmp_path, capsys):
    from graphformer.cli import main
    path = _spec(tmp_path, CONV_LM.replace("outputs: {logits: logits}", "outputs: {scores: logits}"))
    assert main(["generate", str(path), "--prompt-ids", "1", "--max-new-tokens", "2"]) == 1
    assert "error[GF215]" in capsys.readouterr().err


# ---------------------------------------------------------------- every bundled causal spec, decoded

def _decodes(name: str) -> bool:
    spec = graphformer.load(str(SPECS / f"{name}.yaml"), preset="tiny")
    try:
        plan_decoder(spec.ir, ("logits",))
        return True
    except SpecError:
        return False


CAUSAL = [p.stem for p in sorted(SPECS.glob("*.yaml")) if _decodes(p.stem)]


def test_the_bundled_causal_specs_are_the_expected_ones():
    assert set(CAUSAL) >= {"gpt2", "llama", "mistral-7b", "mixtral-8x7b", "qwen2", "phi-2", "t5-base",
                           "translation", "whisper-base"}


@pytest.mark.slow
@pytest.mark.parametrize("name", CAUSAL)
def test_generate_equals_greedy_full_recomputation(name):
    """The cached steps give the tokens that rerunning the whole sequence and taking the argmax gives (float64,
    so that no near-tie of random weights decides a token)."""
    torch = pytest.importorskip("torch")
    spec = graphformer.load(str(SPECS / f"{name}.yaml"), preset="tiny")
    plan = plan_decoder(spec.ir, ("logits",))
    model = graphformer.build(spec, seed=0).eval().double()
    b, n, new = 2, 5, 7
    given = graphformer.example_inputs(spec, dims={"B": b}, seed=1)
    encoder = {k: v.double() if v.is_floating_point() else v for k, v in given.items() if k in plan.encoder_inputs}
    ids = torch.randint(0, plan.vocab, (b, n), generator=torch.Generator().manual_seed(2))
    if any(node.op == "scatter_tokens" for node in spec.ir.nodes()):   # LLaVA: the prompt holds the image tokens
        ids = given[plan.tokens]
    got = graphformer.generate(model, ids, new, encoder_inputs=encoder or None)
    seq = ids
    with torch.no_grad():
        for _ in range(new):
            feed = {**encoder, plan.tokens: seq}
            t = seq.shape[1]
            if plan.mask and not spec.ir.node(spec.ir.inputs[plan.mask]).meta.get("optional"):
                feed[plan.mask] = torch.ones(b, t, dtype=torch.long)
            if plan.positions and not spec.ir.node(spec.ir.inputs[plan.positions]).meta.get("optional"):
                feed[plan.positions] = torch.arange(t).expand(b, t)
            if plan.prefix and not spec.ir.node(spec.ir.inputs[plan.prefix]).meta.get("optional"):
                feed[plan.prefix] = (torch.arange(t) < n).long().expand(b, t)   # a required prefix: the prompt
            nxt = model(**feed)["logits"][:, -1].argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
    assert torch.equal(got, seq), f"{name}: cached {got[:, n:].tolist()} vs recomputed {seq[:, n:].tolist()}"
