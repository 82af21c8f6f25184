"""Parity of specs/deberta-v2.yaml (disentangled attention over log-bucketed relative positions, one shared
layer-normed relative table) with transformers' DebertaV2Model.

References are built offline from small odd configs with random weights, every parameter perturbed: 3
heads over a width of 30, 6 position buckets reaching 12 (sequences of 14 and 20 tokens pass both, so exact,
logarithmic and clipped distances all occur), shared and unshared position projections, c2p and p2c alone
and together. fp32, eval mode, ≤ 1e-5 × the output's scale: forward with and without a padding mask,
gradients, ONNX Runtime. At the published deberta-v3-base config on the meta device: the parameter count
and the map.

DeBERTa-v2's optional parts, each switched on alone in the same small config (and all together): the
convolution after the first layer (ConvLayer: kernel 3 with gelu, and kernel 5 over 3 groups with the default
tanh), absolute positions (position_biased_input), token types (type_vocab_size 2; called without
token_type_ids here, with them in test_input_defaults.py) and embed_proj (embedding_size 20 < 30). Forward with and
without padding, the map's round trip; ONNX Runtime for the convolution; at the published deberta-v2-xlarge
config on the meta device, the parameter count and the map; `import hf` of its config.json.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from graphformer.weights.maps import to_reference  # noqa: E402
from parity import assert_close, assert_mapped_grads, assert_ort_close, ort_session, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/deberta-v2.yaml"
SMALL = dict(vocab_size=97, hidden_size=30, num_hidden_layers=2, num_attention_heads=3, intermediate_size=41,
             max_position_embeddings=64, type_vocab_size=0, relative_attention=True, position_buckets=6,
             max_relative_positions=12, norm_rel_ebd="layer_norm", position_biased_input=False, layer_norm_eps=1e-7)
OVERRIDES = dict(vocab=97, d_model=30, heads=3, d_ff=41, layers=2, position_buckets=6, max_relative_positions=12)
# microsoft/deberta-v3-base's config.json (its other fields are DebertaV2Config's defaults)
V3_BASE = dict(vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
               position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
               position_biased_input=False, layer_norm_eps=1e-7, max_relative_positions=-1)

# microsoft/deberta-v2-xlarge's config.json, as published on the hub (written out here: nothing is downloaded)
V2_XLARGE = {"model_type": "deberta-v2", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
             "hidden_dropout_prob": 0.1, "hidden_size": 1536, "initializer_range": 0.02, "intermediate_size": 6144,
             "max_position_embeddings": 512, "relative_attention": True, "position_buckets": 256,
             "norm_rel_ebd": "layer_norm", "share_att_key": True, "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7,
             "conv_kernel_size": 3, "conv_act": "gelu", "max_relative_positions": -1, "position_biased_input": False,
             "num_attention_heads": 24, "attention_head_size": 64, "num_hidden_layers": 24, "type_vocab_size": 0,
             "vocab_size": 128100}
# DeBERTa-v2's optional parts: name → (config fields, spec params)
PARTS = {
    "conv": (dict(conv_kernel_size=3, conv_act="gelu"), dict(conv_kernel=3, conv_act="gelu")),
    "conv_groups": (dict(conv_kernel_size=5, conv_groups=3), dict(conv_kernel=5, conv_groups=3)),
    "positions": (dict(position_biased_input=True), dict(position_biased=True, max_len=64)),
    "embed_proj": (dict(embedding_size=20), dict(embedding_size=20)),
    "types": (dict(type_vocab_size=2), dict(type_vocab=2)),
}
PARTS["all"] = tuple({**PARTS["conv"][i], **PARTS["positions"][i], **PARTS["embed_proj"][i], **PARTS["types"][i]}
                     for i in (0, 1))


def part(name: str):
    """(our spec, the randomised reference) with DeBERTa-v2's optional part `name` switched on."""
    cfg, params = PARTS[name]
    ref = randomize(T.DebertaV2Model(T.DebertaV2Config(**{**SMALL, "share_att_key": True,
                                                          "pos_att_type": ["p2c", "c2p"], **cfg})))
    return load(SPEC, overrides={**OVERRIDES, **params}), ref


