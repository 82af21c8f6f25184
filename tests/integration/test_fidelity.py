"""Reference fidelity (issue 19): every class the docs say a weight map reads loads through it with nothing
unused or missing; the bundled specs take the references' optional inputs and config knobs, and match them
at non-default values of each knob, padding included.

References are built offline from configs with random weights. Claims are checked on the meta device at
the default sizes (shapes only, nothing allocated); parity runs at small configs in fp32.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

import graphformer  # noqa: E402
from graphformer.weights.maps import WeightMapError, convert_state_dict  # noqa: E402
from parity import assert_close, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()
pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched:UserWarning"),   # torch.nn's own
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")]

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "graphformer" / "specs"


def spec(name: str, preset: str | None = None, **overrides):
    return graphformer.load(str(SPECS / f"{name}.yaml"), preset=preset, overrides=overrides)


# ---------------------------------------------------------------- claims: "map X reads Y"

# (claimed class, spec, preset, overrides, map, the reference at the spec's default size)
WHISPER_BASE = dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                    decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048)   # the default is tiny
CLAIMS = [
    ("TransformerEncoderLayer", "encoder-block", None, {}, "torch",
     lambda: nn.TransformerEncoderLayer(512, 8, batch_first=True)),
    ("TransformerDecoderLayer", "decoder-block", None, {}, "torch",
     lambda: nn.TransformerDecoderLayer(512, 8, batch_first=True)),
    ("Transformer", "transformer", None, {}, "torch", lambda: nn.Transformer(batch_first=True)),
    ("BertModel", "bert-base", None, {}, "hf", lambda: T.BertModel(T.BertConfig())),
    ("BertModel", "bert-base", None, {"pooler": False}, "hf",
     lambda: T.BertModel(T.BertConfig(), add_pooling_layer=False)),
    ("GPT2LMHeadModel", "gpt2", None, {}, "hf", lambda: T.GPT2LMHeadModel(T.GPT2Config())),
    ("GPT2Model", "gpt2", None, {}, "hf", lambda: T.GPT2Model(T.GPT2Config())),
    ("ViTForImageClassification", "vit-b16", None, {}, "hf",
     lambda: T.ViTForImageClassification(T.ViTConfig(num_labels=1000))),
    ("ViTModel", "vit-b16", "backbone", {}, "hf", lambda: T.ViTModel(T.ViTConfig())),
    ("ViTModel", "vit-b16", None, {"head": False}, "hf",
     lambda: T.ViTModel(T.ViTConfig(), add_pooling_layer=False)),
    ("CLIPModel", "clip-vit-b32", None, {}, "hf", lambda: T.CLIPModel(T.CLIPConfig())),
    ("ASTModel", "ast", None, {}, "hf", lambda: T.ASTModel(T.ASTConfig())),
    ("ASTForAudioClassification", "ast", "audioset", {}, "hf",
     lambda: T.ASTForAudioClassification(T.ASTConfig(num_labels=527))),
    ("DecisionTransformerModel", "decision-transformer", None, {}, "hf",
     lambda: T.DecisionTransformerModel(T.DecisionTransformerConfig())),
    ("LlamaForCausalLM", "llama", None, {}, "hf", lambda: T.LlamaForCausalLM(T.LlamaConfig())),
    ("LlamaModel", "llama", None, {"head": False}, "hf", lambda: T.LlamaModel(T.LlamaConfig())),
    ("WhisperForConditionalGeneration", "whisper-base", None, {}, "hf",
     lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(**WHISPER_BASE))),
    ("WhisperModel", "whisper-base", None, {}, "hf", lambda: T.WhisperModel(T.WhisperConfig(**WHISPER_BASE))),
    ("T5ForConditionalGeneration", "t5-base", None, {}, "hf",
     lambda: T.T5ForConditionalGeneration(T.T5Config(d_model=768, d_ff=3072, num_layers=12, num_heads=12))),
    ("SwinForImageClassification", "swin-t", None, {}, "hf",
     lambda: T.SwinForImageClassification(T.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                                       num_labels=1000))),
    ("SwinModel", "swin-t", None, {"head": False}, "hf", lambda: T.SwinModel(T.SwinConfig())),
    ("Dinov2Model", "dinov2", None, {}, "hf", lambda: T.Dinov2Model(T.Dinov2Config())),
    ("Dinov2ForImageClassification", "dinov2", None, {"head": True}, "hf",
     lambda: T.Dinov2ForImageClassification(T.Dinov2Config(num_labels=1000))),
    ("Dinov2WithRegistersModel", "dinov2", "dinov2-base-registers", {}, "hf",
     lambda: T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig())),
    ("Dinov2WithRegistersForImageClassification", "dinov2", "dinov2-base-registers", {"head": True}, "hf",
     lambda: T.Dinov2WithRegistersForImageClassification(T.Dinov2WithRegistersConfig(num_labels=1000))),
    ("JambaForCausalLM", "jamba", None, {}, "hf",   # Jamba-v0.1
     lambda: T.JambaForCausalLM(T.JambaConfig(use_mamba_kernels=False))),
    ("TimesformerModel", "timesformer", None, {}, "hf", lambda: T.TimesformerModel(T.TimesformerConfig())),
    ("TimesformerForVideoClassification", "timesformer", "k400", {}, "hf",
     lambda: T.TimesformerForVideoClassification(T.TimesformerConfig(num_labels=400))),
    ("Wav2Vec2Model", "wav2vec2", None, {}, "hf", lambda: T.Wav2Vec2Model(T.Wav2Vec2Config())),
    ("VideoMAEModel", "videomae", None, {}, "hf", lambda: T.VideoMAEModel(T.VideoMAEConfig())),
    ("DebertaV2Model", "deberta-v2", None, {}, "hf", lambda: T.DebertaV2Model(T.DebertaV2Config(
        vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        type_vocab_size=0, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, layer_norm_eps=1e-7))),
    ("VideoMAEModel", "videomae", None, {"final_norm": True}, "hf",
     lambda: T.VideoMAEModel(T.VideoMAEConfig(use_mean_pooling=False))),
    ("VideoMAEForVideoClassification", "videomae", "kinetics", {}, "hf",
     lambda: T.VideoMAEForVideoClassification(T.VideoMAEConfig(num_labels=400))),
    ("VideoMAEForVideoClassification", "videomae", "kinetics", {"final_norm": True, "pooling": "cls"}, "hf",
     lambda: T.VideoMAEForVideoClassification(T.VideoMAEConfig(num_labels=400, use_mean_pooling=False))),
    ("VivitModel", "vivit", None, {}, "hf", lambda: T.VivitModel(T.VivitConfig())),
    ("VivitModel", "vivit", None, {"pooler": False}, "hf",
     lambda: T.VivitModel(T.VivitConfig(), add_pooling_layer=False)),
    ("VivitForVideoClassification", "vivit", "k400", {}, "hf",
     lambda: T.VivitForVideoClassification(T.VivitConfig(num_labels=400))),
    ("SegformerModel", "segformer", None, {}, "hf", lambda: T.SegformerModel(T.SegformerConfig())),
    ("SegformerForSemanticSegmentation", "segformer", "segformer-b0-ade", {}, "hf",
     lambda: T.SegformerForSemanticSegmentation(T.SegformerConfig(num_labels=150))),
    ("ConvNextModel", "convnext", None, {}, "hf", lambda: T.ConvNextModel(T.ConvNextConfig())),
    ("ConvNextForImageClassification", "convnext", "convnext-tiny-224-cls", {}, "hf",
     lambda: T.ConvNextForImageClassification(T.ConvNextConfig(num_labels=1000))),
    ("MambaForCausalLM", "mamba", None, {}, "hf", lambda: T.MambaForCausalLM(T.MambaConfig(
        vocab_size=50280, hidden_size=768, num_hidden_layers=24))),   # mamba-130m
    ("MambaModel", "mamba", None, {"head": False}, "hf", lambda: T.MambaModel(T.MambaConfig(
        vocab_size=50280, hidden_size=768, num_hidden_layers=24))),
    ("Mamba2ForCausalLM", "mamba2", None, {}, "hf", lambda: T.Mamba2ForCausalLM(T.Mamba2Config())),  # Codestral-7B
    ("Mamba2Model", "mamba2", "mamba2-130m", {"head": False}, "hf", lambda: T.Mamba2Model(T.Mamba2Config(
        vocab_size=50288, hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64, n_groups=1))),
    ("RwkvForCausalLM", "rwkv", None, {}, "hf", lambda: T.RwkvForCausalLM(T.RwkvConfig(
        vocab_size=50277, hidden_size=768, num_hidden_layers=12))),   # rwkv-4-169m-pile
    ("RwkvModel", "rwkv", None, {"head": False}, "hf", lambda: T.RwkvModel(T.RwkvConfig(
        vocab_size=50277, hidden_size=768, num_hidden_layers=12))),
    ("AlbertModel", "albert", None, {}, "hf", lambda: T.AlbertModel(T.AlbertConfig(
        hidden_size=768, num_attention_heads=12, intermediate_size=3072))),   # albert-base-v2
    ("Qwen3ForCausalLM", "qwen3", None, {}, "hf", lambda: T.Qwen3ForCausalLM(T.Qwen3Config(   # Qwen3-8B
        hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_key_value_heads=8))),
    ("Qwen3MoeForCausalLM", "qwen3", "qwen3-30b-a3b", {}, "hf", lambda: T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(
        num_hidden_layers=48, head_dim=128, num_experts=128, norm_topk_prob=True))),
    ("Phi3ForCausalLM", "phi3", None, {}, "hf", lambda: T.Phi3ForCausalLM(T.Phi3Config())),   # Phi-3-mini-4k
    ("GraniteForCausalLM", "granite", None, {}, "hf", lambda: T.GraniteForCausalLM(T.GraniteConfig(   # 3.1-2B
        vocab_size=49155, hidden_size=2048, intermediate_size=8192, num_hidden_layers=40, num_key_value_heads=8,
        tie_word_embeddings=True))),
    ("Starcoder2ForCausalLM", "starcoder2", None, {}, "hf",
     lambda: T.Starcoder2ForCausalLM(T.Starcoder2Config())),   # StarCoder2-3B
    ("CohereForCausalLM", "cohere", None, {}, "hf", lambda: T.CohereForCausalLM(T.CohereConfig())),  # Command-R v01
    ("SmolLM3ForCausalLM", "smollm3", None, {}, "hf", lambda: T.SmolLM3ForCausalLM(T.SmolLM3Config())),  # SmolLM3-3B
    ("StableLmForCausalLM", "stablelm", None, {}, "hf",
     lambda: T.StableLmForCausalLM(T.StableLmConfig())),   # stablelm-3b-4e1t
    ("PaliGemmaForConditionalGeneration", "paligemma", None, {}, "hf",   # paligemma-3b-pt-224
     lambda: T.PaliGemmaForConditionalGeneration(T.PaliGemmaConfig(
         vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                            num_hidden_layers=27, num_attention_heads=16, patch_size=14, vision_use_head=False),
         text_config=dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                          num_attention_heads=8, num_key_value_heads=1, vocab_size=257216),
         image_token_index=257152))),
    ("SiglipModel", "siglip", None, {}, "hf", lambda: T.SiglipModel(T.SiglipConfig())),   # siglip-base-patch16-224
]


@pytest.mark.parametrize("cls,name,preset,overrides,mapping,make", CLAIMS,
                         ids=[f"{c[1]}<-{c[0]}{'-' + str(c[2] or c[3]) if c[2] or c[3] else ''}" for c in CLAIMS])
def test_every_claimed_reference_loads_through_the_map(cls, name, preset, overrides, mapping, make):
    """Every tensor of the reference is used and every parameter of the spec is set (shapes only)."""
    with torch.device("meta"):
        ref = make()
    assert type(ref).__name__ == cls
    s = spec(name, preset, **overrides)
    converted = convert_state_dict(s, ref.state_dict(), mapping)   # raises on anything unused or unset
    stats = sum(b.numel() for n, b in ref.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert sum(v.numel() for v in converted.values()) == sum(p.numel() for p in ref.parameters()) + stats


def _claimed_classes() -> set[str]:
    """Classes the docs say a map reads: `reads X`, `reads X/Y`, `reads X (or Y)`, as written in backticks
    or plainly after the word."""
    found = set()
    for doc in ("docs/models.md", "docs/weight-maps.md"):
        text = (ROOT / doc).read_text()
        for m in re.finditer(r"(?:\breads\b|[Mm]aps? `\w+`)([^.:;]*)", text):
            found |= set(re.findall(r"(?:nn\.)?([A-Z][A-Za-z0-9]*(?:Model|LMHeadModel|Classification|Layer|"
                                    r"Transformer|CausalLM|ConditionalGeneration))\b", m.group(1)))
    return found


def test_the_docs_claim_only_tested_references():
    claimed = _claimed_classes()
    assert {"ViTModel", "BertModel", "GPT2Model"} <= claimed        # the scan finds the claims
    assert claimed <= {c[0] for c in CLAIMS}, f"claimed but not tested: {claimed - {c[0] for c in CLAIMS}}"


def test_a_part_the_spec_leaves_out_is_named_when_loading():
    """ViTModel's pooler into the spec with the pooler off: the error says which switch leaves it out."""
    with torch.device("meta"):
        ref = T.ViTModel(T.ViTConfig())
    with pytest.raises(WeightMapError, match=r"pooler\.weight.*left out.*`pooler` is false"):
        convert_state_dict(spec("vit-b16", head=False), ref.state_dict(), "hf")


