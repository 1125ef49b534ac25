"""Training data for heads distilled from the frozen model itself: its own greedy generations and hidden states.

Heads learn to predict what the full model would say on the text it actually produces at decoding time, so the
data are the model's greedy continuations of training prompts, and the hidden states along them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from harness.core.loading import cache_dir
from harness.core.model_runner import ModelRunner


def greedy_continuations(runner: ModelRunner, prompts_ids: list[list[int]], max_new_tokens: int
                         ) -> list[list[int]]:
    """The model's greedy continuation of each prompt, cut after its first end-of-sequence token.

    One prompt at a time through the runner's KV cache: on a 2-core CPU, left-padded batches through
    `model.generate` measured several times slower per token than this loop (the padded attention masks dominate).
    Each continuation is appended to a cache file (`continuations_file`) as soon as it is made, so training other
    heads on the same prompts, or rerunning an interrupted training, does not generate it again.
    """
    path = continuations_file(runner, max_new_tokens)
    known = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a kill
                row = json.loads(line)
                known[row["prompt"]] = row["tokens"]
    path.parent.mkdir(parents=True, exist_ok=True)
    eos = runner.eos_token_ids
    continuations: list[list[int]] = []
    with torch.inference_mode(), path.open("a", encoding="utf-8") as out:
        for ids in tqdm(prompts_ids, desc="greedy continuations", unit="prompt"):
            key = hashlib.sha1(json.dumps(ids).encode()).hexdigest()
            if key not in known:
                cache = runner.new_cache(len(ids) + max_new_tokens)
                tokens = [int(runner.forward(ids, cache, last_only=True)[-1].argmax())]
                while len(tokens) < max_new_tokens and tokens[-1] not in eos:
                    tokens.append(int(runner.forward(tokens[-1:], cache)[-1].argmax()))
                known[key] = tokens
                out.write(json.dumps({"prompt": key, "tokens": tokens}) + "\n")
                out.flush()
            continuations.append(known[key])
    return continuations


def continuations_file(runner: ModelRunner, max_new_tokens: int) -> Path:
    """`cache_dir()/continuations/<model>-<dtype>-<device type>-<max new tokens>.jsonl` (prompt hash → tokens)."""
    dtype = str(runner.dtype).removeprefix("torch.")
    safe_model = runner.name.replace("/", "--") or "model"
    return cache_dir() / "continuations" / f"{safe_model}-{dtype}-{runner.device.type}-{max_new_tokens}.jsonl"


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


def frequent_tokens(tokens: Iterable[int], k: int) -> torch.Tensor:
    """The k most frequent token ids (the first seen first among equals), in id order: a head's reduced vocabulary."""
    return torch.tensor(sorted(t for t, _ in Counter(tokens).most_common(k)), dtype=torch.long)