def reference(share: bool = True, pos_att_type=("p2c", "c2p")):
    cfg = T.DebertaV2Config(share_att_key=share, pos_att_type=list(pos_att_type), **SMALL)
    return randomize(T.DebertaV2Model(cfg))


def spec(share: bool = True, pos_att_type=("p2c", "c2p"), tmp_path=None):
    path = SPEC
    if tuple(pos_att_type) != ("p2c", "c2p"):   # the spec writes both terms; narrow them in a copy of the text
        text = open(SPEC).read().replace("pos_att_type: [p2c, c2p]", f"pos_att_type: [{', '.join(pos_att_type)}]")
        path = tmp_path / "deberta.yaml"
        path.write_text(text)
    return load(str(path), overrides={**OVERRIDES, "share_att_key": share})


def tokens(b: int = 3, n: int = 20, seed: int = 1):
    ids = torch.randint(1, 97, (b, n), generator=torch.Generator().manual_seed(seed))
    lengths = torch.tensor([n, n - 6, 3][:b])
    mask = (torch.arange(n)[None, :] < lengths[:, None]).long()
    return ids, mask


@pytest.mark.parametrize("buckets,far", [(256, 512), (6, 12), (4, 6), (5, 40), (0, 7)])
def test_bucket_index_equals_transformers(buckets, far):
    """The index table both backends gather with (backends/tables.py) equals transformers' bucketing and
    clipping, past the table's own reach too (n = 1100 > 2 · 512)."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position
    from graphformer.backends.tables import disentangled_position_index
    c2p, p2c, reach = disentangled_position_index(buckets, far)
    span = buckets if buckets > 0 else far
    for n in (1, 9, 40, 1100):
        rel = build_relative_position(torch.zeros(1, n, 1), torch.zeros(1, n, 1), buckets, far)[0]
        i = torch.arange(n)
        at = (i[:, None] - i[None, :]).clamp(-reach, reach) + reach
        assert torch.equal(torch.from_numpy(c2p)[at], torch.clamp(rel + span, 0, 2 * span - 1))
        assert torch.equal(torch.from_numpy(p2c)[at], torch.clamp(-rel + span, 0, 2 * span - 1))


def test_published_count_and_map_equal_the_reference():
    with torch.device("meta"):
        ref = T.DebertaV2Model(T.DebertaV2Config(**V3_BASE))
    s = load(SPEC)
    count = sum(p.numel() for p in ref.parameters())
    assert total_params(s.ir) == count == 183_831_552
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == count


CASES = [(True, ("p2c", "c2p")), (False, ("p2c", "c2p")), (True, ("c2p",)), (False, ("p2c",))]


@pytest.mark.parametrize("share,terms", CASES)
def test_forward_equals_transformers(share, terms, tmp_path):
    s, ref = spec(share, terms, tmp_path), reference(share, terms)
    model = ours(s, ref)
    ids, mask = tokens()
    with torch.no_grad():
        for n in (1, 14, 20):
            assert_close(model(input_ids=ids[:, :n])["last_hidden_state"], ref(input_ids=ids[:, :n]).last_hidden_state,
                         f"deberta share={share} {terms} n={n}")
        got = model(input_ids=ids, attention_mask=mask)["last_hidden_state"]
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    # every position, padded ones included: both zero the padded tokens' embeddings (`apply_mask`)
    assert_close(got, want, f"deberta share={share} {terms} padded")


def test_padded_queries_attend_as_the_reference():
    """One layer's attention alone: a padded query row attends evenly to every key, as the reference's
    masked_fill over the mask's outer product makes it, so every position matches."""
    ref = reference()
    attn_ref = ref.encoder.layer[0].attention.self
    rel = ref.encoder.get_rel_embedding()
    ids, mask = tokens()
    x = torch.randn(3, 20, 30, generator=torch.Generator().manual_seed(4))
    model = ours(spec(), ref)
    attn = model.get_submodule("encoder.0.attn")
    with torch.no_grad():
        rel_pos = ref.encoder.get_rel_pos(x)
        want = attn_ref(x, ref.encoder.get_attention_mask(mask), relative_pos=rel_pos, rel_embeddings=rel)[0]
        got = attn(x, rel, mask)
    assert_close(got, want, "disentangled attention, padded queries included")