# ---------------------------------------------------------------- parity over config knobs, padding included

def left_padded(b: int, n: int, pads: tuple[int, ...]) -> torch.Tensor:
    """[b, n] int64 mask: row i starts with pads[i] zeros."""
    mask = torch.ones(b, n, dtype=torch.long)
    for i, p in enumerate(pads):
        mask[i, :p] = 0
    return mask


def close_where(got: torch.Tensor, want: torch.Tensor, keep: torch.Tensor, what: str) -> None:
    """Parity at the real (unpadded) positions: `keep` [B, n] selects rows of [B, n, ...] outputs."""
    assert_close(got[keep.bool()], want[keep.bool()], what)


# HF activation names → the `activation` op's kinds
ACT = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "silu": "silu", "tanh": "tanh",
       "quick_gelu": "quick_gelu"}

# (spec overrides, DecisionTransformerConfig overrides): two non-default values of each knob
DT_KNOBS = [
    ({}, {}),
    ({"act": "gelu_tanh"}, {"activation_function": "gelu_new"}),
    ({"act": "silu"}, {"activation_function": "silu"}),
    ({"eps": 1e-3}, {"layer_norm_epsilon": 1e-3}),
    ({"eps": 0.25}, {"layer_norm_epsilon": 0.25}),
    ({"d_ff": 40}, {"n_inner": 40}),
    ({"d_ff": 100}, {"n_inner": 100}),
]


