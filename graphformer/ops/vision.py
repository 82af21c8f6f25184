"""Vision, audio, RL and multimodal ops (patch embedding, spectrograms, pooling, ...)."""
