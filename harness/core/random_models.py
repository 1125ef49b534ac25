"""Models of real shapes with random weights, built from hand-written configs (no hub, no download).

They let the device check and the tests run every decoder on any device and dtype: greedy decoding of a random
model is as deterministic as a trained one's, so parity with vanilla means the same thing, and the shapes (and so
the costs) are the real models'. A config's `model_type` picks the architecture (Llama unless it says `qwen2`);
biases (Qwen2's q/k/v) are drawn at random too, since transformers initialises them to zero and a zero bias would
not test the code that adds it.
"""
from __future__ import annotations

from typing import Any

import torch

from harness.core.model_runner import ModelRunner

# SmolLM2-135M-Instruct's config.json (the embedded default model)
SMOLLM2_135M: dict[str, Any] = {
    "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
}

# meta-llama/Llama-3.1-8B-Instruct's config.json
LLAMA_31_8B: dict[str, Any] = {
    "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": 128009,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}

# A few layers of a few dimensions: the CPU "dry" form of the device check, and the tests
TINY: dict[str, Any] = {
    "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}

# Qwen/Qwen2.5-Coder-0.5B-Instruct's config.json (the second embedded model): q/k/v biases, 14 query heads over 2
# key/value heads, tied embeddings, a sliding window configured but switched off
QWEN25_CODER_05B: dict[str, Any] = {
    "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True, "sliding_window": 32768,
    "use_sliding_window": False, "max_window_layers": 24, "bos_token_id": 151643, "eos_token_id": 151645,
}

# Qwen2.5-Coder-0.5B scaled down with its ratios: 7 query heads over 1 key/value head (14:2), head_dim 16, the MLP
# 5.43x the width, the tied lm head a quarter of the weights, the window off. Weights 5x the real init's spread:
# at 0.02 so narrow a model's residual stream is its embedding and greedy decoding repeats one token
TINY_QWEN2: dict[str, Any] = {
    "model_type": "qwen2", "vocab_size": 4096, "hidden_size": 112, "intermediate_size": 608,
    "num_hidden_layers": 6, "num_attention_heads": 7, "num_key_value_heads": 1, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True, "sliding_window": 2048,
    "use_sliding_window": False, "max_window_layers": 6, "bos_token_id": 1, "eos_token_id": 2,
    "initializer_range": 0.1,
}

CONFIGS = {"smollm2-135m": SMOLLM2_135M, "llama-3.1-8b": LLAMA_31_8B, "qwen2.5-coder-0.5b": QWEN25_CODER_05B,
           "tiny": TINY, "tiny-qwen2": TINY_QWEN2}
BIAS_STD = 0.5  # random biases of the size of a projection's output (Qwen2's key biases are larger still)


class NumberTokenizer:
    """A stand-in tokenizer for random models: token i is the word `t<i>`."""

    chat_template = None

    def __init__(self, vocab_size: int, eos_token_id: int) -> None:
        self.vocab_size = vocab_size
        self.eos_token_id = self.pad_token_id = eos_token_id
        self.eos_token = self.pad_token = f"t{eos_token_id}"
        self.bos_token = self.unk_token = None

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return " ".join(f"t{int(i)}" for i in ids if not (skip_special_tokens and int(i) == self.eos_token_id))

    def get_vocab(self) -> dict[str, int]:
        return {f"t{i}": i for i in range(self.vocab_size)}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [f"t{int(i)}" for i in ids]

    def __call__(self, text: str, **kwargs: Any) -> dict[str, list[int]]:
        return {"input_ids": [sum(map(ord, word)) % self.vocab_size for word in text.split()]}


def random_runner(config: dict[str, Any], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  seed: int = 0, name: str = "random", runner: str = "fast") -> ModelRunner:
    """A model of `config`'s architecture and shape with random weights and biases (seeded), built directly on
    `device` in `dtype`, on the given runner (`ModelRunner`: eager, fast, compiled or captured)."""
    import transformers

    settings = dict(config)
    architecture = settings.pop("model_type", "llama")
    prefix = {"llama": "Llama", "qwen2": "Qwen2"}[architecture]
    config_class, model_class = (getattr(transformers, f"{prefix}{kind}") for kind in ("Config", "ForCausalLM"))
    torch.manual_seed(seed)
    with torch.device(device):  # built in place: an 8B model never exists in float32 or on the CPU
        model = model_class._from_config(config_class(**settings), dtype=dtype)
        model.tie_weights()  # `_from_config` leaves a tied lm head as a second matrix
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear) and module.bias is not None:
                    module.bias.normal_(0.0, BIAS_STD)
    return ModelRunner(model, NumberTokenizer(config["vocab_size"], config["eos_token_id"]), name=name, runner=runner)