@pytest.mark.parametrize("ours_kw,ref_kw", DT_KNOBS, ids=[str(k[1]) or "defaults" for k in DT_KNOBS])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "left-padded"])
def test_decision_transformer_knobs_and_mask(ours_kw, ref_kw, masked):
    torch.manual_seed(0)
    cfg = dict(state_dim=5, act_dim=3, hidden_size=24, max_ep_len=40, n_positions=48, n_head=3, n_layer=2)
    ref = randomize(T.DecisionTransformerModel(T.DecisionTransformerConfig(**{**cfg, **ref_kw})), 7)
    s = spec("decision-transformer", state_dim=5, act_dim=3, d_model=24, max_ep_len=40, n_positions=48, heads=3,
             layers=2, **{"d_ff": 96, **ours_kw})
    model = ours(s, ref)
    b, t = 3, 6
    x = dict(states=torch.randn(b, t, 5), actions=torch.randn(b, t, 3), returns_to_go=torch.randn(b, t, 1),
             timesteps=torch.randint(0, 40, (b, t)))
    mask = left_padded(b, t, (0, 2, 5))
    extra = {"attention_mask": mask} if masked else {}
    with torch.no_grad():
        got = model(**x, **extra)
        want = ref(**x, **extra)
    keep = mask if masked else torch.ones(b, t)
    for k in ("state_preds", "action_preds", "return_preds"):
        close_where(got[k], getattr(want, k), keep, k)


