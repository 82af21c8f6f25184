"""Inputs with a `default` (docs/spec-language.md, "Inputs with a default"): a caller may leave one out, and it
is then its constant at the shape the required inputs give.

Against transformers, built offline from tiny configs with perturbed random weights (fp32, ≤ 1e-5 × scale):
BertModel, AlbertModel and DebertaV2Model (type_vocab_size 2) called without token_type_ids equal our module
called without them, and with them (random segment ids, a padded batch) as before; BertModel and AlbertModel
called without attention_mask equal our module called without it (torch and ONNX Runtime); ONNX Runtime on the default
export that takes them and on one that leaves them out (built in the graph with ConstantOfShape). DeBERTa-v2's
token types: the map's round trip and `import hf` of such a config. The fill itself on a made-up spec (a float
default, a shape over a divided axis) in torch and ONNX; a causal LM with a defaulted input generates (each step
fills its own) and exports with past. The diagnostics: GF250, GF252, and no GF112 for an unread defaulted input.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

import graphformer  # noqa: E402
from graphformer.analysis.decoding import plan_decoder  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.check import check_file  # noqa: E402
from graphformer.weights.maps import convert_state_dict, to_reference  # noqa: E402
from parity import assert_close, assert_ort_close, imported, ort_session, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

BERT = dict(vocab_size=99, max_position_embeddings=32, hidden_size=32, num_attention_heads=4, intermediate_size=64,
            num_hidden_layers=2)
ALBERT = dict(BERT, embedding_size=16)
DEBERTA = dict(vocab_size=97, hidden_size=30, num_hidden_layers=2, num_attention_heads=3, intermediate_size=41,
               max_position_embeddings=64, type_vocab_size=2, relative_attention=True, position_buckets=6,
               max_relative_positions=12, norm_rel_ebd="layer_norm", position_biased_input=False,
               layer_norm_eps=1e-7, share_att_key=True, pos_att_type=["p2c", "c2p"])
DEBERTA_SETS = dict(vocab=97, d_model=30, heads=3, d_ff=41, layers=2, position_buckets=6, max_relative_positions=12,
                    type_vocab=2)


def family(name: str):
    """(our spec, the randomised reference) of `name` with two token types."""
    torch.manual_seed(0)
    if name == "bert":
        return graphformer.load("specs/bert-base.yaml", preset="tiny"), randomize(T.BertModel(T.BertConfig(**BERT)))
    if name == "albert":
        return (graphformer.load("specs/albert.yaml", preset="tiny", overrides={"layers": 2}),
                randomize(T.AlbertModel(T.AlbertConfig(**ALBERT))))
    return (graphformer.load("specs/deberta-v2.yaml", overrides=DEBERTA_SETS),
            randomize(T.DebertaV2Model(T.DebertaV2Config(**DEBERTA))))


def batch(b=3, n=9, seed=1):
    """ids, random segment ids (0 and 1) and a padding mask with rows of 0, 4 and 7 pads."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 90, (b, n), generator=gen)
    types = torch.randint(0, 2, (b, n), generator=gen)
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, n - 4:], mask[2, n - 7:] = 0, 0
    return ids, types, mask


@pytest.mark.parametrize("name", ["bert", "albert", "deberta"])
def test_with_and_without_token_types_equal_transformers(name):
    """Left out, passed as None and fed: each equals the reference called the same way, padded or not."""
    s, ref = family(name)
    model = ours(s, ref)
    ids, types, mask = batch()
    real = mask.bool()
    unpadded = torch.ones_like(mask)
    with torch.no_grad():
        for kw in ({"attention_mask": unpadded}, {"attention_mask": mask}):
            for fed in ({}, {"token_type_ids": None}, {"token_type_ids": types}):
                got = model(input_ids=ids, **kw, **fed)["last_hidden_state"]
                want = ref(input_ids=ids, **kw, **fed).last_hidden_state
                keep = kw["attention_mask"].bool()
                assert_close(got[keep], want[keep], f"{name} padded={kw['attention_mask'] is mask} types={list(fed)}")
        # token types matter: zeros differ from the random ones
        assert not torch.allclose(model(input_ids=ids, attention_mask=mask, token_type_ids=types)["last_hidden_state"],
                                  model(input_ids=ids, attention_mask=mask)["last_hidden_state"])


