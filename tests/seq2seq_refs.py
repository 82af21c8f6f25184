"""Tiny transformers encoder–decoders saved with save_pretrained (random weights, nothing downloaded), their
reference greedy tokens, and a greedy loop over the directory `graphformer export DIR --with-past` writes,
run as optimum runs it (encoder once; decoder_model.onnx on the start token; decoder_with_past_model.onnx
after). Used by tests/integration/test_onnx_seq2seq.py and tests/slow/test_optimum.py."""
from __future__ import annotations

import json
import os

import numpy as np

# encoder inputs of the references: T5 token ids with a padded row, Whisper log-mel features
T5_IDS = [[5, 6, 7, 8, 9, 10, 1], [11, 12, 13, 1, 0, 0, 0]]
T5_MASK = [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]]
NEW = 12


def save_t5(directory, v1_1: bool = False) -> None:
    """A tiny T5 (2 encoder, 3 decoder layers; d_kv · heads ≠ d_model). v1.1 as its checkpoints ship: gated-GELU,
    `tie_word_embeddings: false` and an LM head of its own (transformers 5 forces the tie in memory, so the
    head is written into the directory afterwards, as a 4.x save holds it)."""
    import torch
    import transformers as T
    torch.manual_seed(0)
    cfg = T.T5Config(vocab_size=99, d_model=32, d_kv=6, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
                     relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0,
                     eos_token_id=1, pad_token_id=0, initializer_factor=8.0,
                     feed_forward_proj="gated-gelu" if v1_1 else "relu")
    T.T5ForConditionalGeneration(cfg).eval().save_pretrained(directory)
    if v1_1:
        from safetensors.torch import load_file, save_file
        path = os.path.join(directory, "model.safetensors")
        sd = load_file(path)
        sd["lm_head.weight"] = torch.randn(sd["shared.weight"].shape, generator=torch.Generator().manual_seed(1))
        save_file(sd, path, metadata={"format": "pt"})
        cfg_path = os.path.join(directory, "config.json")
        with open(cfg_path) as fh:
            config = json.load(fh)
        config["tie_word_embeddings"] = False
        config.pop("scale_decoder_outputs", None)
        with open(cfg_path, "w") as fh:
            json.dump(config, fh, indent=2)


def save_whisper(directory) -> None:
    import torch
    import transformers as T
    torch.manual_seed(0)
    cfg = T.WhisperConfig(vocab_size=99, num_mel_bins=8, d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                          max_source_positions=16, max_target_positions=32, decoder_start_token_id=3, eos_token_id=2,
                          pad_token_id=1, bos_token_id=2, begin_suppress_tokens=None, suppress_tokens=None, init_std=0.5)
    T.WhisperForConditionalGeneration(cfg).eval().save_pretrained(directory)


def whisper_features() -> list:
    return np.random.default_rng(0).standard_normal((2, 8, 32)).astype(np.float32).tolist()


MODELS = {"t5": lambda d: save_t5(d), "t5-v1_1": lambda d: save_t5(d, v1_1=True), "whisper": save_whisper}


def encoder_inputs(kind: str) -> dict[str, list]:
    return {"input_features": whisper_features()} if kind == "whisper" else \
        {"input_ids": T5_IDS, "attention_mask": T5_MASK}


def reference_tokens(kind: str, directory, new: int = NEW) -> list[list[int]]:
    """transformers' greedy `generate` on the saved directory: the generated tokens (no start token).
    T5 runs without its cache: transformers 5's T5 cache is sized by the encoder's layer count and fails
    when the decoder has more (the tokens are those of the cached run, which is only faster)."""
    import torch
    import transformers as T
    T.logging.set_verbosity_error()
    feed = {k: torch.tensor(np.asarray(v, dtype=np.float32 if k == "input_features" else np.int64))
            for k, v in encoder_inputs(kind).items()}
    with torch.no_grad():
        if kind == "whisper":   # Whisper's generate returns the generated tokens alone
            model = T.WhisperForConditionalGeneration.from_pretrained(directory).eval()
            return model.generate(**feed, max_new_tokens=new, do_sample=False).tolist()
        model = T.T5ForConditionalGeneration.from_pretrained(directory).eval()
        return model.generate(**feed, max_new_tokens=new, do_sample=False, use_cache=False)[:, 1:].tolist()


def generated(kind: str, tokens: list[list[int]]) -> list[list[int]]:
    """The generated part of a client's `generate` output: T5's start with the start token, Whisper's not."""
    return [row[1:] for row in tokens] if kind != "whisper" else tokens


class OrtSeq2Seq:
    """Greedy decoding over an exported directory with ONNX Runtime, the way optimum drives the three graphs."""

    def __init__(self, directory):
        import onnxruntime as ort
        self.sess = {name: ort.InferenceSession(os.path.join(directory, name), providers=["CPUExecutionProvider"])
                     for name in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")}
        with open(os.path.join(directory, "generation_config.json")) as fh:
            gen = json.load(fh)
        self.start, self.eos, self.pad = gen["decoder_start_token_id"], gen.get("eos_token_id"), gen.get("pad_token_id")

    def run(self, name: str, feed: dict) -> dict:
        sess = self.sess[name]
        wanted = {i.name for i in sess.get_inputs()}
        out = sess.run(None, {k: v for k, v in feed.items() if k in wanted})
        return dict(zip([o.name for o in sess.get_outputs()], out))

    def generate(self, inputs: dict, new: int = NEW) -> list[list[int]]:
        feed = {k: np.asarray(v, dtype=np.float32 if k == "input_features" else np.int64) for k, v in inputs.items()}
        hidden = self.run("encoder_model.onnx", feed)["last_hidden_state"]
        b = hidden.shape[0]
        step = {"encoder_hidden_states": hidden, "input_ids": np.full((b, 1), self.start, np.int64)}
        if "attention_mask" in feed:
            step["encoder_attention_mask"] = feed["attention_mask"]
        out, past = self.run("decoder_model.onnx", step), {}
        tokens, done = [], np.zeros(b, bool)
        while True:
            # the encoder pasts come from the first step; the decoder's grow by one position per step
            past.update({k.replace("present", "past_key_values"): v for k, v in out.items() if k.startswith("present")})
            nxt = np.where(done, self.pad, out["logits"][:, -1].argmax(-1))
            tokens.append(nxt)
            done |= nxt == self.eos
            if done.all() or len(tokens) == new:
                return np.stack(tokens, 1).tolist()
            out = self.run("decoder_with_past_model.onnx", {**step, **past, "input_ids": nxt[:, None].astype(np.int64)})
