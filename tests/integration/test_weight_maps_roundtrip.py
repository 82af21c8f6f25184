"""Every bundled weight map round-trips (issue 26): reference → spec → reference is bit-identical, and the
checkpoint written back in the reference's names loads with the reference's own `from_pretrained`.

References are built offline from small configs with random weights (the same configurations the parity
tests use: heads > 1, fewer key/value heads, so a wrong layout can't hide behind equal shapes). A map that
reads two classes' checkpoints (a bare model and its classification class, whose keys carry a prefix the map
strips) has a case for each: `name/map+variant`."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

import graphformer  # noqa: E402
from graphformer.backends.torch.weights import write_safetensors  # noqa: E402
from graphformer.weights.maps import _Glob, convert_state_dict, get_map, read_name, to_reference  # noqa: E402
from parity import randomize  # noqa: E402

T.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
SPECS = Path(__file__).resolve().parents[2] / "specs"


def spec(name, preset="tiny", **sets):
    return graphformer.load(SPECS / f"{name}.yaml", preset=preset, overrides=sets)


def llama_cfg(**kw):
    return {**dict(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                   intermediate_size=80, max_position_embeddings=64), **kw}


def _swin():
    sets = dict(image=36, patch=4, window=2, embed=6, classes=5, eps=1e-6, depth1=1, depth2=2, depth3=1, depth4=1,
                heads1=1, heads2=2, heads3=3, heads4=3)
    ref = T.SwinForImageClassification(T.SwinConfig(image_size=36, patch_size=4, window_size=2, embed_dim=6,
                                                    depths=[1, 2, 1, 1], num_heads=[1, 2, 3, 3], num_labels=5))
    return spec("swin-t", None, **sets), ref


def _llava():
    vision = T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                image_size=32, patch_size=8)
    text = T.LlamaConfig(**llama_cfg())
    ref = T.LlavaForConditionalGeneration(T.LlavaConfig(vision_config=vision, text_config=text, image_token_id=96))
    return spec("llava"), ref



def _paligemma():
    vision = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=32, patch_size=8, vision_use_head=False)
    text = T.GemmaConfig(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                         num_key_value_heads=1, head_dim=10, intermediate_size=80, max_position_embeddings=64)
    ref = T.PaliGemmaForConditionalGeneration(T.PaliGemmaConfig(vision_config=vision, text_config=text,
                                                                image_token_index=96, projection_dim=48))
    return spec("paligemma"), ref

def _siglip():
    from test_siglip import tiny_config
    return spec("siglip"), T.SiglipModel(tiny_config())


def _gemma3_vision():
    from test_gemma3_vision import tiny_config
    return spec("gemma3-vision"), T.Gemma3ForConditionalGeneration(tiny_config())


def _swin_model():
    s, ref = _swin()
    return spec("swin-t", None, **{**s.params, "head": False}), T.SwinModel(ref.config)


# name → () → (spec, reference); the reference's class is what the map's `reference:` names (after `+`: the
# map's other class)
CASES = {
    "encoder-block/torch": lambda: (spec("encoder-block", None, d_model=24, heads=3, d_ff=40),
                                    nn.TransformerEncoderLayer(24, 3, 40, batch_first=True)),
    "decoder-block/torch": lambda: (spec("decoder-block", None, d_model=24, heads=3, d_ff=40),
                                    nn.TransformerDecoderLayer(24, 3, 40, batch_first=True)),
    "transformer/torch": lambda: (spec("transformer", None, d_model=24, heads=3, d_ff=40, encoder_layers=2,
                                       decoder_layers=2),
                                  nn.Transformer(24, 3, 2, 2, 40, batch_first=True)),
    "bert-base/hf": lambda: (spec("bert-base", None, vocab=97, max_len=32, d_model=24, heads=3, d_ff=40, layers=2),
                             T.BertModel(T.BertConfig(vocab_size=97, max_position_embeddings=32, hidden_size=24,
                                                      num_attention_heads=3, intermediate_size=40,
                                                      num_hidden_layers=2))),
    "albert/hf": lambda: (spec("albert", "tiny", groups=2),   # two groups of two layers sharing (`share: groups`)
                          T.AlbertModel(T.AlbertConfig(vocab_size=99, embedding_size=16, hidden_size=32,
                                                       num_hidden_layers=4, num_hidden_groups=2,
                                                       num_attention_heads=4, intermediate_size=64,
                                                       max_position_embeddings=32))),
    "gpt2/hf": lambda: (spec("gpt2", None, vocab=97, max_len=32, d_model=24, heads=3, layers=2),
                        T.GPT2LMHeadModel(T.GPT2Config(vocab_size=97, n_positions=32, n_embd=24, n_head=3,
                                                       n_layer=2))),
    "vit-b16/hf": lambda: (spec("vit-b16", None, image=36, patch=12, d_model=24, heads=3, d_ff=40, layers=2,
                                classes=5),
                           T.ViTForImageClassification(T.ViTConfig(image_size=36, patch_size=12, hidden_size=24,
                                                                   num_attention_heads=3, intermediate_size=40,
                                                                   num_hidden_layers=2, num_labels=5))),
    "vit-b16/hf+ViTModel": lambda: (spec("vit-b16", "backbone", image=36, patch=12, d_model=24, heads=3, d_ff=40,
                                         layers=2),
                                    T.ViTModel(T.ViTConfig(image_size=36, patch_size=12, hidden_size=24,
                                                           num_attention_heads=3, intermediate_size=40,
                                                           num_hidden_layers=2))),
    "clip-vit-b32/hf": lambda: (
        spec("clip-vit-b32", None, vocab=50, text_len=20, text_width=40, text_heads=5, text_ff=72, text_layers=2,
             image=40, patch=8, vision_width=48, vision_heads=6, vision_ff=80, vision_layers=2, embed=28,
             eos_token=49),
        T.CLIPModel(T.CLIPConfig(
            text_config=dict(vocab_size=50, max_position_embeddings=20, hidden_size=40, num_attention_heads=5,
                             intermediate_size=72, num_hidden_layers=2, eos_token_id=49),
            vision_config=dict(image_size=40, patch_size=8, hidden_size=48, num_attention_heads=6,
                               intermediate_size=80, num_hidden_layers=2),
            projection_dim=28))),
    "ast/hf": lambda: (spec("ast", None, frames=100, mels=24, patch=8, freq_stride=5, time_stride=6, d_model=60,
                            heads=5, d_ff=96, layers=2),
                       T.ASTModel(T.ASTConfig(max_length=100, num_mel_bins=24, patch_size=8, frequency_stride=5,
                                              time_stride=6, hidden_size=60, num_attention_heads=5,
                                              intermediate_size=96, num_hidden_layers=2))),
    "ast/hf+ASTForAudioClassification": lambda: (
        spec("ast", None, frames=100, mels=24, patch=8, freq_stride=5, time_stride=6, d_model=60, heads=5, d_ff=96,
             layers=2, head=True, classes=7),
        T.ASTForAudioClassification(T.ASTConfig(max_length=100, num_mel_bins=24, patch_size=8, frequency_stride=5,
                                                time_stride=6, hidden_size=60, num_attention_heads=5,
                                                intermediate_size=96, num_hidden_layers=2, num_labels=7))),
    "decision-transformer/hf": lambda: (
        spec("decision-transformer", None, state_dim=7, act_dim=3, d_model=48, max_ep_len=60, n_positions=40,
             heads=4, d_ff=80, layers=2),
        T.DecisionTransformerModel(T.DecisionTransformerConfig(state_dim=7, act_dim=3, hidden_size=48, max_ep_len=60,
                                                               n_positions=40, n_head=4, n_inner=80, n_layer=2))),
    "llama/hf": lambda: (spec("llama"), T.LlamaForCausalLM(T.LlamaConfig(**llama_cfg()))),
    "mistral-7b/hf": lambda: (spec("mistral-7b"), T.MistralForCausalLM(T.MistralConfig(**llama_cfg(sliding_window=5)))),
    "mixtral-8x7b/hf": lambda: (spec("mixtral-8x7b"), T.MixtralForCausalLM(T.MixtralConfig(
        **llama_cfg(intermediate_size=40, num_local_experts=5, num_experts_per_tok=2)))),
    "qwen2/hf": lambda: (spec("qwen2"), T.Qwen2ForCausalLM(T.Qwen2Config(
        **llama_cfg(hidden_size=40, num_attention_heads=5, num_key_value_heads=1, intermediate_size=72,
                    tie_word_embeddings=True)))),
    "qwen3/hf": lambda: (spec("qwen3"), T.Qwen3ForCausalLM(T.Qwen3Config(
        vocab_size=97, hidden_size=40, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, head_dim=10,
        intermediate_size=56, max_position_embeddings=64, tie_word_embeddings=True))),
    "qwen3/hf+Qwen3MoeForCausalLM": lambda: (spec("qwen3", "tiny-moe"), T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(
        vocab_size=97, hidden_size=40, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, head_dim=10,
        intermediate_size=56, num_experts=5, num_experts_per_tok=2, moe_intermediate_size=18, decoder_sparse_step=2,
        max_position_embeddings=64, experts_implementation="eager"))),
    "phi3/hf": lambda: (spec("phi3"), T.Phi3ForCausalLM(T.Phi3Config(
        vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
        intermediate_size=40, max_position_embeddings=64, sliding_window=5, pad_token_id=0, eos_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.75}))),
    "granite/hf": lambda: (spec("granite", attn_bias=True), T.GraniteForCausalLM(T.GraniteConfig(**llama_cfg(attention_bias=True)))),
    "starcoder2/hf": lambda: (spec("starcoder2"), T.Starcoder2ForCausalLM(T.Starcoder2Config(**llama_cfg(
        sliding_window=5, tie_word_embeddings=False)))),
    "cohere/hf": lambda: (spec("cohere"), T.CohereForCausalLM(T.CohereConfig(**llama_cfg()))),
    "smollm3/hf": lambda: (spec("smollm3"), T.SmolLM3ForCausalLM(T.SmolLM3Config(**llama_cfg(
        num_hidden_layers=4, tie_word_embeddings=False, pad_token_id=0)))),
    "stablelm/hf": lambda: (spec("stablelm", layer="parallel_layer"), T.StableLmForCausalLM(T.StableLmConfig(
        **llama_cfg(use_qkv_bias=True, use_parallel_residual=True)))),
    "phi-2/hf": lambda: (spec("phi-2"), T.PhiForCausalLM(T.PhiConfig(
        vocab_size=97, hidden_size=40, num_hidden_layers=2, num_attention_heads=4, intermediate_size=56,
        max_position_embeddings=64, partial_rotary_factor=0.4))),
    "gemma2/hf": lambda: (spec("gemma2"), T.Gemma2ForCausalLM(T.Gemma2Config(
        vocab_size=97, hidden_size=42, num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=1, head_dim=10,
        intermediate_size=56, max_position_embeddings=64, sliding_window=4, query_pre_attn_scalar=10))),
    "gemma3/hf": lambda: (spec("gemma3"), T.Gemma3ForCausalLM(T.Gemma3TextConfig(
        vocab_size=97, hidden_size=42, num_hidden_layers=6, num_attention_heads=3, num_key_value_heads=1, head_dim=10,
        intermediate_size=56, max_position_embeddings=64, sliding_window=4, sliding_window_pattern=3,
        query_pre_attn_scalar=10, rope_theta=5000.0, rope_local_base_freq=300.0,
        rope_scaling={"rope_type": "linear", "factor": 4.0}))),
    "olmo2/hf": lambda: (spec("olmo2"), T.Olmo2ForCausalLM(T.Olmo2Config(
        vocab_size=97, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=1,
        intermediate_size=56, max_position_embeddings=64))),
    "gpt-neox/hf": lambda: (spec("gpt-neox"), T.GPTNeoXForCausalLM(T.GPTNeoXConfig(
        vocab_size=97, hidden_size=40, num_hidden_layers=2, num_attention_heads=5, intermediate_size=56,
        max_position_embeddings=64, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 300.0, "partial_rotary_factor": 0.5}))),
    "gpt-j/hf": lambda: (spec("gpt-j"), T.GPTJForCausalLM(T.GPTJConfig(
        vocab_size=97, n_embd=40, n_layer=2, n_head=4, rotary_dim=6, n_inner=56, n_positions=64))),
    "bloom/hf": lambda: (spec("bloom"), T.BloomForCausalLM(T.BloomConfig(vocab_size=97, hidden_size=36, n_layer=2,
                                                                          n_head=6))),
    "t5-base/hf": lambda: (spec("t5-base"), T.T5ForConditionalGeneration(T.T5Config(
        vocab_size=97, d_model=40, d_kv=12, d_ff=56, num_layers=2, num_decoder_layers=3, num_heads=5,
        relative_attention_num_buckets=8, relative_attention_max_distance=20))),
    "whisper-base/hf": lambda: (
        spec("whisper-base", "tiny", mels=7, vocab=97, d_model=40, encoder_layers=2, decoder_layers=3, encoder_heads=5,
             decoder_heads=4, encoder_ffn=72, decoder_ffn=56, audio_len=9, text_len=13),
        T.WhisperForConditionalGeneration(T.WhisperConfig(
            vocab_size=97, num_mel_bins=7, d_model=40, encoder_layers=2, decoder_layers=3, encoder_attention_heads=5,
            decoder_attention_heads=4, encoder_ffn_dim=72, decoder_ffn_dim=56, max_source_positions=9,
            max_target_positions=13, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            decoder_start_token_id=3))),
    "swin-t/hf": _swin,
    "swin-t/hf+SwinModel": _swin_model,
    "timesformer/hf": lambda: (
        spec("timesformer", None, image=15, patch=5, frames=3, d_model=27, heads=3, layers=2, d_ff=41),
        T.TimesformerModel(T.TimesformerConfig(image_size=15, patch_size=5, num_frames=3, hidden_size=27,
                                               num_hidden_layers=2, num_attention_heads=3, intermediate_size=41))),
    "vivit/hf": lambda: (
        spec("vivit", None, image=15, patch=5, tubelet=3, frames=6, d_model=27, heads=3, layers=2, d_ff=41),
        T.VivitModel(T.VivitConfig(image_size=15, tubelet_size=[3, 5, 5], num_frames=6, hidden_size=27,
                                   num_hidden_layers=2, num_attention_heads=3, intermediate_size=41))),
    "deberta-v2/hf": lambda: (   # unshared position projections and every optional part: each rule has a tensor
        spec("deberta-v2", "tiny", share_att_key=False, position_biased=True, embedding_size=20, conv_kernel=3),
        T.DebertaV2Model(T.DebertaV2Config(vocab_size=97, hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
                                           intermediate_size=41, type_vocab_size=0, relative_attention=True,
                                           position_buckets=6, max_relative_positions=12, norm_rel_ebd="layer_norm",
                                           share_att_key=False, pos_att_type=["p2c", "c2p"],
                                           position_biased_input=True, embedding_size=20, conv_kernel_size=3))),
    "videomae/hf": lambda: (
        spec("videomae", None, image=15, patch=5, tubelet=3, frames=6, d_model=30, heads=3, layers=2, d_ff=41,
             final_norm=True),
        T.VideoMAEModel(T.VideoMAEConfig(image_size=15, patch_size=5, tubelet_size=3, num_frames=6, hidden_size=30,
                                         num_hidden_layers=2, num_attention_heads=3, intermediate_size=41,
                                         use_mean_pooling=False))),
    "videomae/hf+VideoMAEForVideoClassification": lambda: (
        spec("videomae", None, image=15, patch=5, tubelet=3, frames=6, d_model=30, heads=3, layers=2, d_ff=41,
             head=True, classes=5),
        T.VideoMAEForVideoClassification(T.VideoMAEConfig(
            image_size=15, patch_size=5, tubelet_size=3, num_frames=6, hidden_size=30, num_hidden_layers=2,
            num_attention_heads=3, intermediate_size=41, num_labels=5))),
    "segformer/hf": lambda: (
        spec("segformer", None, image=45, hidden1=8, hidden2=12, hidden3=20, hidden4=24, heads1=1, heads2=2, heads3=4,
             heads4=3, depth1=1, depth2=2, depth3=1, depth4=1, sr1=4, sr2=2, sr3=2, mlp_ratio=2, head=True, decoder=20,
             labels=7),
        T.SegformerForSemanticSegmentation(T.SegformerConfig(
            hidden_sizes=[8, 12, 20, 24], num_attention_heads=[1, 2, 4, 3], depths=[1, 2, 1, 1], sr_ratios=[4, 2, 2, 1],
            mlp_ratios=[2, 2, 2, 2], decoder_hidden_size=20, num_labels=7))),
    "convnext/hf": lambda: (
        spec("convnext", None, hidden1=8, hidden2=12, hidden3=16, hidden4=20, depth1=1, depth2=2, depth3=1, depth4=1),
        T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 12, 16, 20], depths=[1, 2, 1, 1]))),
    "convnext/hf+ConvNextForImageClassification": lambda: (
        spec("convnext", None, hidden1=8, hidden2=12, hidden3=16, hidden4=20, depth1=1, depth2=2, depth3=1, depth4=1,
             head=True, classes=7),
        T.ConvNextForImageClassification(T.ConvNextConfig(hidden_sizes=[8, 12, 16, 20], depths=[1, 2, 1, 1],
                                                          num_labels=7))),
    "wav2vec2/hf": lambda: (
        spec("wav2vec2", None, conv_dim=12, kernel0=4, stride0=3, conv_kernels=[3, 2], conv_strides=[2, 2],
             conv_layers=2, hop=12, receptive=16, d_model=40, heads=5, layers=2, d_ff=56, pos_kernel=6, pos_groups=4),
        T.Wav2Vec2Model(T.Wav2Vec2Config(hidden_size=40, num_hidden_layers=2, num_attention_heads=5,
                                         intermediate_size=56, conv_dim=(12, 12, 12), conv_kernel=(4, 3, 2),
                                         conv_stride=(3, 2, 2), num_conv_pos_embeddings=6,
                                         num_conv_pos_embedding_groups=4))),
    "dinov2/hf": lambda: (spec("dinov2", None, image=35, patch=7, d_model=40, heads=5, layers=2, d_ff=120),
                          T.Dinov2Model(T.Dinov2Config(image_size=35, patch_size=7, hidden_size=40,
                                                       num_attention_heads=5, num_hidden_layers=2, mlp_ratio=3))),
    "dinov2/hf+Dinov2ForImageClassification": lambda: (
        spec("dinov2", None, image=35, patch=7, d_model=40, heads=5, layers=2, d_ff=120, head=True, classes=6),
        T.Dinov2ForImageClassification(T.Dinov2Config(image_size=35, patch_size=7, hidden_size=40,
                                                       num_attention_heads=5, num_hidden_layers=2, mlp_ratio=3,
                                                       num_labels=6))),
    "deepseek-v2/hf": lambda: (spec("deepseek-v2"), T.DeepseekV2ForCausalLM(T.DeepseekV2Config(
        vocab_size=97, hidden_size=40, intermediate_size=56, moe_intermediate_size=18, num_hidden_layers=3,
        num_attention_heads=5, num_key_value_heads=5, n_shared_experts=2, n_routed_experts=6, kv_lora_rank=14,
        q_lora_rank=12, qk_rope_head_dim=4, v_head_dim=10, qk_nope_head_dim=6, topk_method="group_limited_greedy",
        n_group=3, topk_group=2, num_experts_per_tok=3, first_k_dense_replace=1, max_position_embeddings=64,
        experts_implementation="eager"))),
    "deepseek-v3/hf": lambda: (spec("deepseek-v3"), T.DeepseekV3ForCausalLM(T.DeepseekV3Config(
        vocab_size=97, hidden_size=40, intermediate_size=56, moe_intermediate_size=18, num_hidden_layers=3,
        num_attention_heads=5, num_key_value_heads=5, n_shared_experts=2, n_routed_experts=8, kv_lora_rank=14,
        q_lora_rank=12, qk_rope_head_dim=4, v_head_dim=10, qk_nope_head_dim=6, n_group=4, topk_group=2,
        num_experts_per_tok=3, first_k_dense_replace=1, max_position_embeddings=64, experts_implementation="eager"))),
    "llava/hf": _llava,
    "paligemma/hf": _paligemma,
    "siglip/hf": _siglip,
    "gemma3-vision/hf": _gemma3_vision,
    "modernbert/hf": lambda: (spec("modernbert"), T.ModernBertForMaskedLM(T.ModernBertConfig(
        vocab_size=97, hidden_size=42, num_hidden_layers=4, num_attention_heads=3, intermediate_size=56,
        max_position_embeddings=64, local_attention=4, global_attn_every_n_layers=2, global_rope_theta=5000.0,
        local_rope_theta=300.0, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2))),
    "gpt-oss/hf": lambda: (spec("gpt-oss"), T.GptOssForCausalLM(T.GptOssConfig(
        vocab_size=97, hidden_size=36, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
        head_dim=10, intermediate_size=28, num_local_experts=5, num_experts_per_tok=2, max_position_embeddings=64,
        sliding_window=3, rope_parameters={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                           "truncate": False, "original_max_position_embeddings": 16,
                                           "rope_theta": 500.0}))),
    "mamba/hf": lambda: (spec("mamba", None, vocab=97, d_model=20, layers=2, state=5, dt_rank=3, bias=True),
                         T.MambaForCausalLM(T.MambaConfig(vocab_size=97, hidden_size=20, num_hidden_layers=2,
                                                          state_size=5, time_step_rank=3, use_bias=True))),
    "jamba/hf": lambda: (spec("jamba"), T.JambaForCausalLM(T.JambaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=40, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, attn_layer_period=4, attn_layer_offset=2, num_experts=4,
        mamba_d_state=4, mamba_dt_rank=3))),
    "rwkv/hf": lambda: (spec("rwkv", None, vocab=97, d_model=20, layers=3, ffn=36, rescale_every=2),
                        T.RwkvForCausalLM(T.RwkvConfig(vocab_size=97, hidden_size=20, num_hidden_layers=3,
                                                       intermediate_size=36, rescale_every=2))),
    "mamba2/hf": lambda: (spec("mamba2", None, vocab=97, d_model=24, layers=2, state=5, heads=6, groups=3, bias=True),
                          T.Mamba2ForCausalLM(T.Mamba2Config(vocab_size=97, hidden_size=24, num_hidden_layers=2,
                                                             state_size=5, num_heads=6, head_dim=8, n_groups=3,
                                                             use_bias=True))),
}

# maps whose reference is not in transformers or torch.nn (timm needs torchvision: see GUIDE.md)
ELSEWHERE = {"vit-b16/timm"}


def test_every_bundled_map_has_a_round_trip_case():
    maps = {f"{p.stem}/{m}" for p in SPECS.glob("*.yaml")
            for m in (yaml.safe_load(p.read_text()).get("weight_maps") or {})}
    assert maps - ELSEWHERE == {c.split("+")[0] for c in CASES}, \
        "a bundled map without a round-trip case (or a case without a map)"


def _pair(case):
    s, ref = CASES[case]()
    return s, randomize(ref)


@pytest.mark.parametrize("case", list(CASES))
def test_reference_to_spec_to_reference_is_bit_identical(case):
    s, ref = _pair(case)
    mapping = case.split("+")[0].split("/")[1]
    sd = ref.state_dict()
    ours = convert_state_dict(s, sd, mapping)
    back = to_reference(s, ours, mapping, reference=sd)
    wmap = get_map(s, mapping)
    ignored = [_Glob(g) for g in wmap.ignore]
    kept = [k for k in sd if not any(p.fullmatch(read_name(wmap, k)) for p in ignored)]
    assert list(back) == kept
    for k in kept:
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k]), k


@pytest.mark.parametrize("case", [c for c in CASES if c.split("+")[0].endswith("/hf")])
def test_written_checkpoint_loads_with_from_pretrained(case, tmp_path):
    """The spec's weights, written back in the reference's names, are what `from_pretrained` reads."""
    s, ref = _pair(case)
    model = graphformer.build(s, seed=0)
    graphformer.load_weights(model, ref.state_dict(), "hf")
    back = to_reference(s, model.state_dict(), "hf", reference=ref.state_dict())
    ref.config.save_pretrained(tmp_path)
    write_safetensors(back, str(_empty(tmp_path / "model.safetensors")), {"format": "pt"})
    loaded, info = type(ref).from_pretrained(tmp_path, output_loading_info=True)
    wmap = get_map(s, "hf")   # what the map ignores (batch norm's integer step counter) is the reference's to make
    ignored = {k for k in info["missing_keys"] if any(_Glob(g).fullmatch(k) for g in wmap.ignore)}
    assert not set(info["missing_keys"]) - ignored and not info["unexpected_keys"] and not info["mismatched_keys"], info
    want = ref.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, want[k]), k


@pytest.mark.parametrize("case", [c for c in CASES if "For" in c.partition("+")[2]])
def test_a_head_checkpoint_written_without_a_reference_loads_into_the_head_class(case, tmp_path):
    """Without `reference=` the map writes the bare model's names (its `strip_prefix` left off) and the classifier's:
    the head class's `from_pretrained` reads them, nothing missing or unexpected, every tensor equal. (The spec's
    shapes are written without a reference: a `[1, n, D]` table the spec holds as `[n, D]` is given its unit
    axes back here, as `reference=` would.)"""
    s, ref = _pair(case)
    shapes = {k.removeprefix(ref.base_model_prefix + "."): v.shape for k, v in ref.state_dict().items()}
    back = {k: v.reshape(shapes[k]) for k, v in
            to_reference(s, convert_state_dict(s, ref.state_dict(), "hf"), "hf").items()}
    ref.config.save_pretrained(tmp_path)
    write_safetensors(back, str(_empty(tmp_path / "model.safetensors")), {"format": "pt"})
    loaded, info = type(ref).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    want = ref.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, want[k]), k


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


# ---------------------------------------------------------------- index arithmetic, `{e}` in `from`

INDEXED = """\
graphformer: 1
name: indexed
params: {d: 4, layers: 4, skip: 1}
dims: {B: 2, n: 3}
inputs:
  x: {shape: [B, n, d]}
