"""Helpers for the speculative decoders' tests: real prompts, vanilla references and planted drafts."""
from __future__ import annotations

import json
from functools import lru_cache

import torch

from decoders.vanilla import Vanilla
from harness.core.decoding import StopCondition
from tasks.base import encode_prompt

WRONG = 1  # offset that turns a reference token into a draft the verifier must reject


def real_prompts(runner, shared_data, n: int) -> list[list[int]]:
    """Prompt ids from the shared MBPP and XSum copies, alternating."""
    rows = [json.loads(line) for line in open(shared_data / "mbpp" / "test.jsonl")][:n]
    docs = [json.loads(line) for line in open(shared_data / "xsum" / "test.jsonl")][:n]
    prompts = [p for pair in zip((r["text"] for r in rows),
                                 (f"Summarise in one sentence:\n\n{d['document'][:1200]}" for d in docs)) for p in pair]
    return [encode_prompt(p, runner.tokenizer) for p in prompts[:n]]


def stop_after(runner, new_tokens: int) -> StopCondition:
    return StopCondition(new_tokens, frozenset(runner.eos_token_ids))


@lru_cache(maxsize=None)
def _vanilla(runner, ids: tuple[int, ...], new_tokens: int) -> tuple[int, ...]:
    return tuple(Vanilla(runner).generate(list(ids), stop_after(runner, new_tokens)).tokens)


def vanilla_tokens(runner, ids: list[int], new_tokens: int) -> list[int]:
    return list(_vanilla(runner, tuple(ids), new_tokens))


def planted(decoder_class, reference: list[int], mismatch_depth: int | None):
    """A subclass of `decoder_class` whose drafts are the reference tokens up to `mismatch_depth` in each round
    (None: never wrong; 0: always wrong). It records the cache lengths each round starts from."""

    class Planted(decoder_class):
        def _generate(self, prompt_ids, stop, on_first_token):
            self.rounds: list[tuple[int, int, list[int]]] = []  # (committed, pending, lengths)
            return super()._generate(prompt_ids, stop, on_first_token)

        def _draft_and_verify(self, pending, cache, committed, budget):
            self.cache = cache
            self.rounds.append((committed, pending, list(cache.lengths)))
            return super()._draft_and_verify(pending, cache, committed, budget)

        def _propose(self, logits, position, depth):
            _, confidence = super()._propose(logits, position, depth)
            right = reference[position]
            return (right if mismatch_depth is None or depth < mismatch_depth else right + WRONG), confidence

    return Planted


@torch.inference_mode()
def assert_cache_holds_the_full_models_keys(runner, cache, tokens: list[int]) -> None:
    """Every layer holds the same number of valid slots, each equal to what one full-model pass writes."""
    n = cache.lengths[0]
    assert cache.lengths == [n] * runner.n_layers and n <= len(tokens)
    tokens = tokens[:n]
    fresh = runner.new_cache(n)
    runner.forward(tokens, fresh)
    assert (cache.k[:, :, :, :n] - fresh.k[:, :, :, :n]).abs().max().item() < 1e-3
    assert (cache.v[:, :, :, :n] - fresh.v[:, :, :, :n]).abs().max().item() < 1e-3


def check_planted_round_trip(runner, decoder, prompt: list[int], expected: list[int]) -> dict:
    """Runs a planted decoder and checks output, per-round cache state and final cache contents; returns stats."""
    generation = decoder.generate(prompt, stop_after(runner, len(expected)))
    assert generation.tokens == expected
    full = prompt + expected
    for committed, pending, lengths in decoder.rounds:
        assert lengths == [committed] * runner.n_layers  # every layer rolled back to the accepted positions
        assert pending == full[committed]
    assert_cache_holds_the_full_models_keys(runner, decoder.cache, full)
    return generation.stats