GPT2_KNOBS = [
    ({}, {}),
    ({"act": "gelu"}, {"activation_function": "gelu"}),
    ({"act": "relu"}, {"activation_function": "relu"}),
    ({"eps": 1e-3}, {"layer_norm_epsilon": 1e-3}),
    ({"eps": 0.25}, {"layer_norm_epsilon": 0.25}),
    ({"d_ff": 40}, {"n_inner": 40}),
    ({"d_ff": 100}, {"n_inner": 100}),
]


@pytest.mark.parametrize("ours_kw,ref_kw", GPT2_KNOBS, ids=[str(k[1]) or "defaults" for k in GPT2_KNOBS])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "left-padded"])
def test_gpt2_knobs_mask_and_positions(ours_kw, ref_kw, masked):
    torch.manual_seed(0)
    cfg = T.GPT2Config(vocab_size=91, n_positions=40, n_embd=24, n_layer=2, n_head=3, bos_token_id=0,
                       eos_token_id=0, **ref_kw)
    ref = randomize(T.GPT2LMHeadModel(cfg), 4)
    model = ours(spec("gpt2", vocab=91, max_len=40, d_model=24, heads=3, layers=2, **ours_kw), ref)
    b, n = 3, 9
    tokens = torch.randint(0, 91, (b, n))
    mask = left_padded(b, n, (0, 3, 8) if masked else (0, 0, 0))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)       # each row counts from its first real token
    extra = dict(mask=mask, positions=positions) if masked else {}
    with torch.no_grad():
        got = model(tokens=tokens, **extra)
        want = ref(input_ids=tokens, **(dict(attention_mask=mask, position_ids=positions) if masked else {}))
    close_where(got["logits"], want.logits, mask, "logits")


def test_gpt2_d_ff_follows_d_model_unless_set():
    """n_inner null = 4 × n_embd: the spec's `d_ff` is computed from `d_model` after --set."""
    assert spec("gpt2", d_model=64, heads=4).ir.params["d_ff"] == 256
    assert spec("gpt2", d_model=64, heads=4, d_ff=100).ir.params["d_ff"] == 100


# torch.nn: (spec overrides, layer kwargs). Norm placement (`norm_first`) is not a knob: see docs/models.md.
D, H, FF = 24, 3, 40
TORCH_KNOBS = [
    ({}, {}),
    ({"act": "gelu"}, {"activation": "gelu"}),
    ({"eps": 1e-3}, {"layer_norm_eps": 1e-3}),
    ({"eps": 0.25}, {"layer_norm_eps": 0.25}),
    ({"bias": False}, {"bias": False}),
    ({"bias": False, "act": "gelu", "eps": 1e-2}, {"bias": False, "activation": "gelu", "layer_norm_eps": 1e-2}),
]
KNOB_IDS = [str(k[1]) or "defaults" for k in TORCH_KNOBS]


def torch_masks(b: int, n: int, pads: tuple[int, ...], seed: int):
    """A right-padding key mask in torch's convention (true = padding) and a float logit mask [n, n]."""
    pad = torch.zeros(b, n, dtype=torch.bool)
    for i, p in enumerate(pads):
        if p:
            pad[i, n - p:] = True
    return pad, torch.randn(n, n, generator=torch.Generator().manual_seed(seed))


def heads_of(m: torch.Tensor, b: int) -> torch.Tensor:
    """torch's [n, m] float mask as the spec's [B, heads, n, m] logit bias (a broadcast view)."""
    return m[None, None].expand(b, H, *m.shape)