blocks:
  layer:
    inputs: {x: [B, n, d]}
    nodes:
      up: {op: linear, out: d, bias: false}
    outputs: {x: up}
nodes:
  layers: {op: layer, in: x, repeat: layers}
outputs: {y: layers}
weight_maps:
  ref:
    rules:
      - {from: "h.{FORM}.w", to: "layers.{i}.up.weight"}
"""


def _indexed(tmp_path, form, **sets):
    path = tmp_path / "indexed.yaml"
    path.write_text(INDEXED.replace("FORM", form))
    return graphformer.load(path, overrides=sets)


@pytest.mark.parametrize("form,ref_layers", [
    ("i", [0, 1, 2, 3]), ("i+2", [2, 3, 4, 5]), ("i-skip", [-1, 0, 1, 2]), ("i*2", [0, 2, 4, 6]),
    ("i//2", [0, 0, 1, 1])])
def test_index_arithmetic_reads_and_writes_the_reference_layers(tmp_path, form, ref_layers):
    """spec layer i reads reference layer f(i) (`{i-1}`'s layer -1 doesn't exist: `-` takes i ≥ K only
    where the reference has it; here the spec's layer 0 has none, so the map refuses)."""
    import numpy as np
    s = _indexed(tmp_path, form)
    rng = np.random.default_rng(0)
    sd = {f"h.{r}.w": rng.standard_normal((4, 4)).astype(np.float32) for r in sorted(set(ref_layers)) if r >= 0}
    if min(ref_layers) < 0:
        with pytest.raises(Exception, match=r"layers\.0\.up\.weight.*not set.*h\.-1\.w"):
            convert_state_dict(s, sd, "ref")
        return
    if form == "i//2":   # two spec layers share one reference tensor: it loads into both
        got = convert_state_dict(s, sd, "ref")
        assert all(np.array_equal(got[f"layers.{i}.up.weight"], sd[f"h.{r}.w"]) for i, r in enumerate(ref_layers))
        back = to_reference(s, got, "ref")
        assert set(back) == set(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
        return
    got = convert_state_dict(s, sd, "ref")
    for i, r in enumerate(ref_layers):
        assert np.array_equal(got[f"layers.{i}.up.weight"], sd[f"h.{r}.w"])
    back = to_reference(s, got, "ref")
    assert list(back) == [f"h.{r}.w" for r in ref_layers]
    assert all(np.array_equal(back[k], sd[k]) for k in sd)


def test_index_minus_skips_reference_layers_below_k(tmp_path):
    import numpy as np
    s = _indexed(tmp_path, "i-skip", layers=2)          # spec i ← reference i - 1: reference 0 → spec 1
    sd = {"h.0.w": np.ones((4, 4), np.float32)}
    with pytest.raises(Exception, match=r"layers\.0\.up\.weight.*not set"):
        convert_state_dict(s, sd, "ref")


@pytest.mark.parametrize("form", ["{i*0}", "{i//0}", "{i+2000000}"])
def test_index_k_out_of_range_is_gf258(tmp_path, form):
    from graphformer.frontend.check import check_file
    path = tmp_path / "indexed.yaml"
    path.write_text(INDEXED.replace("{FORM}", form))
    assert [d.code for d in check_file(str(path)).diagnostics if d.is_error] == ["GF258"]


def _hub(ref, tmp_path, capsys):
    """`graphformer import hf` on what save_pretrained writes, then its weights loaded through the map."""
    from graphformer import cli
    from graphformer.weights.maps import read_state_dict
    ref.save_pretrained(tmp_path / "ckpt")
    assert cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "spec.yaml")]) == 0, \
        capsys.readouterr().err
    imported = graphformer.load(tmp_path / "spec.yaml")
    sd = read_state_dict(str(tmp_path / "ckpt"))
    model = graphformer.build(imported).eval()
    graphformer.load_weights(model, sd, "hf")
    back = to_reference(imported, model.state_dict(), "hf", reference=sd)
    assert set(back) == set(sd) and all(torch.equal(back[k], torch.as_tensor(sd[k])) for k in sd)
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model(tokens=ids)["logits"], ref(input_ids=ids).logits
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    return sd