@pytest.mark.parametrize("name", ["bert", "albert"])
def test_without_attention_mask_equals_transformers(name):
    """BERT's and ALBERT's `attention_mask: default 1`: left out or None, with or without token types, our module
    equals the reference called without a mask; ONNX Runtime on `inputs=[]` (mask and types built in the graph)
    equals it at two lengths, and `inputs=["token_type_ids"]` takes the types alone."""
    s, ref = family(name)
    model = ours(s, ref)
    ids, types, _ = batch()
    with torch.no_grad():
        for fed in ({}, {"token_type_ids": types}):
            want = ref(input_ids=ids, **fed).last_hidden_state
            for mask in ({}, {"attention_mask": None}):
                assert_close(model(input_ids=ids, **mask, **fed)["last_hidden_state"], want,
                             f"{name} without a mask types={list(fed)}")
    for inputs in ([], ["token_type_ids"]):
        sess = ort_session(s, model, inputs=inputs)
        assert [i.name for i in sess.get_inputs()] == ["input_ids", *inputs]
        for n in (4, 9):
            feeds = {"input_ids": ids[:, :n], **({"token_type_ids": types[:, :n]} if inputs else {})}
            with torch.no_grad():
                want = ref(**feeds).last_hidden_state
            assert_ort_close(sess, feeds, {"last_hidden_state": want}, f"{name} onnx without a mask {inputs} n={n}")


@pytest.mark.parametrize("name", ["bert", "deberta"])
def test_onnx_runtime_with_and_without_token_types(name):
    """The default export builds token_type_ids in the graph (ConstantOfShape over input_ids' shape) and takes the
    required inputs only; `inputs=["token_type_ids"]` makes it a graph input. Two lengths per session."""
    s, ref = family(name)
    model = ours(s, ref)
    ids, types, mask = batch(n=11)
    for inputs in ([], ["token_type_ids"]):   # the default is the second (test below)
        export = inputs + ["attention_mask"]   # BERT's defaulted, DeBERTa's optional: taken either way
        sess = ort_session(s, model, inputs=export)
        assert [i.name for i in sess.get_inputs()] == [k for k in s.ir.inputs if k == "input_ids" or k in export]
        for n in (4, 11):
            feeds = {"input_ids": ids[:, :n], "attention_mask": mask[:, :n]}
            if inputs:
                feeds["token_type_ids"] = types[:, :n]
            with torch.no_grad():
                want = ref(**feeds).last_hidden_state
            # padded positions too: ONNX runs our graph, whose padded rows equal the reference's (DeBERTa) or
            # are compared on the real tokens (BERT's padded queries attend evenly in both)
            keep = mask[:, :n].bool()
            got = torch.from_numpy(sess.run(["last_hidden_state"], {k: v.numpy() for k, v in feeds.items()})[0])
            assert_close(got[keep], want[keep], f"{name} onnx inputs={inputs} n={n}")


def test_onnx_default_export_takes_token_types_when_read():
    """By default a defaulted input some node reads is a graph input (a tokenizer's output feeds straight in);
    DeBERTa-v3's, read by nothing (type_vocab 0), is not."""
    s, ref = family("bert")
    sess = ort_session(s, ours(s, ref))
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "token_type_ids", "attention_mask"]
    v3 = graphformer.load("specs/deberta-v2.yaml", preset="tiny")
    assert [i.name for i in ort_session(v3, graphformer.build(v3, seed=0)).get_inputs()] == ["input_ids"]


