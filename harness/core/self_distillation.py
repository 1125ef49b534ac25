"""Training data for heads distilled from the frozen model itself: its own greedy generations and hidden states.

Heads learn to predict what the full model would say on the text it actually produces at decoding time, so the
data are the model's greedy continuations of training prompts, and the hidden states along them.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from harness.core.model_runner import ModelRunner


def greedy_continuations(runner: ModelRunner, prompts_ids: list[list[int]], max_new_tokens: int
                         ) -> list[list[int]]:
    """The model's greedy continuation of each prompt, cut after its first end-of-sequence token.

    One prompt at a time through the runner's KV cache: on a 2-core CPU, left-padded batches through
    `model.generate` measured several times slower per token than this loop (the padded attention masks dominate).
    """
    eos = runner.eos_token_ids
    continuations: list[list[int]] = []
    with torch.inference_mode():
        for ids in tqdm(prompts_ids, desc="greedy continuations", unit="prompt"):
            cache = runner.new_cache(len(ids) + max_new_tokens)
            tokens = [int(runner.forward(ids, cache)[-1].argmax())]
            while len(tokens) < max_new_tokens and tokens[-1] not in eos:
                tokens.append(int(runner.forward(tokens[-1:], cache)[-1].argmax()))
            continuations.append(tokens)
    return continuations


def collect_hidden_states(runner: ModelRunner, sequences: list[list[int]], prompt_lengths: list[int],
                          layers: list[int]) -> dict[int, torch.Tensor]:
    """Hidden states after layers [0, L) for each L in `layers`, at the positions that predict generated tokens.

    A sequence is prompt + continuation; its positions `prompt_length - 1 … len - 2` are kept (one per generated
    token, in order: row j predicts the sequence's token `prompt_length + j`), concatenated over sequences into
    [N, d] float32 tensors. L = n_layers is the last layer's output before the final norm.
    """
    wanted = sorted(set(layers))
    collected: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}
    with torch.inference_mode():
        for ids, prompt_length in zip(tqdm(sequences, desc="hidden states", unit="seq"), prompt_lengths):
            keep = slice(prompt_length - 1, len(ids) - 1)
            cache = runner.new_cache(len(ids))
            hidden, done = runner.embed(ids), 0
            for layer in wanted:
                hidden = runner.run_layers(hidden, cache, done, layer)
                done = layer
                collected[layer].append(hidden[0, keep].float())
    return {layer: torch.cat(parts) for layer, parts in collected.items()}
