"""`graphformer import hf`: for every supported family a tiny random transformers model is saved with
save_pretrained into a temporary directory (nothing is downloaded), imported through the CLI, built with
the directory's weights, and compared with the transformers model (≤ 1e-5 × output scale, fp32).
Also: sharded and pytorch_model.bin checkpoints, refused knobs (exit 1, the field named), unknown
model types (exit 2), `check` on a config (one diagnostic), and the shape-mismatch hint."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import cli  # noqa: E402
import graphformer  # noqa: E402
from graphformer.backends.torch.weights import load_weights  # noqa: E402
from graphformer.frontend import hf  # noqa: E402
from graphformer.weights.maps import read_state_dict  # noqa: E402
from parity import assert_close  # noqa: E402

T = transformers
T.logging.set_verbosity_error()
V = 97   # vocabulary of the text models


def llama_cfg(**kw):
    return {**dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=1,
                   intermediate_size=72, max_position_embeddings=64, rope_theta=321.0, rms_norm_eps=1e-6), **kw}


def tokens(b=2, n=9, vocab=V):
    return torch.randint(0, vocab, (b, n), generator=torch.Generator().manual_seed(1))


def lm(ids=None):
    ids = tokens() if ids is None else ids
    return {"input_ids": ids}, {"tokens": ids}, [("logits", "logits")]


def bert_io():
    ids, types = tokens(3, 10), torch.randint(0, 2, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    kw = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    return kw, kw, [("last_hidden_state", "last_hidden_state"), ("pooler_output", "pooler_output")]


def vit_io():
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    return {"pixel_values": x}, {"pixel_values": x}, [("logits", "logits")]


def swin_io():
    x = torch.randn(2, 3, 35, 35, generator=torch.Generator().manual_seed(2))
    return {"pixel_values": x}, {"pixel_values": x}, [("logits", "logits")]


def clip_io():
    ids = tokens(3, 7, vocab=60)
    ids[:, 5] = 60
    kw = {"pixel_values": torch.randn(2, 3, 16, 16), "input_ids": ids}
    return kw, kw, [("logits_per_image", "logits_per_image"), ("text_embeds", "text_embeds")]


def ast_io():
    x = torch.randn(2, 40, 16, generator=torch.Generator().manual_seed(3))
    return {"input_values": x}, {"input_values": x}, [("last_hidden_state", "last_hidden_state")]


def whisper_io():
    g = torch.Generator().manual_seed(6)
    kw = {"input_features": torch.randn(2, 7, 18, generator=g), "decoder_input_ids": tokens(2, 5)}
    return kw, kw, [("logits", "logits"), ("encoder_last_hidden_state", "encoder_hidden")]


def dt_io():
    g = torch.Generator().manual_seed(4)
    kw = dict(states=torch.randn(2, 6, 5, generator=g), actions=torch.randn(2, 6, 3, generator=g),
              returns_to_go=torch.randn(2, 6, 1, generator=g), timesteps=torch.randint(0, 30, (2, 6), generator=g))
    return kw, kw, [("action_preds", "action_preds"), ("state_preds", "state_preds")]


def convnext_io():   # odd sides: every downsampling rounds down
    x = torch.randn(2, 2, 29, 27, generator=torch.Generator().manual_seed(2))
    return {"pixel_values": x}, {"pixel_values": x}, [("last_hidden_state", "last_hidden_state"),
                                                      ("pooler_output", "pooler_output")]


def videomae_io():
    x = torch.randn(2, 6, 3, 15, 15, generator=torch.Generator().manual_seed(2))
    return {"pixel_values": x}, {"pixel_values": x}, [("last_hidden_state", "last_hidden_state")]


def segformer_io(output="last_hidden_state"):
    x = torch.randn(2, 3, 45, 45, generator=torch.Generator().manual_seed(2))
    return {"pixel_values": x}, {"pixel_values": x}, [(output, output)]


SEGFORMER_CFG = dict(hidden_sizes=[8, 12, 20, 24], num_attention_heads=[1, 2, 4, 3], depths=[1, 2, 1, 1],
                     sr_ratios=[4, 2, 2, 1], mlp_ratios=[2, 2, 2, 2], patch_sizes=[5, 3, 3, 3], strides=[3, 2, 2, 2],
                     hidden_act="gelu_new")

# family: (model class, config class, config kwargs, inputs → (reference kwargs, our kwargs, output pairs))
CASES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", llama_cfg(hidden_act="gelu"), lm),
    "llama3-rope-scaling-tied": ("LlamaForCausalLM", "LlamaConfig", llama_cfg(
        tie_word_embeddings=True, attention_bias=True,
        rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                      "original_max_position_embeddings": 8, "rope_theta": 500.0}), lm),
    "mistral": ("MistralForCausalLM", "MistralConfig", llama_cfg(sliding_window=4, head_dim=8), lm),
    "mixtral": ("MixtralForCausalLM", "MixtralConfig", llama_cfg(num_local_experts=3, num_experts_per_tok=2), lm),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", llama_cfg(tie_word_embeddings=True), lm),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(
        vocab_size=V, hidden_size=42, num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=1, head_dim=10,
        intermediate_size=56, max_position_embeddings=64, sliding_window=3, query_pre_attn_scalar=10,
        attn_logit_softcapping=2.0, final_logit_softcapping=3.0, rms_norm_eps=1e-6, rope_theta=500.0,
        attn_implementation="eager"), lm),
    "olmo2": ("Olmo2ForCausalLM", "Olmo2Config", llama_cfg(), lm),
    "phi": ("PhiForCausalLM", "PhiConfig", dict(vocab_size=V, hidden_size=40, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=56,
                                                max_position_embeddings=64, partial_rotary_factor=0.4,
                                                rope_theta=300.0, layer_norm_eps=1e-6), lm),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(vocab_size=V, hidden_size=40, num_hidden_layers=2,
                                                            num_attention_heads=5, intermediate_size=56,
                                                            max_position_embeddings=64, rotary_pct=0.5,
                                                            rotary_emb_base=300), lm),
    "bloom": ("BloomForCausalLM", "BloomConfig", dict(vocab_size=V, hidden_size=36, n_layer=2, n_head=6), lm),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", dict(vocab_size=V, n_positions=32, n_embd=40, n_layer=2, n_head=5,
                                                   layer_norm_epsilon=1e-6, activation_function="gelu"), lm),
    "bert": ("BertModel", "BertConfig", dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                                             intermediate_size=56, max_position_embeddings=32, type_vocab_size=2,
                                             hidden_act="gelu_new", layer_norm_eps=1e-7), bert_io),
    "vit": ("ViTForImageClassification", "ViTConfig", dict(image_size=24, patch_size=8, hidden_size=40,
                                                           num_hidden_layers=2, num_attention_heads=5,
                                                           intermediate_size=56, num_labels=7, qkv_bias=False),
            vit_io),
    "swin": ("SwinForImageClassification", "SwinConfig", dict(
        image_size=35, patch_size=4, embed_dim=6, window_size=2, depths=[1, 2, 1, 1], num_heads=[1, 2, 3, 3],
        num_labels=5, layer_norm_eps=1e-6, hidden_act="gelu_new"), swin_io),
    "clip": ("CLIPModel", "CLIPConfig", dict(
        text_config=dict(vocab_size=61, max_position_embeddings=12, hidden_size=32, num_attention_heads=4,
                         intermediate_size=48, num_hidden_layers=2, eos_token_id=60),
        vision_config=dict(image_size=16, patch_size=8, hidden_size=40, num_attention_heads=5, intermediate_size=56,
                           num_hidden_layers=2), projection_dim=24), clip_io),
    "ast": ("ASTModel", "ASTConfig", dict(max_length=40, num_mel_bins=16, patch_size=8, frequency_stride=4,
                                          time_stride=6, hidden_size=40, num_attention_heads=5, intermediate_size=56,
                                          num_hidden_layers=2, layer_norm_eps=1e-6), ast_io),
    "whisper": ("WhisperForConditionalGeneration", "WhisperConfig", dict(
        vocab_size=V, num_mel_bins=7, d_model=40, encoder_layers=2, decoder_layers=1, encoder_attention_heads=5,
        decoder_attention_heads=4, encoder_ffn_dim=56, decoder_ffn_dim=48, max_source_positions=9,
        max_target_positions=12, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3),
        whisper_io),
    "decision_transformer": ("DecisionTransformerModel", "DecisionTransformerConfig", dict(
        state_dim=5, act_dim=3, hidden_size=40, max_ep_len=30, n_positions=40, n_head=5, n_inner=56, n_layer=2),
        dt_io),
    "convnext": ("ConvNextModel", "ConvNextConfig", dict(
        num_channels=2, patch_size=2, hidden_sizes=[8, 12, 16, 20], depths=[1, 2, 1, 1], hidden_act="gelu_new",
        layer_norm_eps=1e-6, layer_scale_init_value=0.5), convnext_io),
    "videomae": ("VideoMAEModel", "VideoMAEConfig", dict(
        image_size=15, patch_size=5, tubelet_size=3, num_frames=6, hidden_size=30, num_hidden_layers=2,
        num_attention_heads=3, intermediate_size=41, use_mean_pooling=False, layer_norm_eps=1e-6), videomae_io),
    "segformer": ("SegformerModel", "SegformerConfig", SEGFORMER_CFG, segformer_io),
    "segformer-unreduced": ("SegformerModel", "SegformerConfig", dict(SEGFORMER_CFG, sr_ratios=[1, 1, 1, 1]),
                            segformer_io),
    "segformer-semantic": ("SegformerForSemanticSegmentation", "SegformerConfig", dict(
        SEGFORMER_CFG, decoder_hidden_size=20, num_labels=7), lambda: segformer_io("logits")),
}
# The image side is the input's size, not a config field: SegFormer's spec folds tokens into grids of a known side
SETS = dict.fromkeys(("segformer", "segformer-semantic", "segformer-unreduced"), {"image": 45})


def reference(case):
    cls, cfg_cls, kw, _ = CASES[case]
    torch.manual_seed(0)
    ref = getattr(T, cls)(getattr(T, cfg_cls)(**kw))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():   # norm scales and biases away from 1 and 0, so a wrong map can't hide
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in ref.named_buffers():   # batch norms' running statistics are weights too
            if name.endswith(("running_mean", "running_var")):
                b.add_(0.1 * torch.rand(b.shape, generator=g))
    return ref.eval()


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def imported(capsys, directory, tmp_path, overrides=None):
    spec_file = tmp_path / "spec.yaml"
    rc, _, err = run(capsys, "import", "hf", directory, "-o", spec_file)
    assert rc == 0, err
    assert "warning" not in err, err     # every field save_pretrained writes is known, none missing
    rc, _, err = run(capsys, "check", spec_file)
    assert rc == 0 and "warning" not in err, err
    return graphformer.load(spec_file, overrides=overrides)


def assert_equal_outputs(case, ref, model):
    ref_kw, our_kw, pairs = CASES[case][3]()
    with torch.no_grad():
        want, got = ref(**ref_kw), model(**our_kw)
    for theirs, ours in pairs:
        assert_close(got[ours], getattr(want, theirs), f"{case} {ours}")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_imported_spec_with_checkpoint_weights_equals_transformers(case, tmp_path, capsys):
    ref = reference(case)
    ref.save_pretrained(tmp_path / "ckpt")   # Mixtral's experts one tensor each, as the hub's: the map reads both layouts
    spec = imported(capsys, tmp_path / "ckpt", tmp_path, SETS.get(case))
    model = graphformer.build(spec).eval()
    load_weights(model, read_state_dict(str(tmp_path / "ckpt")), "hf", spec)
    assert_equal_outputs(case, ref, model)


def test_sharded_checkpoint_through_build_and_from_pretrained(tmp_path, capsys):
    ref = reference("qwen2")
    ref.save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    assert (tmp_path / "ckpt" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "ckpt").glob("model-*-of-*.safetensors"))) > 2
    spec = imported(capsys, tmp_path / "ckpt", tmp_path)
    rc, out, err = run(capsys, "build", tmp_path / "spec.yaml", "--weights", tmp_path / "ckpt")
    assert rc == 0 and "through weight map `hf`" in out, err
    model = graphformer.from_pretrained(tmp_path / "ckpt")
    spec = model.spec
    assert spec.params["tie_embeddings"] is True and spec.params["rope_theta"] == 321.0
    assert_equal_outputs("qwen2", ref, model)


def test_pytorch_model_bin_checkpoint(tmp_path, capsys):
    ref = reference("gpt2")
    ckpt = tmp_path / "ckpt"
    ref.config.save_pretrained(ckpt)
    torch.save(ref.state_dict(), ckpt / "pytorch_model.bin")
    model = graphformer.from_pretrained(ckpt)
    assert_equal_outputs("gpt2", ref, model)
    rc, _, err = run(capsys, "build", "specs/gpt2.yaml", "--preset", "tiny", "--weights", ckpt)
    assert rc == 1 and "shape mismatch" in err     # the bundled tiny preset is not this model


def write_config(tmp_path, **cfg):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def llama_json(**kw):
    return {"model_type": "llama", **llama_cfg(), **kw}


@pytest.mark.parametrize("cfg,field", [
    (llama_json(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), "rope_parameters"),
    (llama_json(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
    (llama_json(head_dim=16), "head_dim"),
    (llama_json(hidden_act="mish"), "hidden_act"),
    ({"model_type": "vit", "hidden_size": 32, "pooler_output_size": 16}, "pooler_output_size"),
    ({"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"model_type": "mixtral", **llama_cfg(), "sliding_window": 8}, "sliding_window"),
    ({"model_type": "qwen2", **llama_cfg(), "use_sliding_window": True}, "use_sliding_window"),
    ({"model_type": "bert", "position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"model_type": "clip", "text_config": {"eos_token_id": [7, 8], "vocab_size": 60}}, "text_config.eos_token_id"),
    ({"model_type": "whisper", "tie_word_embeddings": False}, "tie_word_embeddings"),
    ({"model_type": "whisper", "activation_function": "mish"}, "activation_function"),
    ({"model_type": "convnext", "num_stages": 3}, "num_stages"),
    ({"model_type": "convnext", "depths": [1, 2, 3]}, "depths"),
    ({"model_type": "convnext", "layer_scale_init_value": 0.0}, "layer_scale_init_value"),
    ({"model_type": "convnext", "patch_size": [4, 2]}, "patch_size"),
    ({"model_type": "videomae", "image_size": [32, 16]}, "image_size"),
    ({"model_type": "videomae", "tubelet_size": [2, 16, 16]}, "tubelet_size"),
    ({"model_type": "segformer", "sr_ratios": [8, 4, 2, 2]}, "sr_ratios"),
    ({"model_type": "segformer", "sr_ratios": [8, 1, 2, 1]}, "sr_ratios"),
    ({"model_type": "segformer", "mlp_ratios": [4, 4, 4, 8]}, "mlp_ratios"),
    ({"model_type": "segformer", "num_attention_heads": 4}, "num_attention_heads"),
    ({"model_type": "segformer", "reshape_last_stage": False}, "reshape_last_stage"),
    ({"model_type": "segformer", "num_encoder_blocks": 3}, "num_encoder_blocks"),
    ({"model_type": "segformer", "architectures": 5}, "architectures"),
    ({"model_type": "timesformer", "architectures": [7]}, "architectures"),
])
def test_unsupported_knob_is_an_error_naming_the_field(tmp_path, capsys, cfg, field):
    rc, out, err = run(capsys, "import", "hf", write_config(tmp_path, **cfg), "-o", tmp_path / "x.yaml")
    assert rc == 1 and f"`{field}" in err, err
    assert not (tmp_path / "x.yaml").exists()


def test_unknown_model_type_exits_2_listing_the_supported(tmp_path, capsys):
    rc, _, err = run(capsys, "import", "hf", write_config(tmp_path, model_type="xlnet"))
    assert rc == 2 and "llama" in err and "decision_transformer" in err and "t5" in err, err
    rc, _, err = run(capsys, "import", "hf", write_config(tmp_path, model_type="retnet"))
    assert rc == 2 and "`retnet` is not supported" in err
    rc, _, err = run(capsys, "import", "hf", tmp_path / "missing.json")
    assert rc == 2


def test_unknown_field_is_reported_not_dropped(tmp_path, capsys):
    rc, out, err = run(capsys, "import", "hf", write_config(tmp_path, **llama_json(new_knob=3)))
    assert rc == 0 and "`new_knob` is not read" in err
    assert "d_model: 40" in out and "eps: 1.0e-06" in out and "rope_theta: 321.0" in out
    cfg = llama_json()
    del cfg["rms_norm_eps"]   # absent: LlamaConfig's default, no warning
    rc, out, err = run(capsys, "import", "hf", write_config(tmp_path, **cfg))
    assert rc == 0 and "eps: 1.0e-06" in out and "warning" not in err, err


def test_check_on_a_transformers_config_gives_one_diagnostic(tmp_path, capsys):
    path = write_config(tmp_path, **llama_json(architectures=["LlamaForCausalLM"]))
    rc, _, err = run(capsys, "check", path)
    assert rc == 1 and err.count("error[") == 1 and "GF170" in err
    assert f"graphformer import hf {path} -o llama.yaml" in err


def test_shape_mismatch_suggests_the_params_the_tensors_determine(tmp_path, capsys):
    ref = reference("llama")
    ref.save_pretrained(tmp_path / "ckpt")
    rc, _, err = run(capsys, "build", "specs/llama.yaml", "--preset", "tiny", "--weights", tmp_path / "ckpt")
    assert rc == 1 and "shape mismatch" in err
    # d_model and d_ff are read off the tensors; heads are not (q is d_model × d_model for any head count)
    assert "--set d_model=40 d_ff=72" in err and "heads=" not in err, err
    assert f"graphformer import hf {tmp_path / 'ckpt'}" in err


def test_a_checkpoint_directory_given_as_the_spec_says_how_to_import_it(tmp_path, capsys):
    write_config(tmp_path, **llama_json())
    rc, _, err = run(capsys, "check", tmp_path)
    assert rc == 2 and f"graphformer import hf {tmp_path}" in err


@pytest.mark.slow
def test_export_reads_a_checkpoint_directory(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    ref = reference("llama")
    ref.save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    imported(capsys, tmp_path / "ckpt", tmp_path)
    rc, _, err = run(capsys, "export", tmp_path / "spec.yaml", "--weights", tmp_path / "ckpt", "-o",
                     tmp_path / "m.onnx")
    assert rc == 0, err
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    ids = tokens()
    feed = {"tokens": ids.numpy(), "mask": torch.ones_like(ids).numpy()}
    logits = session.run(["logits"], {i.name: feed[i.name] for i in session.get_inputs()})[0]   # mask: left out
    with torch.no_grad():
        want = ref(input_ids=ids).logits
    assert (torch.from_numpy(logits) - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("kind", sorted(k for k, f in hf.FAMILIES.items() if "pad_token" in hf.bundled_params(f)))
def test_each_family_knows_transformers_default_pad_token_id(kind):
    cfg, filled = T.AutoConfig.for_model(kind), hf.with_defaults({}, kind)
    if not hasattr(cfg, "pad_token_id"):   # a multimodal model's pad row is its text's
        cfg, filled = cfg.text_config, filled["text_config"]
    assert "pad_token_id" in filled and filled["pad_token_id"] == cfg.pad_token_id


def test_a_config_without_pad_token_id_reads_transformers_default(tmp_path):
    """transformers reads a config.json without `pad_token_id` (hand-written, or saved with only the values
    that differ from the defaults) as the class's default pad row (BERT's 0, Whisper's 50256), not "none"."""
    T.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=48).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["pad_token_id"]
    assert T.BertConfig.from_dict(cfg).pad_token_id == 0
    assert hf.convert_config(cfg).params["pad_token"] == 0
    assert hf.convert_config({**cfg, "pad_token_id": None}).params["pad_token"] == -1