@pytest.mark.parametrize("case,per_expert", [("mixtral-8x7b/hf", "block_sparse_moe.experts.0.w1.weight"),
                                             ("deepseek-v2/hf", "mlp.experts.0.gate_proj.weight"),
                                             ("deepseek-v3/hf", "mlp.experts.0.gate_proj.weight"),
                                             ("jamba/hf", "feed_forward.experts.0.gate_proj.weight")])
def test_hub_per_expert_checkpoint_imports_and_loads(case, per_expert, tmp_path, capsys):
    """transformers 5 holds the experts fused in memory but save_pretrained writes them one tensor per
    expert, as the hub's checkpoints are: `import hf` on such a directory gives a spec that loads them."""
    _, ref = _pair(case)
    sd = _hub(ref, tmp_path, capsys)
    assert any(k.endswith(per_expert) for k in sd), "save_pretrained no longer writes the per-expert layout"


# ---------------------------------------------------------------- errors

def test_a_mismatch_lists_its_problems_one_per_line_and_hints_params_that_fit(tmp_path, capsys):
    """A d_model 48 checkpoint into gpt2's tiny preset (d_model 32 = max_len 32: a size two params share):
    the problems print as lines, each naming the rule, and the hint is a `--set` that then loads."""
    from graphformer import cli
    from safetensors.torch import save_file
    ref = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_head=4, n_layer=2))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items() if k != "lm_head.weight"},
              str(tmp_path / "w.safetensors"))
    argv = ["build", "gpt2", "--preset", "tiny", "--weights", str(tmp_path / "w.safetensors"), "--weights-map", "hf",
            "-o", str(tmp_path / "out.safetensors")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "\\x0a" not in err and err.count("\n") > 3, err
    assert "rule `h.{i}.attn.c_attn.weight`" in err and "split as blocks" in err, err
    sets = err.split("the tensors fit this spec with `--set ")[1].split("`")[0].split()
    assert sorted(sets) == ["d_model=48", "vocab=101"], err
    assert cli.main(argv + ["--set", *sets]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- import hf of T5

@pytest.mark.parametrize("v1_1,own_head", [(False, False), (True, True), (True, False)],
                         ids=["t5", "t5-v1_1", "t5-v1_1-as-transformers-5-saves-it"])
def test_import_hf_t5_from_save_pretrained(v1_1, own_head, tmp_path, capsys):
    """`import hf` of a save_pretrained T5 (T5 and v1.1: gated-gelu, no output scaling, a head of its own)
    gives a spec whose build, with the directory's weights, computes the reference's logits."""
    from graphformer import cli
    from graphformer.weights.maps import read_state_dict
    kw = dict(vocab_size=97, d_model=40, d_kv=12, d_ff=56, num_layers=2, num_decoder_layers=3, num_heads=5,
              relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0)
    if v1_1:
        kw |= dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    ref = T.T5ForConditionalGeneration(T.T5Config(**kw)).eval()
    if own_head:   # the hub's v1.1 checkpoints: a head of their own (transformers 5 ties in memory and
        ref.lm_head.weight = nn.Parameter(torch.randn_like(ref.lm_head.weight))   # saves no head otherwise)
    ref.save_pretrained(tmp_path / "ckpt")
    if own_head:   # and their config.json as written before transformers 5: untied, no scale_decoder_outputs
        config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
        config.pop("scale_decoder_outputs", None)
        (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    assert cli.main(["import", "hf", str(tmp_path / "ckpt"), "-o", str(tmp_path / "t5.yaml")]) == 0, \
        capsys.readouterr().err
    imported = graphformer.load(tmp_path / "t5.yaml")
    assert imported.params["ffn"] == ("gated_ffn" if v1_1 else "dense_ffn")
    assert imported.params["scale_decoder_outputs"] == (0 if v1_1 else 1)
    model = graphformer.build(imported).eval()
    graphformer.load_weights(model, read_state_dict(str(tmp_path / "ckpt")), "hf")
    gen = torch.Generator().manual_seed(0)
    ids, dec = torch.randint(0, 97, (2, 9), generator=gen), torch.randint(0, 97, (2, 5), generator=gen)
    with torch.no_grad():
        got, want = model(tokens=ids, decoder_tokens=dec)["logits"], ref(input_ids=ids, decoder_input_ids=dec).logits
    assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())


# ---------------------------------------------------------------- the embedding's pad row

def _pad_call(name, ids):
    """(our inputs, the reference's inputs, how to read the output) for a table read by `ids`."""
    if name == "whisper-base":
        feats = torch.randn(2, 7, 18, generator=torch.Generator().manual_seed(1))
        return ({"input_features": feats, "decoder_input_ids": ids}, {"input_features": feats, "decoder_input_ids": ids},
                ("logits", lambda out: out.logits))
    if name in ("bert-base", "albert"):
        both = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}
        return both, both, ("last_hidden_state", lambda out: out.last_hidden_state)
    if name == "modernbert":
        return {"input_ids": ids}, {"input_ids": ids}, ("logits", lambda out: out.logits)
    if name == "deberta-v2":
        return {"input_ids": ids}, {"input_ids": ids}, ("last_hidden_state", lambda out: out.last_hidden_state)
    if name == "paligemma":   # 16 image tokens (96) first, then the ids; the image and ids are the prefix
        ids = torch.cat([torch.full((2, 16), 96), ids], dim=1)
        pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        types = torch.zeros_like(ids)
        return ({"tokens": ids, "pixels": pixels, "prefix": 1 - types},
                {"input_ids": ids, "pixel_values": pixels, "token_type_ids": types}, ("logits", lambda out: out.logits))
    if name == "gemma3-vision":   # one image's 4 tokens (50) first, then the ids; the image tokens are a block
        ids = torch.cat([torch.full((2, 4), 50), ids], dim=1)
        pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        return ({"tokens": ids, "pixels": pixels},
                {"input_ids": ids, "pixel_values": pixels, "token_type_ids": (ids == 50).long()},
                ("logits", lambda out: out.logits))
    return {"tokens": ids}, {"input_ids": ids}, ("logits", lambda out: out.logits)


PADDED = [c for c in CASES if c.endswith("/hf") and "pad_token" in CASES[c]()[0].params]


def test_every_table_with_a_pad_row_in_the_reference_has_pad_token():
    """A reference whose token table has padding_idx (transformers sets it from pad_token_id) is loaded by
    a spec with a `pad_token` param: otherwise the pad row trains here and not there."""
    missing = []
    for case in CASES:
        if not case.endswith("/hf") or case in PADDED:
            continue
        ref = CASES[case]()[1]
        if any(isinstance(m, nn.Embedding) and m.padding_idx is not None for m in ref.modules()):
            missing.append(case)
    assert not missing, f"references with a pad row whose spec has no `pad_token`: {missing}"


@pytest.mark.parametrize("case", PADDED)
def test_every_pad_row_gets_no_gradient_as_in_the_reference(case):
    """For every bundled spec with `pad_token`: the reference built with pad_token_id=3, our spec imported
    from its config as `import hf` does (so the pad row comes from the config), the pad id at real
    positions: every gradient equals the reference's, and the pad row's is zero in both."""
    from graphformer.frontend.hf import convert_config, spec_path
    s, ref = CASES[case]()
    name = case.split("/")[0]
    cfg = copy.deepcopy(ref.config)
    cfg.pad_token_id = 3
    if hasattr(cfg, "text_config"):   # a multimodal model's token table is its language model's
        cfg.text_config.pad_token_id = 3
    ref = randomize(type(ref)(cfg))
    imported = convert_config(ref.config.to_dict())
    assert imported.params["pad_token"] == 3
    s = graphformer.load(spec_path(imported.family), overrides=dict(imported.params))
    model = graphformer.build(s, seed=0).eval()
    graphformer.load_weights(model, ref.state_dict(), "hf")
    ids = torch.tensor([[3, 5, 3, 7, 9, 3], [1, 3, 2, 3, 4, 5]])
    ours_in, ref_in, (key, read) = _pad_call(name, ids)
    ref.zero_grad()
    read(ref(**ref_in)).pow(2).mean().backward()
    model(**ours_in)[key].pow(2).mean().backward()
    theirs = dict(ref.named_parameters())
    ours_grads = {k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in model.named_parameters()}
    ours_grads.update({k: torch.zeros_like(b) for k, b in model.state_dict().items()   # running state (DeepSeek-V3's
                       if k not in ours_grads})                                      # selection bias): no gradient
    back = to_reference(s, ours_grads, "hf", reference=ref.state_dict())
    for k, g in back.items():
        if k not in theirs:   # a tied head: named once, as the table, by named_parameters
            continue
        want = theirs[k].grad if theirs[k].grad is not None else torch.zeros_like(g)
        assert (g - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item()), k
    pads = [m for m in ref.modules() if isinstance(m, nn.Embedding) and m.padding_idx == 3]
    assert pads and any(m.weight.grad is not None and m.weight.grad[5].abs().max() > 0 for m in pads)
    if not getattr(ref.config, "tie_word_embeddings", False):   # a tied head trains the row as any other
        assert all(m.weight.grad is None or m.weight.grad[3].abs().max() == 0 for m in pads)


def test_pad_token_comes_from_the_config_and_is_checked(tmp_path, capsys):
    from graphformer import cli
    import json
    cfg = T.MistralConfig(**llama_cfg(pad_token_id=7)).to_dict()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert cli.main(["import", "hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "m.yaml")]) == 0
    assert graphformer.load(tmp_path / "m.yaml").params["pad_token"] == 7
    cfg["pad_token_id"] = 97
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert cli.main(["import", "hf", str(tmp_path / "config.json"), "-o", str(tmp_path / "m.yaml")]) == 1
    assert "`pad_token_id: 97`" in capsys.readouterr().err


# ---------------------------------------------------------------- split: alternate

ALTERNATE = """\
graphformer: 1
name: alternate
params: {d: 4, f: 3}
dims: {B: 2, n: 3}
inputs:
  x: {shape: [B, n, d]}
nodes:
  gate: {op: linear, in: x, out: f}
  up:   {op: linear, in: x, out: f}
outputs: {g: gate, u: up}
weight_maps:
  ref:
    rules:
      - {from: gate_up.weight, split: alternate, to: [gate.weight, up.weight]}
      - {from: gate_up.bias, split: alternate, to: [gate.bias, up.bias]}
"""


def test_split_alternate_takes_every_other_row_and_writes_them_back(tmp_path):
    """GPT-OSS interleaves gate and up rows: row r is gate's when r is even, up's when odd."""
    import numpy as np
    path = tmp_path / "alternate.yaml"
    path.write_text(ALTERNATE)
    s = graphformer.load(path)
    sd = {"gate_up.weight": np.arange(24, dtype=np.float32).reshape(6, 4),
          "gate_up.bias": np.arange(6, dtype=np.float32)}
    got = convert_state_dict(s, sd, "ref")
    assert np.array_equal(got["gate.weight"], sd["gate_up.weight"][0::2])
    assert np.array_equal(got["up.weight"], sd["gate_up.weight"][1::2])
    assert np.array_equal(got["up.bias"], [1, 3, 5])
    back = to_reference(s, got, "ref")
    assert all(np.array_equal(back[k], sd[k]) for k in sd)
    with pytest.raises(Exception, match=r"does not split evenly into 2 parts"):
        convert_state_dict(s, {**sd, "gate_up.bias": np.arange(5, dtype=np.float32)}, "ref")


# ---------------------------------------------------------------- from: [a, b] with concat

CONCAT = """\
graphformer: 1
name: concat
params: {d: 4, layers: 2}
dims: {B: 2, n: 3}
inputs:
  x: {shape: [B, n, d]}
blocks:
  layer:
    inputs: {x: [B, n, d]}
    nodes:
      up:   {op: linear, out: 6}
      down: {op: linear, out: d}
    outputs: {x: down}
nodes:
  layers: {op: layer, in: x, repeat: layers}
outputs: {y: layers}
weight_maps:
  ref:
    strip_prefix: model.
    rules:
      - {from: ["h.{i}.a.weight", "h.{i}.b.weight"], concat: 0, to: "layers.{i}.up.weight"}
      - {from: ["h.{i}.a.bias", "h.{i}.b.bias"], concat: 0, to: "layers.{i}.up.bias"}
      - {from: ["h.{i}.left", "h.{i}.right"], concat: 1, to: "layers.{i}.down.weight"}
      - {from: "h.{i}.down.bias", to: "layers.{i}.down.bias"}
"""


def test_concat_of_several_sources_and_its_inverse(tmp_path):
    import numpy as np
    path = tmp_path / "concat.yaml"
    path.write_text(CONCAT)
    s = graphformer.load(path)
    rng = np.random.default_rng(0)
    sd = {}
    for i in range(2):
        sd |= {f"model.h.{i}.a.weight": rng.standard_normal((2, 4)),
               f"model.h.{i}.b.weight": rng.standard_normal((4, 4)),
               f"model.h.{i}.a.bias": rng.standard_normal(2), f"model.h.{i}.b.bias": rng.standard_normal(4),
               f"model.h.{i}.left": rng.standard_normal((4, 1)), f"model.h.{i}.right": rng.standard_normal((4, 5)),
               f"model.h.{i}.down.bias": rng.standard_normal(4)}
    sd = {k: v.astype(np.float32) for k, v in sd.items()}
    got = convert_state_dict(s, sd, "ref")
    assert np.array_equal(got["layers.1.up.weight"],
                          np.concatenate([sd["model.h.1.a.weight"], sd["model.h.1.b.weight"]]))
    assert np.array_equal(got["layers.0.down.weight"][:, 1:], sd["model.h.0.right"])
    back = to_reference(s, got, "ref", reference=sd)
    assert list(back) == list(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
    del sd["model.h.1.b.bias"]
    with pytest.raises(Exception, match=r"concatenates `h\.1\.b\.bias`, which the reference lacks"):
        convert_state_dict(s, sd, "ref")


def test_a_list_in_from_needs_concat(tmp_path):
    from graphformer.frontend.check import check_file
    path = tmp_path / "concat.yaml"
    path.write_text(CONCAT.replace(', concat: 1', ''))
    diags = check_file(str(path)).diagnostics
    assert any("`concat: axis` go together" in d.message.lower() for d in diags), diags
