"""Training data for heads distilled from the frozen model itself: its own greedy generations and hidden states.

Heads learn to predict what the full model would say on the text it actually produces at decoding time, so the
data are the model's greedy continuations of training prompts, and the hidden states along them.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from harness.core.model_runner import ModelRunner


def greedy_continuations(runner: ModelRunner, prompts_ids: list[list[int]], max_new_tokens: int,
                         batch_size: int = 8) -> list[list[int]]:
    """The model's greedy continuation of each prompt, cut after its first end-of-sequence token.

    Prompts go through `model.generate` in left-padded batches (several times faster than one by one on a CPU).
    Padding can flip a near-tie argmax, so a continuation may differ from unbatched greedy in rare places; that is
    harmless for training data.
    """
    eos = runner.eos_token_ids
    pad = runner.tokenizer.pad_token_id if runner.tokenizer.pad_token_id is not None else min(eos)
    continuations: list[list[int]] = []
    for start in tqdm(range(0, len(prompts_ids), batch_size), desc="greedy continuations", unit="batch"):
        batch = prompts_ids[start:start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], device=runner.device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=runner.device)
        with torch.inference_mode():
            out = runner.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        do_sample=False, pad_token_id=pad)
        for row in out[:, width:].tolist():
            end = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
            continuations.append(row[:end])
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