# ---------------------------------------------------------------- absent fields take transformers' defaults

# The tables each transformers config class is read through (a family's own, and the sub-configs')
CLASS_TABLES = {**{k: f.fields for k, f in hf.FAMILIES.items()}, "llama": hf.LLAMA_FIELDS,
                "clip_text_model": hf.CLIP_TEXT, "clip_vision_model": hf.CLIP_VISION, "gemma": hf.GEMMA_TEXT,
                "siglip_vision_model": hf.SIGLIP_VISION, "siglip_text_model": hf.SIGLIP_TEXT}


def transformers_value(cfg, name):
    """What transformers' config holds for a DEFAULTS entry (the rotary pseudo-fields read from the
    standardised `rope_parameters`, as the class's __init__ stores them)."""
    d, rope = cfg.to_dict(), cfg.to_dict().get("rope_parameters") or {}
    special = {"rope_theta": lambda: rope["rope_theta"], "rotary_emb_base": lambda: rope["rope_theta"],
               "rotary_pct": lambda: rope["partial_rotary_factor"],
               "partial_rotary_factor": lambda: rope["partial_rotary_factor"],
               "global_rope_theta": lambda: rope["full_attention"]["rope_theta"],
               "local_rope_theta": lambda: rope["sliding_attention"]["rope_theta"],
               "global_attn_every_n_layers": lambda: d["layer_types"].index("full_attention", 1),
               "rope_parameters": lambda: {k: v for k, v in rope.items() if k != "rope_theta"}}
    value = special[name]() if name in special else d[name]
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("kind", list(hf.DEFAULTS))
def test_default_tables_are_the_config_classes_defaults(kind):
    """DEFAULTS[kind] equals `AutoConfig.for_model(kind)` field by field (computed ones evaluated on the default
    config), every field the class has that a table reads is in it or documented in REQUIRED, and ALIASES are
    the class's attribute_map."""
    cfg = T.AutoConfig.for_model(kind)
    filled = hf.with_defaults({}, kind)
    for name in hf.DEFAULTS[kind]:
        assert filled[name] == transformers_value(cfg, name), f"{kind}.{name}"
    fields = set(cfg.to_dict())
    for name in CLASS_TABLES.get(kind, {}):
        assert name not in fields or name in hf.DEFAULTS[kind] or name in hf.REQUIRED.get(kind, {}) or \
            name in hf.ALIASES.get(kind, {}), f"{kind}.{name}: no default and not documented as required"
    for alias, name in hf.ALIASES.get(kind, {}).items():
        assert type(cfg).attribute_map[alias] == name
    for key, (sub_kind, _) in hf.SUB_CONFIGS.get(kind, {}).items():   # the composite's own sub-config defaults
        sub = getattr(cfg, key)
        assert sub.model_type == sub_kind
        for name in hf.DEFAULTS[sub_kind]:
            assert filled[key][name] == transformers_value(sub, name), f"{kind}.{key}.{name}"