def test_deberta_token_types_map_round_trip_and_count():
    s, ref = family("deberta")
    sd = {k: v for k, v in ref.state_dict().items() if k != "embeddings.position_ids"}
    assert "embeddings.token_type_embeddings.weight" in sd
    mine = convert_state_dict(s, sd, "hf")
    assert mine["typ.table.weight"].shape == (2, 30)
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters())
    back = to_reference(s, mine, "hf", reference=sd)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_deberta_import_hf_with_token_types(tmp_path, capsys):
    """`import hf` of a DebertaV2Model with type_vocab_size 2: the spec it writes reads token types."""
    _, ref = family("deberta")
    s, model = imported(ref, tmp_path, capsys)
    assert s.params["type_vocab"] == 2
    ids, types, mask = batch()
    with torch.no_grad():
        for fed in ({}, {"token_type_ids": types}):
            got = model(input_ids=ids, attention_mask=mask, **fed)["last_hidden_state"]
            assert_close(got, ref(input_ids=ids, attention_mask=mask, **fed).last_hidden_state,
                         f"deberta imported {list(fed)}")


def test_deberta_without_token_types_warns_nothing():
    """type_vocab 0 (deberta-v3): no node reads token_type_ids, which is no GF112; the module still takes it."""
    r = check_file("specs/deberta-v2.yaml", preset="tiny")
    assert not r.diagnostics, [d.code for d in r.diagnostics]
    s = graphformer.load("specs/deberta-v2.yaml", preset="tiny")
    model = graphformer.build(s, seed=0).eval()
    ids = torch.randint(0, 97, (2, 5))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids)["last_hidden_state"],
                           model(input_ids=ids, token_type_ids=torch.ones_like(ids))["last_hidden_state"])


# ---------------------------------------------------------------- the fill itself, on made-up specs

FILLED = """\
graphformer: 1
name: filled
params: {d: 4}
dims: {B: 2, n: 3}
inputs:
  x:     {shape: [B, 2 * n, d]}
  shift: {shape: [B, n, d], default: 0.5}
nodes:
  pairs: {op: reshape, in: x, shape: [B, n, 2 * d]}
  half:  {op: linear, out: d}
  sum:   {op: residual, in: [half, shift]}
outputs: {y: sum}
"""