@pytest.mark.parametrize("ours_kw,ref_kw", TORCH_KNOBS, ids=KNOB_IDS)
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "masked"])
def test_encoder_block_knobs_and_masks(ours_kw, ref_kw, masked):
    torch.manual_seed(0)
    ref = randomize(nn.TransformerEncoderLayer(D, H, FF, batch_first=True, **ref_kw), 1)
    model = ours(spec("encoder-block", d_model=D, heads=H, d_ff=FF, **ours_kw), ref, "torch")
    b, n = 3, 7
    x = torch.randn(b, n, D)
    pad, logits = torch_masks(b, n, (0, 2, 5), 2)
    with torch.no_grad():
        if masked:
            got = model(x=x, src_key_padding_mask=pad, src_mask=heads_of(logits, b))["y"]
            want = ref(x, src_mask=logits, src_key_padding_mask=pad)
        else:
            got, want = model(x=x)["y"], ref(x)
    close_where(got, want, ~pad, "y")


@pytest.mark.parametrize("ours_kw,ref_kw", TORCH_KNOBS + [({"causal": False}, {})], ids=KNOB_IDS + ["non-causal"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "masked"])
def test_decoder_block_knobs_and_masks(ours_kw, ref_kw, masked):
    torch.manual_seed(0)
    ref = randomize(nn.TransformerDecoderLayer(D, H, FF, batch_first=True, **ref_kw), 1)
    model = ours(spec("decoder-block", d_model=D, heads=H, d_ff=FF, **ours_kw), ref, "torch")
    b, t, s = 3, 6, 8
    x, memory = torch.randn(b, t, D), torch.randn(b, s, D)
    causal = ours_kw.get("causal", True)
    tgt_pad, tgt_logits = torch_masks(b, t, (0, 1, 3), 2)
    mem_pad, _ = torch_masks(b, s, (2, 0, 6), 3)
    mem_logits = torch.randn(t, s, generator=torch.Generator().manual_seed(4))
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(t) if causal else None
    kw = {}
    if masked:
        tgt_mask = tgt_logits if tgt_mask is None else tgt_mask + tgt_logits
        kw = dict(tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad, memory_mask=mem_logits)
    with torch.no_grad():
        want = ref(x, memory, tgt_mask=tgt_mask, tgt_is_causal=causal and not masked, **kw)
        feed = dict(tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad, tgt_mask=heads_of(tgt_logits, b),
                    memory_mask=heads_of(mem_logits, b)) if masked else {}
        got = model(x=x, memory=memory, **feed)["y"]
    close_where(got, want, ~tgt_pad if masked else torch.ones(b, t), "y")


@pytest.mark.parametrize("ours_kw,ref_kw", TORCH_KNOBS[:2] + TORCH_KNOBS[-1:], ids=KNOB_IDS[:2] + KNOB_IDS[-1:])
def test_transformer_knobs_and_every_mask(ours_kw, ref_kw):
    torch.manual_seed(0)
    ref = randomize(nn.Transformer(D, H, 2, 2, FF, batch_first=True, **ref_kw), 1)
    model = ours(spec("transformer", d_model=D, heads=H, d_ff=FF, encoder_layers=2, decoder_layers=2, **ours_kw),
                 ref, "torch")
    b, s, t = 3, 8, 6
    src, tgt = torch.randn(b, s, D), torch.randn(b, t, D)
    src_pad, src_logits = torch_masks(b, s, (0, 3, 1), 5)
    tgt_pad, tgt_logits = torch_masks(b, t, (2, 0, 1), 6)
    mem_logits = torch.randn(t, s, generator=torch.Generator().manual_seed(7))
    causal = nn.Transformer.generate_square_subsequent_mask(t)
    with torch.no_grad():
        want = ref(src, tgt, src_mask=src_logits, tgt_mask=causal + tgt_logits, memory_mask=mem_logits,
                   src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
        got = model(src=src, tgt=tgt, src_mask=heads_of(src_logits, b), tgt_mask=heads_of(tgt_logits, b),
                    memory_mask=heads_of(mem_logits, b), src_key_padding_mask=src_pad,
                    tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)["y"]
    close_where(got, want, ~tgt_pad, "y")


BERT_KNOBS = [
    ({}, {}, True),
    ({"act": "gelu_tanh"}, {"hidden_act": "gelu_new"}, True),
    ({"act": "relu"}, {"hidden_act": "relu"}, True),
    ({"eps": 1e-5}, {"layer_norm_eps": 1e-5}, True),
    ({"eps": 0.25}, {"layer_norm_eps": 0.25}, True),
    ({"pooler": False}, {}, False),
]


@pytest.mark.parametrize("ours_kw,ref_kw,pooler", BERT_KNOBS, ids=[str(k[1] or k[0]) or "defaults" for k in BERT_KNOBS])
def test_bert_knobs_with_padding(ours_kw, ref_kw, pooler):
    torch.manual_seed(0)
    cfg = T.BertConfig(vocab_size=91, max_position_embeddings=40, hidden_size=24, num_attention_heads=3,
                       intermediate_size=40, num_hidden_layers=2, **ref_kw)
    ref = randomize(T.BertModel(cfg, add_pooling_layer=pooler), 2)
    model = ours(spec("bert-base", vocab=91, max_len=40, d_model=24, heads=3, d_ff=40, layers=2, **ours_kw), ref)
    b, n = 3, 9
    ids, types = torch.randint(0, 91, (b, n)), torch.randint(0, 2, (b, n))
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, 6:], mask[2, 2:] = 0, 0
    with torch.no_grad():
        got = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
        want = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
    close_where(got["last_hidden_state"], want.last_hidden_state, mask, "last_hidden_state")
    if pooler:
        assert_close(got["pooler_output"], want.pooler_output, "pooler_output")
    else:
        assert "pooler_output" not in got