# A small config per family, each value away from the class default (the sparse test deletes them one by one)
SMALL = {
    **{k: CASES[k][2] for k in ("llama", "mistral", "mixtral", "qwen2", "gemma2", "olmo2", "phi", "gpt_neox", "bloom",
                                "gpt2", "bert", "vit", "swin", "clip", "whisper", "decision_transformer")},
    "audio-spectrogram-transformer": CASES["ast"][2],
    **{k: CASES[k][2] for k in ("convnext", "videomae")},
    "segformer": CASES["segformer-semantic"][2],
    "t5": dict(vocab_size=V, d_model=40, d_kv=8, d_ff=56, num_layers=2, num_decoder_layers=3, num_heads=5,
               relative_attention_num_buckets=16, relative_attention_max_distance=20, feed_forward_proj="gated-gelu",
               layer_norm_epsilon=1e-5),
    "deepseek_v2": dict(vocab_size=V, hidden_size=40, num_hidden_layers=3, first_k_dense_replace=1,
                        num_attention_heads=4, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8,
                        qk_rope_head_dim=4, v_head_dim=8, intermediate_size=56, moe_intermediate_size=24,
                        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, routed_scaling_factor=2.0,
                        max_position_embeddings=64, rope_theta=300.0),
    "deepseek_v3": dict(vocab_size=V, hidden_size=40, num_hidden_layers=3, first_k_dense_replace=1,
                        num_attention_heads=4, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8,
                        qk_rope_head_dim=4, v_head_dim=8, intermediate_size=56, moe_intermediate_size=24,
                        n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2, routed_scaling_factor=2.0,
                        n_group=2, topk_group=1, norm_topk_prob=False, max_position_embeddings=64, rope_theta=300.0),
    "gpt_oss": dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=10, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2,
                    max_position_embeddings=64, sliding_window=8, rope_parameters={"rope_type": "default",
                                                                                   "rope_theta": 300.0}),
    "gemma3_text": dict(vocab_size=V, hidden_size=42, num_hidden_layers=6, num_attention_heads=3, num_key_value_heads=1,
                        head_dim=10, intermediate_size=56, max_position_embeddings=64, sliding_window=3,
                        sliding_window_pattern=3, query_pre_attn_scalar=10, final_logit_softcapping=3.0,
                        rope_scaling={"rope_type": "linear", "factor": 4.0}, rope_theta=500.0,
                        rope_local_base_freq=300.0),
    "qwen3": dict(vocab_size=V, hidden_size=40, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                  head_dim=10, intermediate_size=56, max_position_embeddings=64, use_sliding_window=True,
                  sliding_window=4, max_window_layers=1, tie_word_embeddings=True, rope_theta=300.0),
    "qwen3_moe": dict(vocab_size=V, hidden_size=40, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                      head_dim=10, intermediate_size=56, num_experts=5, num_experts_per_tok=2, moe_intermediate_size=18,
                      norm_topk_prob=True, decoder_sparse_step=2, max_position_embeddings=64, rope_theta=300.0),
    "phi3": dict(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                 intermediate_size=40, max_position_embeddings=64, sliding_window=5, pad_token_id=0,
                 rope_parameters={"rope_type": "default", "rope_theta": 300.0, "partial_rotary_factor": 0.75}),
    "granite": dict(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                    intermediate_size=40, max_position_embeddings=64, embedding_multiplier=3.0,
                    attention_multiplier=0.3, residual_multiplier=0.5, logits_scaling=4.0, rope_theta=300.0),
    "starcoder2": dict(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3,
                       intermediate_size=40, max_position_embeddings=64, sliding_window=5, use_bias=False,
                       norm_epsilon=1e-6, tie_word_embeddings=False, rope_theta=300.0),
    "cohere": dict(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                   intermediate_size=40, max_position_embeddings=64, logit_scale=0.5, attention_bias=True,
                   tie_word_embeddings=False, rope_theta=300.0),
    "smollm3": dict(vocab_size=V, hidden_size=48, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2,
                    intermediate_size=40, max_position_embeddings=64, no_rope_layer_interval=2, pad_token_id=0,
                    tie_word_embeddings=False, rope_theta=300.0),
    "stablelm": dict(vocab_size=V, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                     intermediate_size=40, max_position_embeddings=64, use_qkv_bias=True, use_parallel_residual=True,
                     rope_parameters={"rope_type": "default", "rope_theta": 300.0, "partial_rotary_factor": 0.5}),
    "gptj": dict(vocab_size=V, n_positions=64, n_embd=40, n_head=5, n_layer=2, rotary_dim=4, n_inner=56),
    "modernbert": dict(vocab_size=V, hidden_size=40, num_hidden_layers=4, num_attention_heads=5, intermediate_size=56,
                       max_position_embeddings=64, local_attention=8, global_attn_every_n_layers=2,
                       hidden_activation="gelu_new", norm_bias=True, pad_token_id=3),
    "deberta-v2": dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, intermediate_size=56,
                       max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"],
                       position_buckets=8, max_relative_positions=16, share_att_key=True, norm_rel_ebd="layer_norm",
                       type_vocab_size=0, pad_token_id=1),
    "albert": dict(vocab_size=V, embedding_size=16, hidden_size=40, num_hidden_layers=2, num_hidden_groups=2,
                   num_attention_heads=5, intermediate_size=56, max_position_embeddings=32, hidden_act="gelu"),
    "dinov2": dict(image_size=28, patch_size=7, hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                   mlp_ratio=3, layerscale_value=0.5),
    "dinov2_with_registers": dict(image_size=28, patch_size=7, hidden_size=40, num_hidden_layers=2,
                                  num_attention_heads=5, mlp_ratio=3, num_register_tokens=2),
    "timesformer": dict(image_size=16, patch_size=8, num_frames=2, hidden_size=40, num_hidden_layers=2,
                        num_attention_heads=5, intermediate_size=56),
    "vivit": dict(image_size=16, num_frames=4, tubelet_size=[2, 8, 8], hidden_size=40, num_hidden_layers=2,
                  num_attention_heads=5, intermediate_size=56, hidden_act="gelu"),
    "mamba": dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, state_size=8, conv_kernel=3, expand=3,
                  time_step_rank=5, use_bias=True),
    "jamba": dict(vocab_size=V, hidden_size=40, intermediate_size=56, num_hidden_layers=5, num_attention_heads=5,
                  num_key_value_heads=1, num_experts=3, num_experts_per_tok=1, attn_layer_period=3,
                  attn_layer_offset=1, expert_layer_period=3, expert_layer_offset=2, mamba_d_state=6, mamba_d_conv=3,
                  mamba_expand=3, mamba_dt_rank=5, mamba_conv_bias=False, mamba_proj_bias=True,
                  max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=True, pad_token_id=3),
    "mamba2": dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, state_size=6, num_heads=10, head_dim=12,
                   n_groups=5, conv_kernel=3, expand=3, use_bias=True, tie_word_embeddings=True, chunk_size=8),
    "rwkv": dict(vocab_size=V, hidden_size=40, num_hidden_layers=3, attention_hidden_size=24, intermediate_size=56,
                 layer_norm_epsilon=1e-6, rescale_every=2, context_length=64),
    "wav2vec2": dict(hidden_size=40, num_hidden_layers=2, num_attention_heads=5, intermediate_size=56,
                     conv_dim=[16, 16, 16], conv_kernel=[5, 3, 2], conv_stride=[3, 2, 2], num_feat_extract_layers=3,
                     num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, conv_bias=True),
    "llava": dict(text_config=dict(model_type="llama", **llama_cfg()), image_token_index=5,
                  vision_config=dict(model_type="clip_vision_model", image_size=16, patch_size=8, hidden_size=24,
                                     num_attention_heads=4, intermediate_size=32, num_hidden_layers=2)),
    "paligemma": dict(text_config=dict(model_type="gemma", vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=1, head_dim=8, intermediate_size=48),
                      vision_config=dict(model_type="siglip_vision_model", image_size=16, patch_size=8,
                                         hidden_size=24, num_attention_heads=4, intermediate_size=32,
                                         num_hidden_layers=2, vision_use_head=False),
                      projection_dim=32, image_token_index=7),
    "siglip": dict(text_config=dict(model_type="siglip_text_model", vocab_size=V, max_position_embeddings=12,
                                    hidden_size=40, num_attention_heads=5, intermediate_size=56, num_hidden_layers=2,
                                    projection_size=24),
                   vision_config=dict(model_type="siglip_vision_model", image_size=16, patch_size=8, hidden_size=24,
                                      num_attention_heads=4, intermediate_size=32, num_hidden_layers=2)),
    "gemma3": dict(text_config=dict(model_type="gemma3_text", vocab_size=V, hidden_size=32, num_hidden_layers=3,
                                    num_attention_heads=4, num_key_value_heads=1, head_dim=8, intermediate_size=48,
                                    sliding_window=4, sliding_window_pattern=3),
                   vision_config=dict(model_type="siglip_vision_model", image_size=16, patch_size=4, hidden_size=24,
                                      num_attention_heads=4, intermediate_size=32, num_hidden_layers=2,
                                      vision_use_head=False),
                   mm_tokens_per_image=4, image_token_index=7),
}