def write(tmp_path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_float_default_over_a_divided_axis_torch_and_onnx(tmp_path):
    """`shift [B, n, d]` with n read off x's axis 2 · n: left out it is 0.5 everywhere, in torch and ONNX."""
    s = graphformer.load(write(tmp_path, FILLED))
    model = graphformer.build(s, seed=0).eval()
    x = torch.randn(3, 10, 4)
    with torch.no_grad():
        got = model(x=x)["y"]
        want = model(x=x, shift=torch.full((3, 5, 4), 0.5))["y"]
    assert got.shape == (3, 5, 4) and torch.equal(got, want)
    sess = ort_session(s, model, inputs=[])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert_ort_close(sess, {"x": x}, {"y": want}, "filled onnx")


CAUSAL = """\
graphformer: 1
name: typed-lm
params: {vocab: 50, d: 16, heads: 2}
dims: {B: 2, n: 6}
inputs:
  tokens: {shape: [B, n], dtype: int64}
  types:  {shape: [B, n], dtype: int64, default: 1}
nodes:
  tok:    {op: embedding, in: tokens, vocab: vocab, dim: d}
  typ:    {op: embedding, in: types, vocab: 2, dim: d}
  emb:    {op: residual, in: [tok, typ]}
  attn:   {op: attention, heads: heads, causal: true}
  res:    {op: residual, in: [emb, attn]}
  logits: {op: linear, out: vocab}
outputs: {logits: logits}
"""


def test_causal_lm_with_a_defaulted_input_generates_and_exports_with_past(tmp_path):
    """A decoder step leaves a defaulted input out (plan `unfed`): each step is its constant, so greedy
    generation equals the full recompute without it; the ONNX step with past has no such input."""
    s = graphformer.load(write(tmp_path, CAUSAL))
    assert plan_decoder(s.ir, ("logits",)).unfed == ["types"]
    model = graphformer.build(s, seed=0).eval()
    ids = torch.randint(0, 50, (2, 4), generator=torch.Generator().manual_seed(0))
    out = graphformer.generate(model, ids, 5)
    seq = ids
    with torch.no_grad():
        for _ in range(5):
            seq = torch.cat([seq, model(tokens=seq)["logits"][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)
    step = ort_session(s, model, with_past=True)
    given = {i.name: i for i in step.get_inputs()}
    assert "types" not in given
    # the prompt with an empty past, then one token after it: each the full recompute's logits (types 1 built)
    past = {k: np.zeros((2, i.shape[1], 0, i.shape[3]), np.float32) for k, i in given.items()
            if k.startswith("past_key_values.")}
    names = [o.name for o in step.get_outputs()]
    for length in (4, 5):
        feed = seq[:, :4] if length == 4 else seq[:, 4:5]
        out = dict(zip(names, step.run(None, {"input_ids": feed.numpy(), **past})))
        with torch.no_grad():
            want = model(tokens=seq[:, :length])["logits"][:, -feed.shape[1]:]
        assert_close(torch.from_numpy(out["logits"]), want, f"typed-lm onnx step to {length}")
        past = {"past_key_values." + k[len("present."):]: v for k, v in out.items() if k.startswith("present.")}


# ---------------------------------------------------------------- diagnostics

HEAD = """\
graphformer: 1
name: case
params: {vocab: 50, d: 8}
dims: {B: 2, n: 4, m: 4}
inputs:
  ids:   {shape: [B, n], dtype: int64}
"""
USE = """\
nodes:
  tok: {op: embedding, in: ids, vocab: vocab, dim: d}
  typ: {op: embedding, in: types, vocab: 2, dim: d}
  sum: {op: residual, in: [tok, typ]}
outputs: {y: sum}
"""


def diagnose(tmp_path, line: str, use: str = USE):
    r = check_file(write(tmp_path, HEAD + "  " + line + "\n" + use))
    return [(d.code, d.span.line if d.span else None, d.span.col if d.span else None, d.message)
            for d in r.diagnostics]


def test_gf250_a_symbol_no_required_input_gives(tmp_path):
    line = "types: {shape: [B, m], dtype: int64, default: 0}"
    (code, row, col, msg), = [d for d in diagnose(tmp_path, line) if d[0] == "GF250"]
    assert (code, row, col) == ("GF250", 7, 2 + line.index("m]") + 1) and "`m`" in msg


def test_gf250_an_optional_input_does_not_give_a_size(tmp_path):
    """Only inputs every call gives count: an optional mask may be absent."""
    text = HEAD.replace("ids:   {shape: [B, n], dtype: int64}",
                        "ids: {shape: [B, n], dtype: int64}\n  mask: {shape: [B, m], optional: true}")
    r = check_file(write(tmp_path, text + "  types: {shape: [B, m], dtype: int64, default: 0}\n" + USE))
    assert [d.code for d in r.diagnostics if d.code == "GF250"] == ["GF250"]


@pytest.mark.parametrize("line,why", [
    ("types: {shape: [B, n], dtype: int64, default: 0.5}", "integer"),
    ("types: {shape: [B, n], dtype: int64, default: true}", "integer"),
    ("types: {shape: [B, n], dtype: int64, default: 0, optional: true}", "optional"),
    ("types: {shape: [B, n], dtype: bool, default: 1}", "`true` or `false`"),
    ("types: {shape: [B, n], dtype: float32, default: false}", "number"),
])
def test_gf252_a_default_the_input_cannot_take(tmp_path, line, why):
    found = diagnose(tmp_path, line)
    assert found and found[0][0] == "GF252" and found[0][1] == 7 and why in found[0][3], found
    assert found[0][2] == 2 + line.index("default: ") + len("default: ") + 1


def test_defaults_that_fit_are_clean(tmp_path):
    for line in ("types: {shape: [B, n], dtype: int64, default: 0}", "types: {shape: [B, n], dtype: int64, default: 1}"):
        assert diagnose(tmp_path, line) == []


def test_unread_defaulted_input_is_no_gf112_but_a_required_one_is(tmp_path):
    unread = USE.replace("  typ: {op: embedding, in: types, vocab: 2, dim: d}\n  sum: {op: residual, in: [tok, typ]}\n",
                         "").replace("{y: sum}", "{y: tok}")
    assert diagnose(tmp_path, "types: {shape: [B, n], dtype: int64, default: 0}", unread) == []
    assert [c for c, *_ in diagnose(tmp_path, "types: {shape: [B, n], dtype: int64}", unread)] == ["GF112"]


def test_module_still_requires_required_inputs():
    s, _ = family("bert")
    model = graphformer.build(s, seed=0)
    with pytest.raises(TypeError, match="missing input_ids"):
        model(attention_mask=torch.ones(1, 3, dtype=torch.long))


def test_encoder_decoder_with_a_defaulted_decoder_input(tmp_path):
    """translation.yaml with decoder token types (`default: 1`, [B, t] as the target tokens): a step fills them,
    so `generate` equals the full recompute; ONNX's first decoder graph builds them and equals the torch build."""
    import shutil
    from pathlib import Path
    from graphformer.backends.onnx import to_seq2seq
    from parity import onnx_session
    specs = Path(__file__).resolve().parents[2] / "specs"
    for name in ("translation.yaml", "transformer.yaml"):
        shutil.copy(specs / name, tmp_path / name)
    text = (tmp_path / "translation.yaml").read_text()
    text = text.replace("  tgt_tokens: {shape: [B, t], dtype: int64}\n",
                        "  tgt_tokens: {shape: [B, t], dtype: int64}\n"
                        "  tgt_types: {shape: [B, t], dtype: int64, default: 1}\n")
    text = text.replace("  tgt_drop:  {op: dropout, p: 0.1}\n",
                        "  tgt_typ:   {op: embedding, in: tgt_types, vocab: 2, dim: d_model}\n"
                        "  tgt_sum:   {op: residual, in: [tgt_pos, tgt_typ]}\n  tgt_drop:  {op: dropout, p: 0.1}\n")
    (tmp_path / "translation.yaml").write_text(text)
    s = graphformer.load(tmp_path / "translation.yaml", preset="tiny")
    assert plan_decoder(s.ir, ("logits",)).unfed == ["tgt_types"]
    model = graphformer.build(s, seed=0).eval()
    gen = torch.Generator().manual_seed(4)
    src, tgt = torch.randint(0, 101, (2, 6), generator=gen), torch.randint(0, 103, (2, 3), generator=gen)
    out = graphformer.generate(model, tgt, 4, encoder_inputs={"src_tokens": src})
    seq = tgt
    with torch.no_grad():
        for _ in range(4):
            seq = torch.cat([seq, model(src_tokens=src, tgt_tokens=seq)["logits"][:, -1].argmax(-1, keepdim=True)], 1)
        want = model(src_tokens=src, tgt_tokens=seq)["logits"]
    assert torch.equal(out, seq)
    graphs = to_seq2seq(s, model)
    hidden = onnx_session(graphs["encoder_model.onnx"]).run(None, {"input_ids": src.numpy()})[0]
    decoder = onnx_session(graphs["decoder_model.onnx"])
    assert [i.name for i in decoder.get_inputs()] == ["input_ids", "encoder_hidden_states"]
    got = decoder.run(["logits"], {"input_ids": seq.numpy(), "encoder_hidden_states": hidden})[0]
    assert_close(torch.from_numpy(got), want, "translation with decoder types, onnx decoder")


def test_cli_export_inputs_choose_the_defaulted_ones(tmp_path, capsys):
    """`export` takes token_type_ids by default; `--inputs attention_mask` builds them in the graph and says so."""
    onnx = pytest.importorskip("onnx")
    from graphformer.cli import main
    for extra, want in (([], ["input_ids", "token_type_ids", "attention_mask"]),
                        (["--inputs", "attention_mask"], ["input_ids", "attention_mask"])):
        out = tmp_path / f"bert{len(extra)}.onnx"
        assert main(["export", "specs/bert-base.yaml", "--preset", "tiny", *extra, "-o", str(out)]) == 0
        err = capsys.readouterr().err
        assert [i.name for i in onnx.load(str(out)).graph.input] == want
        assert ("inputs built from their defaults: token_type_ids" in err) == bool(extra), err
