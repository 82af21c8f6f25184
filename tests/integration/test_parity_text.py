"""Parity of the five text specs with the code they claim to be: torch.nn and Hugging Face transformers.

Each reference is built offline with random weights at a small config that is not the `tiny` preset
(so a map or a lowering that only works at tiny sizes fails), its state dict goes through the spec's
weight map into `graphformer.build(spec)`, and both run on the same random inputs in fp32 eval mode.
Also: the errors a weight map reports, and parameter counts equal to the references' at default size.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, GPT2Model  # noqa: E402

import graphformer  # noqa: E402
from parity import assert_close, ours, randomize  # noqa: E402
from graphformer.backends.torch.weights import load_weights  # noqa: E402
from graphformer.weights.maps import WeightMapError, convert_state_dict  # noqa: E402
from graphformer.analysis.summary import total_params  # noqa: E402

transformers.logging.set_verbosity_error()

SPECS = "specs/"
# small but not tiny: 6 heads of 8 (tiny uses 4 of 8), odd vocab, 3 layers, FFN not a multiple of d_model
D, HEADS, FF, LAYERS, VOCAB, MAX_LEN = 48, 6, 80, 3, 91, 40


def spec(name: str, **overrides):
    return graphformer.load(SPECS + f"{name}.yaml", overrides=overrides)


def causal(n: int) -> torch.Tensor:
    return nn.Transformer.generate_square_subsequent_mask(n)


# ---------------------------------------------------------------- torch.nn references

@pytest.mark.parametrize("grad", [False, True], ids=["no_grad-fastpath", "autograd"])
def test_encoder_block_matches_transformer_encoder_layer(grad):
    # under no_grad in eval mode torch takes its fused native fast path: a second, independent kernel
    torch.manual_seed(0)
    ref = randomize(nn.TransformerEncoderLayer(D, HEADS, FF, batch_first=True), 0)
    model = ours(spec("encoder-block", d_model=D, heads=HEADS, d_ff=FF), ref, "torch")
    x = torch.randn(3, 10, D)
    with torch.set_grad_enabled(grad):
        assert_close(model(x=x)["y"], ref(x), "y")


def test_decoder_block_matches_transformer_decoder_layer():
    torch.manual_seed(0)
    ref = randomize(nn.TransformerDecoderLayer(D, HEADS, FF, batch_first=True), 1)
    model = ours(spec("decoder-block", d_model=D, heads=HEADS, d_ff=FF), ref, "torch")
    x, memory = torch.randn(3, 7, D), torch.randn(3, 11, D)
    with torch.no_grad():
        want = ref(x, memory, tgt_mask=causal(7), tgt_is_causal=True)
        assert_close(model(x=x, memory=memory)["y"], want, "y")


def test_transformer_matches_nn_transformer():
    torch.manual_seed(0)
    # different encoder and decoder depths, so a swapped layer index can't go unnoticed
    ref = randomize(nn.Transformer(D, HEADS, LAYERS, 2, FF, batch_first=True), 2)
    model = ours(spec("transformer", d_model=D, heads=HEADS, d_ff=FF, encoder_layers=LAYERS, decoder_layers=2),
                 ref, "torch")
    src, tgt = torch.randn(2, 9, D), torch.randn(2, 6, D)
    with torch.no_grad():
        want = ref(src, tgt, tgt_mask=causal(6), tgt_is_causal=True)
        assert_close(model(src=src, tgt=tgt)["y"], want, "y")


# ---------------------------------------------------------------- Hugging Face references

@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bert_matches_hf_bert_model_with_padding(attn):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=FF, max_position_embeddings=MAX_LEN, attn_implementation=attn)
    ref = randomize(BertModel(cfg), 3)
    model = ours(spec("bert-base", vocab=VOCAB, max_len=MAX_LEN, d_model=D, heads=HEADS, d_ff=FF, layers=LAYERS),
                 ref, "hf")
    b, n = 4, 12
    ids = torch.randint(0, VOCAB, (b, n))
    types = torch.randint(0, 2, (b, n))
    lengths = torch.tensor([n, 9, 4, 1])       # one full row, padded rows, a row with only [CLS]
    mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        want = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
        got = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
    # every position, padded ones included: there HF's queries still attend to the real tokens, as ours do
    assert_close(got["last_hidden_state"], want.last_hidden_state, "last_hidden_state")
    assert_close(got["pooler_output"], want.pooler_output, "pooler_output")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gpt2_matches_hf_gpt2_lm_head_model(attn):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=D, n_layer=LAYERS, n_head=HEADS,
                     bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    ref = randomize(GPT2LMHeadModel(cfg), 4)
    assert ref.lm_head.weight is ref.transformer.wte.weight     # the tie survives randomize()
    model = ours(spec("gpt2", vocab=VOCAB, max_len=MAX_LEN, d_model=D, heads=HEADS, layers=LAYERS), ref, "hf")
    tokens = torch.randint(0, VOCAB, (3, 13))
    with torch.no_grad():
        got = model(tokens=tokens)
        assert_close(got["hidden"], ref.transformer(input_ids=tokens).last_hidden_state, "hidden (after ln_f)")
        assert_close(got["logits"], ref(input_ids=tokens).logits, "logits")


def test_gpt2_map_loads_gpt2_model_and_hub_style_keys():
    """GPT2Model has no `transformer.` prefix and no lm_head; old checkpoints also saved mask buffers."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=D, n_layer=2, n_head=3, bos_token_id=0,
                     eos_token_id=0)
    ref = randomize(GPT2Model(cfg), 5)
    sd = dict(ref.state_dict())
    for i in range(2):
        sd[f"h.{i}.attn.bias"] = torch.ones(1, 1, MAX_LEN, MAX_LEN).tril()
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    s = spec("gpt2", vocab=VOCAB, max_len=MAX_LEN, d_model=D, heads=3, layers=2)
    model = graphformer.build(s, seed=1).eval()
    graphformer.load_weights(model, sd, "hf")
    tokens = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        assert_close(model(tokens=tokens)["hidden"], ref(input_ids=tokens).last_hidden_state, "hidden")