def test_gradients_equal_transformers():
    s, ref = spec(False), reference(False)
    model = ours(s, ref)
    ids, mask = tokens()
    weight = torch.randn(30, generator=torch.Generator().manual_seed(3))
    keep = mask.bool()
    (model(input_ids=ids, attention_mask=mask)["last_hidden_state"][keep] * weight).sum().backward()
    (ref(input_ids=ids, attention_mask=mask).last_hidden_state[keep] * weight).sum().backward()
    assert_mapped_grads(model, ref, s, "deberta")


def test_onnx_runtime_equals_transformers():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from graphformer.backends.onnx import to_onnx
    s, ref = spec(), reference()
    model = ours(s, ref)
    ids, mask = tokens()
    for inputs in ([], ["attention_mask"]):
        proto = to_onnx(s, model, inputs=inputs)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        for n in (5, 20):   # one export, two lengths: the bucket index is computed for the n it is given
            feed = {"input_ids": ids[:, :n].numpy(), **({"attention_mask": mask[:, :n].numpy()} if inputs else {})}
            got = torch.from_numpy(np.asarray(sess.run(["last_hidden_state"], feed)[0]))
            with torch.no_grad():
                want = ref(input_ids=ids[:, :n], **({"attention_mask": mask[:, :n]} if inputs else {})).last_hidden_state
            keep = mask[:, :n].bool() if inputs else torch.ones(ids[:, :n].shape, dtype=torch.bool)
            assert_close(got[keep], want[keep], f"deberta onnx {inputs} n={n}")


def test_import_hf_equals_transformers(tmp_path, capsys):
    """`graphformer import hf` on a saved DebertaV2Model: the spec it writes, holding the checkpoint's
    weights, equals the reference (unshared keys, so the config's share_att_key and the map's pos_* rules
    both matter)."""
    from parity import imported
    ref = reference(share=False)
    _, model = imported(ref, tmp_path, capsys)
    ids, mask = tokens()
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask)["last_hidden_state"]
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    assert_close(got[mask.bool()], want[mask.bool()], "deberta imported")


@pytest.mark.parametrize("field,value", [("relative_attention", False), ("pos_att_type", ["c2p"]),
                                         ("position_buckets", -1), ("conv_kernel_size", 4),
                                         ("conv_groups", 7), ("conv_act", "mish")])
def test_import_hf_refuses_what_the_spec_cannot_say(field, value):
    from graphformer.frontend.hf import HFImportError, convert_config
    extra = {"conv_kernel_size": 3} if field.startswith("conv_") and field != "conv_kernel_size" else {}
    cfg = T.DebertaV2Config(**{**SMALL, "pos_att_type": ["p2c", "c2p"], **extra, field: value}).to_dict()
    with pytest.raises(HFImportError, match=field):
        convert_config(cfg)


# ---------------------------------------------------------------- DeBERTa-v2's optional parts

@pytest.mark.parametrize("name", list(PARTS))
def test_part_forward_equals_transformers(name):
    """Every position, padded ones included: ConvLayer zeroes them after its convolution and at its end (the
    reference's masked_fill and input_mask), the embeddings are zeroed before the first layer."""
    s, ref = part(name)
    model = ours(s, ref)
    ids, mask = tokens()
    with torch.no_grad():
        for n in (1, 14, 20):
            assert_close(model(input_ids=ids[:, :n])["last_hidden_state"], ref(input_ids=ids[:, :n]).last_hidden_state,
                         f"deberta {name} n={n}")
        assert_close(model(input_ids=ids, attention_mask=mask)["last_hidden_state"],
                     ref(input_ids=ids, attention_mask=mask).last_hidden_state, f"deberta {name} padded")