VIT_BASE = dict(image_size=36, patch_size=8, hidden_size=24, num_attention_heads=3, intermediate_size=40,
                num_hidden_layers=2, layer_norm_eps=1e-6)
VIT_KNOBS = [  # (spec overrides, ViTConfig overrides, reference class)
    ({}, {}, "ViTForImageClassification"),
    ({"act": "gelu_tanh"}, {"hidden_act": "gelu_new"}, "ViTForImageClassification"),
    ({"act": "silu"}, {"hidden_act": "silu"}, "ViTForImageClassification"),
    ({"eps": 1e-12}, {"layer_norm_eps": 1e-12}, "ViTForImageClassification"),
    ({"eps": 0.25}, {"layer_norm_eps": 0.25}, "ViTForImageClassification"),
    ({"qkv_bias": False}, {"qkv_bias": False}, "ViTForImageClassification"),
    ({"image": 32}, {"image_size": 32}, "ViTForImageClassification"),     # a multiple of the patch
    ({"image": 39}, {"image_size": 39}, "ViTForImageClassification"),     # 7 pixels dropped per side
    ({"head": False, "pooler": True}, {}, "ViTModel"),
    ({"head": False, "pooler": True, "pooler_act": "relu"}, {"pooler_act": "relu"}, "ViTModel"),
    ({"head": False, "pooler": True, "pooler_act": "gelu"}, {"pooler_act": "gelu"}, "ViTModel"),
]


@pytest.mark.parametrize("ours_kw,ref_kw,cls", VIT_KNOBS, ids=[f"{c}-{k[1] or k[0]}" for *k, c in VIT_KNOBS])
def test_vit_knobs(ours_kw, ref_kw, cls):
    torch.manual_seed(0)
    cfg = T.ViTConfig(**{**VIT_BASE, **ref_kw}, num_labels=5)
    ref = randomize(getattr(T, cls)(cfg), 3)
    model = ours(spec("vit-b16", patch=8, d_model=24, heads=3, d_ff=40, layers=2, classes=5,
                      **{"image": 36, **ours_kw}), ref)
    side = cfg.image_size
    pixels = torch.randn(2, 3, side, side)
    with torch.no_grad():
        got, want = model(pixel_values=pixels), ref(pixel_values=pixels)
    if cls == "ViTModel":
        assert_close(got["last_hidden_state"], want.last_hidden_state, "last_hidden_state")
        assert_close(got["pooler_output"], want.pooler_output, "pooler_output")
    else:
        assert_close(got["logits"], want.logits, "logits")


CLIP_KNOBS = [
    ({}, {}, {}),
    ({"text_act": "gelu", "vision_act": "gelu_tanh"}, {"hidden_act": "gelu"}, {"hidden_act": "gelu_new"}),
    ({"text_act": "relu", "vision_act": "silu"}, {"hidden_act": "relu"}, {"hidden_act": "silu"}),
    ({"text_eps": 1e-3, "vision_eps": 0.2}, {"layer_norm_eps": 1e-3}, {"layer_norm_eps": 0.2}),
    ({"text_eps": 0.25, "vision_eps": 1e-7}, {"layer_norm_eps": 0.25}, {"layer_norm_eps": 1e-7}),
    ({"text_pool": "argmax"}, {"eos_token_id": 2}, {}),        # transformers' legacy rule
    ({"eos_token": 7}, {"eos_token_id": 7}, {}),                # an end-of-text id below other ids
]


@pytest.mark.parametrize("ours_kw,text_kw,vision_kw", CLIP_KNOBS, ids=[str(k[0]) or "defaults" for k in CLIP_KNOBS])
def test_clip_knobs_and_pooling_rule(ours_kw, text_kw, vision_kw):
    torch.manual_seed(0)
    vocab = 61
    text = dict(vocab_size=vocab, max_position_embeddings=20, hidden_size=24, num_attention_heads=3,
                intermediate_size=40, num_hidden_layers=2, eos_token_id=vocab - 1)
    vision = dict(image_size=32, patch_size=8, hidden_size=24, num_attention_heads=3, intermediate_size=40,
                  num_hidden_layers=2)
    ref = randomize(T.CLIPModel(T.CLIPConfig(text_config={**text, **text_kw}, vision_config={**vision, **vision_kw},
                                             projection_dim=16)), 5)
    model = ours(spec("clip-vit-b32", vocab=vocab, text_len=20, text_width=24, text_heads=3, text_ff=40,
                      text_layers=2, image=32, patch=8, vision_width=24, vision_heads=3, vision_ff=40,
                      vision_layers=2, embed=16, **{"eos_token": vocab - 1, **ours_kw}), ref)
    eos = ref.config.text_config.eos_token_id
    ids = torch.randint(0, vocab, (3, 11), generator=torch.Generator().manual_seed(1))
    ids[ids == eos] = (eos + 1) % vocab
    ids[0, 10] = ids[1, 4] = ids[1, 8] = ids[2, 0] = eos          # last, twice, first
    ids[0, 3] = vocab - 1 if eos != vocab - 1 else ids[0, 3]      # an id above the end-of-text one
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, want = model(pixel_values=pixels, input_ids=ids), ref(pixel_values=pixels, input_ids=ids)
    for name in ("logits_per_image", "text_embeds", "image_embeds"):
        assert_close(got[name], getattr(want, name), name)