# ---------------------------------------------------------------- parameter counts and full-size maps

def _meta_references():
    return {
        "encoder-block": (lambda: nn.TransformerEncoderLayer(512, 8, batch_first=True), "torch", 3_152_384),
        "decoder-block": (lambda: nn.TransformerDecoderLayer(512, 8, batch_first=True), "torch", 4_204_032),
        "transformer": (lambda: nn.Transformer(batch_first=True), "torch", 44_140_544),
        "bert-base": (lambda: BertModel(BertConfig()), "hf", 109_482_240),
        "gpt2": (lambda: GPT2LMHeadModel(GPT2Config()), "hf", 124_439_808),
    }


@pytest.mark.parametrize("name", list(_meta_references()))
def test_default_size_matches_reference_count_and_map(name):
    """At the spec's defaults, summary's count equals the reference's, and the map covers every tensor."""
    make, mapping, expected = _meta_references()[name]
    with torch.device("meta"):          # shapes only: nothing allocated, so full size is cheap
        ref = make()
    s = spec(name)
    n_ref = sum(p.numel() for p in ref.parameters())     # parameters() counts a tied tensor once
    assert n_ref == expected
    assert total_params(s.ir) == n_ref
    converted = convert_state_dict(s, ref.state_dict(), mapping)
    assert sum(t.numel() for t in converted.values()) == n_ref


# ---------------------------------------------------------------- the errors a map reports

@pytest.fixture
def encoder():
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(D, HEADS, FF, batch_first=True)
    return spec("encoder-block", d_model=D, heads=HEADS, d_ff=FF), dict(ref.state_dict())


def _error(s, sd, mapping) -> str:
    with pytest.raises(WeightMapError) as e:
        convert_state_dict(s, sd, mapping)
    return str(e.value)


def test_unused_reference_tensor_is_an_error(encoder):
    s, sd = encoder
    msg = _error(s, {**sd, "self_attn.extra_bias": torch.zeros(D)}, "torch")
    assert msg == ("reference tensor `self_attn.extra_bias` is not used by map `torch` — add a rule or an "
                   "`ignore` pattern")