def import_or_refusal(cfg):
    try:
        return hf.convert_config(cfg).params
    except hf.HFImportError as e:
        return ("refused", e.code)


def field_paths(cfg):
    """Every optional field of a config: the top level's and, one level down, a sub-config's."""
    for key, value in cfg.items():
        if key == "model_type":
            continue
        yield (key,)
        if isinstance(value, dict) and key.endswith("_config"):
            yield from ((key, k) for k in value if k != "model_type")


def without(cfg, path):
    out = json.loads(json.dumps(cfg))
    parent = out
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return out


def test_every_family_has_a_small_config():
    assert set(SMALL) == set(hf.FAMILIES)


@pytest.mark.parametrize("kind", sorted(hf.FAMILIES))
def test_a_sparse_config_imports_as_transformers_reads_it(kind):
    """Delete every optional field of a small config.json, one at a time and all at once: the import equals the
    import of what transformers' config class reads from the same sparse JSON (`from_dict(...).to_dict()`, every
    default filled in by transformers itself), param by param, and every param a `P(...)` of the table sets
    equals that field of transformers' config."""
    cls = type(T.AutoConfig.for_model(kind))
    small = json.loads(T.AutoConfig.for_model(kind, **SMALL[kind]).to_json_string(use_diff=False))
    required = hf.REQUIRED.get(kind, {})   # absent, these keep the spec's default with a warning (below)
    sparse_configs = [without(small, p) for p in field_paths(small) if p[-1] not in required]
    sparse_configs += [{"model_type": kind, **{k: small[k] for k in required}}]
    compared = 0
    for sparse in sparse_configs:
        try:
            # as from_pretrained reads a file: {"__float__": "Infinity"} (mamba2's time_step_limit) is a float
            ref = cls.from_dict(cls._decode_special_floats(json.loads(json.dumps(sparse))))
        except Exception:   # transformers refuses it too (strict validation): nothing to match
            continue
        full = json.loads(ref.to_json_string(use_diff=False))
        ours, theirs = import_or_refusal(sparse), import_or_refusal(full)
        assert ours == theirs, (kind, sorted(set(small) - set(sparse)) or "all", ours, theirs)
        compared += 1
        if isinstance(ours, dict):
            for name, rule in hf.FAMILIES[kind].fields.items():
                if isinstance(rule, hf.P) and rule.param in ours and getattr(ref, name, None) is not None \
                        and not (kind == "llava" and name == "tie_word_embeddings"):   # or the text's
                    want = rule.convert(getattr(ref, name), name) if rule.convert else getattr(ref, name)
                    assert ours[rule.param] == want, (kind, name)
    assert compared >= len(sparse_configs) // 2, compared