AST_KNOBS = [
    ({}, {}),
    ({"act": "gelu_tanh"}, {"hidden_act": "gelu_new"}),
    ({"act": "relu"}, {"hidden_act": "relu"}),
    ({"eps": 1e-5}, {"layer_norm_eps": 1e-5}),
    ({"eps": 0.25}, {"layer_norm_eps": 0.25}),
    ({"qkv_bias": False}, {"qkv_bias": False}),
    ({"freq_stride": 3, "time_stride": 5}, {"frequency_stride": 3, "time_stride": 5}),
]


@pytest.mark.parametrize("ours_kw,ref_kw", AST_KNOBS, ids=[str(k[1]) or "defaults" for k in AST_KNOBS])
def test_ast_knobs(ours_kw, ref_kw):
    torch.manual_seed(0)
    cfg = dict(hidden_size=24, num_attention_heads=3, intermediate_size=40, num_hidden_layers=2, patch_size=8,
               frequency_stride=4, time_stride=6, max_length=30, num_mel_bins=20)
    ref = randomize(T.ASTModel(T.ASTConfig(**{**cfg, **ref_kw})), 6)
    model = ours(spec("ast", d_model=24, heads=3, d_ff=40, layers=2, patch=8, frames=30, mels=20,
                      **{"freq_stride": 4, "time_stride": 6, **ours_kw}), ref)
    x = torch.randn(2, 30, 20)
    with torch.no_grad():
        got, want = model(input_values=x), ref(input_values=x)
    assert_close(got["last_hidden_state"], want.last_hidden_state, "last_hidden_state")
    assert_close(got["pooler_output"], want.pooler_output, "pooler_output")


# ---------------------------------------------------------------- a checkpoint that doesn't fit says so

def _cli(capsys, *argv):
    import cli
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


GPT2_SIZES = dict(vocab_size=91, n_positions=40, n_embd=24, n_layer=2, n_head=3)
GPT2_SET = ["--dims", "n=5", "--set", "vocab=91", "max_len=40", "d_model=24", "layers=2", "heads=3"]


def test_checkpoint_config_with_other_shape_free_knobs_is_refused(tmp_path, capsys):
    """Activation, eps and head count change no tensor: the checkpoint's config.json is compared instead."""
    ref = T.GPT2LMHeadModel(T.GPT2Config(**GPT2_SIZES, activation_function="gelu", layer_norm_epsilon=1e-3))
    ref.save_pretrained(tmp_path / "ckpt")
    spec_file = SPECS / "gpt2.yaml"
    rc, _, err = _cli(capsys, "build", spec_file, *GPT2_SET, "--weights", tmp_path / "ckpt")
    assert rc == 1, err
    assert "`act` is gelu_tanh in the spec, gelu in the config (`activation_function`)" in err
    assert "`eps` is 1.0e-05 in the spec, 0.001 in the config (`layer_norm_epsilon`)" in err
    rc, _, err = _cli(capsys, "build", spec_file, *GPT2_SET, "act=gelu", "eps=1e-3", "heads=6",
                      "--weights", tmp_path / "ckpt")
    assert rc == 1 and "`heads` is 6 in the spec, 3 in the config (`n_head`)" in err, err
    rc, out, err = _cli(capsys, "build", spec_file, *GPT2_SET, "act=gelu", "eps=1e-3", "--weights", tmp_path / "ckpt")
    assert rc == 0, err


def test_clip_checkpoint_pooling_rule_is_checked(tmp_path, capsys):
    from graphformer.frontend.hf import config_mismatches
    cfg = T.CLIPConfig(text_config=dict(eos_token_id=2)).to_dict()
    assert config_mismatches(spec("clip-vit-b32").ir.params, cfg) == [
        "`text_pool` is first in the spec, argmax in the config (derived from several fields)"]
    assert config_mismatches(spec("clip-vit-b32", text_pool="argmax").ir.params, cfg) == []
    assert config_mismatches(spec("clip-vit-b32").ir.params, T.CLIPConfig().to_dict()) == []


# ---------------------------------------------------------------- training mode: the same dropout sites

