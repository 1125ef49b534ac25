"""Models of real shapes with random weights, built from hand-written configs (no hub, no download).

They let the device check and the tests run every decoder on any device and dtype: greedy decoding of a random
model is as deterministic as a trained one's, so parity with vanilla means the same thing, and the shapes (and so
the costs) are the real models'.
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

CONFIGS = {"smollm2-135m": SMOLLM2_135M, "llama-3.1-8b": LLAMA_31_8B, "tiny": TINY}


class NumberTokenizer:
    """A stand-in tokenizer for random models: token i is the word `t<i>`."""

    chat_template = None

    def __init__(self, vocab_size: int, eos_token_id: int) -> None:
        self.vocab_size = vocab_size
        self.eos_token_id = self.pad_token_id = eos_token_id

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return " ".join(f"t{int(i)}" for i in ids if not (skip_special_tokens and int(i) == self.eos_token_id))

    def __call__(self, text: str, **kwargs: Any) -> dict[str, list[int]]:
        return {"input_ids": [sum(map(ord, word)) % self.vocab_size for word in text.split()]}


def random_runner(config: dict[str, Any], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                  seed: int = 0, name: str = "random", runner: str = "eager") -> ModelRunner:
    """A Llama model of `config`'s shape with random weights (seeded), built directly on `device` in `dtype`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):  # built in place: an 8B model never exists in float32 or on the CPU
        model = LlamaForCausalLM._from_config(LlamaConfig(**config), dtype=dtype)
    return ModelRunner(model, NumberTokenizer(config["vocab_size"], config["eos_token_id"]), name=name, runner=runner)