def test_videomae_reads_the_hubs_qkv_bias_as_transformers_does():
    """VideoMAEConfig takes the hub's `qkv_bias` over `qv_bias`; use_mean_pooling off is the final norm."""
    for cfg in ({"qkv_bias": False}, {"qkv_bias": False, "qv_bias": True}, {"qv_bias": False},
                {"use_mean_pooling": False}):
        ref = T.VideoMAEConfig.from_dict({"model_type": "videomae", **cfg})
        params = hf.convert_config({"model_type": "videomae", **cfg}).params
        assert params["qv_bias"] is bool(ref.qv_bias) and params["final_norm"] is not bool(ref.use_mean_pooling), cfg


def test_per_stage_head_counts_are_compared_with_a_checkpoints_config():
    """No tensor shows SegFormer's heads per stage, so a checkpoint's config is compared with them."""
    cfg = {"model_type": "segformer", **SEGFORMER_CFG}
    params = hf.convert_config(dict(cfg)).params
    assert hf.config_mismatches(params, cfg) == []
    lines = hf.config_mismatches({**params, "heads2": 1}, cfg)
    assert len(lines) == 1 and lines[0].startswith("`heads2` is 1 in the spec, 2 in the config"), lines


def test_a_field_without_a_transformers_default_keeps_the_spec_default_with_a_warning(tmp_path, capsys):
    cfg = {"model_type": "deepseek_v2", **SMALL["deepseek_v2"]}
    del cfg["num_experts_per_tok"]
    rc, out, err = run(capsys, "import", "hf", write_config(tmp_path, **cfg))
    assert rc == 0 and "no `num_experts_per_tok`, and transformers has no default for it: param `top_k` keeps " \
        "the spec's default" in err, err
    assert "vocab: 97" in out and "rope_theta: 300.0" in out