@pytest.mark.parametrize("name", list(PARTS))
def test_part_map_round_trip_is_bit_identical(name):
    """reference → spec → reference gives every tensor back under its own name (the conv's, the absolute
    table's, embed_proj's rules included); the spec's count is the reference's."""
    s, ref = part(name)
    sd = {k: v for k, v in ref.state_dict().items() if k != "embeddings.position_ids"}
    ours_ = convert_state_dict(s, sd, "hf")
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == sum(v.numel() for v in ours_.values())
    back = to_reference(s, ours_, "hf", reference=sd)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_part_gradients_equal_transformers():
    s, ref = part("all")
    model = ours(s, ref)
    ids, mask = tokens()
    weight = torch.randn(30, generator=torch.Generator().manual_seed(3))
    keep = mask.bool()
    (model(input_ids=ids, attention_mask=mask)["last_hidden_state"][keep] * weight).sum().backward()
    (ref(input_ids=ids, attention_mask=mask).last_hidden_state[keep] * weight).sum().backward()
    assert_mapped_grads(model, ref, s, "deberta all parts")


def test_conv_onnx_runtime_equals_transformers():
    """The convolution after the first layer exported (Conv over the transposed tokens, the mask along the
    last axis): one export per input set, two lengths each, every position."""
    s, ref = part("all")
    model = ours(s, ref)
    ids, mask = tokens()
    for inputs in ([], ["attention_mask"]):
        sess = ort_session(s, model, inputs=inputs)
        for n in (5, 20):
            feeds = {"input_ids": ids[:, :n], **({"attention_mask": mask[:, :n]} if inputs else {})}
            with torch.no_grad():
                want = ref(**feeds).last_hidden_state
            assert_ort_close(sess, feeds, {"last_hidden_state": want}, f"deberta conv onnx {inputs} n={n}")


def test_published_v2_xlarge_count_and_map_equal_the_reference():
    cfg = {k: v for k, v in V2_XLARGE.items() if k != "model_type"}
    with torch.device("meta"):
        ref = T.DebertaV2Model(T.DebertaV2Config(**cfg))
    s = load(SPEC, preset="deberta-v2-xlarge")
    count = sum(p.numel() for p in ref.parameters())
    assert total_params(s.ir) == count == 884_593_152
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == count


def test_import_hf_of_published_configs():
    """deberta-v2-xlarge's config.json gives the preset's params; deberta-v3-base's the spec's defaults (none
    of the optional parts), both without an unread field."""
    from graphformer.frontend.hf import bundled_params, convert_config
    xl = convert_config(V2_XLARGE)
    want = {**bundled_params(xl.family), **load(SPEC, preset="deberta-v2-xlarge").params}
    assert not xl.unread and all(want[k] == v for k, v in xl.params.items() if k != "pad_token")
    assert (xl.params["conv_kernel"], xl.params["conv_act"], xl.params["position_biased"]) == (3, "gelu", False)
    v3 = convert_config({"model_type": "deberta-v2", **{k: v for k, v in V3_BASE.items()}})
    defaults = load(SPEC).params
    assert not v3.unread and all(defaults[k] == v for k, v in v3.params.items() if k != "pad_token")
    assert "embedding_size" not in v3.params and v3.params.get("conv_kernel", 0) == 0


def test_import_hf_with_every_part_equals_transformers(tmp_path, capsys):
    """`graphformer import hf` on a saved DebertaV2Model with the convolution, absolute positions and
    embed_proj: the spec it writes, holding the checkpoint's weights, equals the reference."""
    from parity import imported
    _, ref = part("all")
    _, model = imported(ref, tmp_path, capsys)
    ids, mask = tokens()
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask)["last_hidden_state"]
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    assert_close(got, want, "deberta all parts imported")