def _train_pair(name):
    """(reference, ours, our inputs, reference inputs, (our output, reference output)) with non-zero dropout
    rates, each rate different, so a site with the wrong rate or in the wrong place changes the result."""
    torch.manual_seed(0)
    if name == "gpt2":
        rates = dict(attn_pdrop=0.2, resid_pdrop=0.3, embd_pdrop=0.1)
        ref = T.GPT2LMHeadModel(T.GPT2Config(**GPT2_SIZES, **rates))
        s = spec("gpt2", vocab=91, max_len=40, d_model=24, heads=3, layers=2, **rates)
        ids = torch.randint(0, 91, (2, 7))
        return ref, s, dict(tokens=ids), dict(input_ids=ids), ("logits", "logits")
    if name == "bert-base":
        ref = T.BertModel(T.BertConfig(vocab_size=91, max_position_embeddings=40, hidden_size=24, num_attention_heads=3,
                                       intermediate_size=40, num_hidden_layers=2, hidden_dropout_prob=0.3,
                                       attention_probs_dropout_prob=0.2))
        s = spec("bert-base", vocab=91, max_len=40, d_model=24, heads=3, d_ff=40, layers=2, hidden_dropout=0.3,
                 attn_dropout=0.2)
        kw = dict(input_ids=torch.randint(0, 91, (2, 7)), token_type_ids=torch.zeros(2, 7, dtype=torch.long),
                  attention_mask=torch.ones(2, 7, dtype=torch.long))
        return ref, s, kw, kw, ("last_hidden_state", "last_hidden_state")
    if name == "vit-b16":
        ref = T.ViTForImageClassification(T.ViTConfig(**VIT_BASE, num_labels=5, hidden_dropout_prob=0.3,
                                                      attention_probs_dropout_prob=0.2))
        s = spec("vit-b16", image=36, patch=8, d_model=24, heads=3, d_ff=40, layers=2, classes=5,
                 hidden_dropout=0.3, attn_dropout=0.2)
        x = torch.randn(2, 3, 36, 36)
        return ref, s, dict(pixel_values=x), dict(pixel_values=x), ("logits", "logits")
    if name == "ast":
        ref = T.ASTModel(T.ASTConfig(hidden_size=24, num_attention_heads=3, intermediate_size=40, num_hidden_layers=2,
                                     patch_size=8, frequency_stride=4, time_stride=6, max_length=30, num_mel_bins=20,
                                     hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.2))
        s = spec("ast", d_model=24, heads=3, d_ff=40, layers=2, patch=8, freq_stride=4, time_stride=6, frames=30,
                 mels=20, hidden_dropout=0.3, attn_dropout=0.2)
        x = torch.randn(2, 30, 20)
        return ref, s, dict(input_values=x), dict(input_values=x), ("last_hidden_state", "last_hidden_state")
    if name == "decision-transformer":
        rates = dict(attn_pdrop=0.2, resid_pdrop=0.3, embd_pdrop=0.1)
        ref = T.DecisionTransformerModel(T.DecisionTransformerConfig(
            state_dim=5, act_dim=3, hidden_size=24, max_ep_len=40, n_positions=48, n_head=3, n_layer=2, **rates))
        s = spec("decision-transformer", state_dim=5, act_dim=3, d_model=24, max_ep_len=40, n_positions=48, heads=3,
                 layers=2, **rates)
        kw = dict(states=torch.randn(2, 4, 5), actions=torch.randn(2, 4, 3), returns_to_go=torch.randn(2, 4, 1),
                  timesteps=torch.randint(0, 40, (2, 4)))
        return ref, s, kw, kw, ("action_preds", "action_preds")
    raise AssertionError(name)


# torch.nn's layers are not here: with the same sites (docs/models.md) they still draw other masks than
# ours, for a reason not found yet (nn.MultiheadAttention's own dropout path)
@pytest.mark.parametrize("name", ["gpt2", "bert-base", "vit-b16", "ast", "decision-transformer"])
def test_training_mode_draws_the_same_dropout_masks_as_the_reference(name):
    """Same seed, train mode: the same outputs, so every dropout site has the reference's rate, place and
    order (a site with another rate, or moved, draws other masks)."""
    ref, s, ours_in, ref_in, (out, ref_out) = _train_pair(name)
    model = ours(s, ref.eval()).train()
    ref.train()
    torch.manual_seed(5)
    got = model(**ours_in)[out]
    torch.manual_seed(5)
    want = getattr(ref(**ref_in), ref_out)
    assert_close(got, want, f"{name} in train mode")
    torch.manual_seed(6)
    assert (model(**ours_in)[out] - want).abs().max() > 1e-3      # the masks do depend on the seed


def test_a_dropout_site_missing_is_seen_in_train_mode():
    """The check above can fail: GPT-2 without dropout on the attention probabilities draws other masks."""
    ref, _, ours_in, ref_in, _ = _train_pair("gpt2")
    s = spec("gpt2", vocab=91, max_len=40, d_model=24, heads=3, layers=2, attn_pdrop=0.0, resid_pdrop=0.3,
             embd_pdrop=0.1)
    model = ours(s, ref.eval()).train()
    ref.train()
    torch.manual_seed(5)
    got = model(**ours_in)["logits"]
    torch.manual_seed(5)
    assert (got - ref(**ref_in).logits).abs().max() > 1e-3