def test_absent_fields_read_as_transformers_classes_not_the_specs(tmp_path, capsys):
    """The cases that differ from the bundled specs' defaults, by hand: LlamaConfig's rope theta 10000 and
    eps 1e-6, MistralConfig's 4096-token window, Mixtral's theta 1e6, GPT-OSS's YaRN schedule, LLaVA's own
    vision tower when vision_config is absent and CLIPVisionConfig's where it is an empty object (PaliGemma's
    likewise: SiglipVisionConfig's pooling head)."""
    params = hf.convert_config({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}).params
    assert params["rope_theta"] == 10000.0 and params["eps"] == 1e-6 and params["kv_heads"] == 4
    assert hf.convert_config({"model_type": "mistral"}).params["window"] == 4096
    assert hf.convert_config({"model_type": "mixtral"}).params["rope_theta"] == 1e6
    oss = hf.convert_config({"model_type": "gpt_oss"}).params
    assert oss["rope_factor"] == 32.0 and oss["rope_truncate"] is False and oss["rope_original_max_len"] == 4096
    assert hf.convert_config({"model_type": "llava"}).params["vision_width"] == 1024
    assert hf.convert_config({"model_type": "llava", "vision_config": {}}).params["vision_width"] == 768
    # PaliGemma's own vision tower has no pooling head; SiglipVisionConfig's, an empty object, has one
    assert hf.convert_config({"model_type": "paligemma"}).params["vision_use_head"] is False
    assert hf.convert_config({"model_type": "paligemma", "vision_config": {}}).params["vision_use_head"] is True