def test_unset_spec_parameter_names_the_missing_reference_tensor(encoder):
    s, sd = encoder
    del sd["norm2.bias"]
    assert _error(s, sd, "torch") == ("spec parameter `norm2.bias` [48] is not set by map `torch`: the reference "
                                      "has no tensor `norm2.bias`")


def test_shape_mismatch_names_both_keys_and_shapes(encoder):
    _, sd = encoder
    msg = _error(spec("encoder-block", d_model=D, heads=HEADS, d_ff=64), sd, "torch")
    assert "shape mismatch: spec parameter `up.weight` is [64, 48] but reference tensor `linear1.weight` " \
           "gives [80, 48]" in msg
    assert "spec parameter `down.weight` is [48, 64] but reference tensor `linear2.weight` gives [48, 80]" in msg
    assert "not set" not in msg         # one error per cause: a rejected tensor is not also "not set"


def test_shape_mismatch_after_transpose_and_split_says_so():
    ref = GPT2Model(GPT2Config(vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=D, n_layer=1, n_head=HEADS,
                               bos_token_id=0, eos_token_id=0))
    s = spec("gpt2", vocab=VOCAB, max_len=MAX_LEN, d_model=32, heads=4, layers=1)
    msg = _error(s, ref.state_dict(), "hf")
    assert ("shape mismatch: spec parameter `blocks.0.attn.k.weight` is [32, 32] but reference tensor "
            "`h.0.attn.c_attn.weight` gives [48, 48] (rule `h.{i}.attn.c_attn.weight`, transposed, split as blocks, "
            "part 2 of 3)") in msg


def test_more_reference_layers_than_spec_layers():
    ref = nn.Transformer(D, HEADS, 2, 1, FF, batch_first=True)
    s = spec("transformer", d_model=D, heads=HEADS, d_ff=FF, encoder_layers=1, decoder_layers=1)
    msg = _error(s, ref.state_dict(), "torch")
    assert ("map `torch` sends reference tensor `encoder.layers.1.self_attn.in_proj_weight` to "
            "`encoder.1.attn.q.weight`, which is not a parameter of the spec (only a layer index differs") in msg


def test_unknown_map_lists_the_known_ones(encoder):
    s, sd = encoder
    assert _error(s, sd, "hf") == "spec `encoder-block` has no weight map `hf`; known maps: `torch`"
    assert "did you mean `torch`?" in _error(s, sd, "trch")
    assert _error(spec("translation", **{}), sd, "torch") == (
        "spec `translation` declares no weight maps (add a `weight_maps:` section)")


def test_tied_tensors_that_differ_are_an_error():
    ref = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=D, n_layer=1, n_head=HEADS,
                                     bos_token_id=0, eos_token_id=0))
    sd = dict(ref.state_dict())
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0      # an untied head can't load into a tied spec
    s = spec("gpt2", vocab=VOCAB, max_len=MAX_LEN, d_model=D, heads=HEADS, layers=1)
    assert _error(s, sd, "hf") == ("reference tensors `transformer.wte.weight` and `lm_head.weight` both set spec "
                                   "parameter `tok.weight` but differ (the spec ties them to one parameter)")


def test_error_lists_are_capped(encoder):
    s, _ = encoder
    msg = _error(s, {}, "torch")            # every one of the 16 parameters is unset
    assert msg.count("\n") == 8 and msg.endswith("... and 8 more")


def test_load_weights_needs_a_spec_for_a_foreign_module(encoder):
    _, sd = encoder
    with pytest.raises(TypeError, match="pass `spec=`"):
        load_weights(nn.Linear(2, 2), sd, "torch")


def test_map_placeholder_mistakes_are_spec_errors(tmp_path):
    text = open(SPECS + "encoder-block.yaml").read().replace(
        "{from: norm2.bias, to: norm2.bias}", '{from: norm2.bias, to: "norm2.{i}.bias"}')
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(graphformer.SpecError, match="`to` uses `{i}` but `from` does not"):
        graphformer.load(str(path))