@pytest.mark.parametrize("kind,cls", [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM")])
def test_a_checkpoint_with_a_sparse_config_builds_the_reference(tmp_path, kind, cls):
    """A config.json that gives only the sizes (llama.yaml's eps 1e-5 and qwen2.yaml's theta 1e6 are not the
    classes' 1e-6 and 1e4): from_pretrained builds what transformers builds from it, to fp32 rounding."""
    sizes = dict(vocab_size=V, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=5,
                 intermediate_size=72)
    torch.manual_seed(0)
    ref = getattr(T, cls)(T.AutoConfig.for_model(kind, **sizes)).eval()
    ref.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": kind, **sizes}))
    model = graphformer.from_pretrained(tmp_path)
    assert model.spec.params["eps"] == 1e-6 and model.spec.params["rope_theta"] == 10000.0
    ids = tokens(2, 40)   # long enough for the rotary base to matter
    with torch.no_grad():
        assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits, kind)


@pytest.mark.parametrize("kind,cls", [
    ("convnext", "ConvNextForImageClassification"), ("videomae", "VideoMAEForVideoClassification"),
    ("vit", "ViTForImageClassification"), ("swin", "SwinForImageClassification"),
    ("dinov2", "Dinov2ForImageClassification"), ("audio-spectrogram-transformer", "ASTForAudioClassification")])
def test_architectures_switch_the_classification_head(kind, cls):
    """The head class named in `architectures` turns the head on, its labels counted from id2label (as
    save_pretrained writes them); the bare model's name, or none, leaves it off (AutoModel's class)."""
    labels = {"id2label": {str(i): f"l{i}" for i in range(3)}}
    on = hf.convert_config({"model_type": kind, "architectures": [cls], **labels}).params
    assert on["head"] is True and on["classes"] == 3
    for arch in ({"architectures": [cls.split("For")[0] + "Model"]}, {}):
        assert hf.convert_config({"model_type": kind, **arch, **labels}).params["head"] is False, arch
