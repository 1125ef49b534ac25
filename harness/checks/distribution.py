"""A test of a decoder's output distribution under sampling, the check that replaces token parity there.

For a prompt and a short continuation (the first `length` tokens, with a top-k small enough that the k**length
continuations can be enumerated), the exact probability of every continuation is computed from the model with one
forward per prefix; the decoder generates the continuation from `draws` differently seeded samplers, and Pearson's
chi-square test compares the counts with the exact probabilities (continuations whose expected count is below 5
are pooled into one cell, as the test's approximation needs). At significance `alpha` a correct decoder fails with
probability `alpha` (a false alarm); the draws are seeded, so a given check's verdict is reproducible.

A sampled benchmark run (`--temperature` above 0) runs the check for every decoder on each task's first sample, at
the run's temperature and top-p with the top-k cut to `RUN_TOP_K`, and appends one row per (task, decoder) to the
run folder's `distribution.jsonl`: the verdict that replaces token parity in its reports. The check starts where
it can tell decoders apart (`informative_prefix`): a chat prompt's first tokens are often nearly certain (a code
fence, "The"), and a check there passes every decoder whatever it does, so the prompt is extended by vanilla's
greedy tokens up to the position, within `RUN_HORIZON`, whose next-token distribution has the most entropy. With
the few hundred draws a run affords, it catches gross errors only; the fine-grained check is the test suite's.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy.stats import chi2_contingency, chisquare

from harness.core.decoding import Decoder, StopCondition
from harness.core.model_runner import ModelRunner
from harness.core.sampling import Sampler, Sampling, warp
from harness.run.results import read_rows, set_aside
from harness.schema import CHECK_KEYS, DISTRIBUTION_FILE

MIN_EXPECTED = 5.0
RUN_HORIZON = 32  # greedy tokens searched for the most uncertain position to check from
RUN_TOP_K, RUN_LENGTH, RUN_GENERATED = 3, 2, 4  # a run's check: 9 continuations; 4 tokens so that drafts reach past


@dataclass
class DistributionCheck:
    statistic: float
    p_value: float
    cells: int  # after pooling
    draws: int
    alpha: float

    @property
    def passed(self) -> bool:
        return self.p_value >= self.alpha

    def as_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "p_value": self.p_value, "cells": self.cells, "draws": self.draws,
                "alpha": self.alpha, "passed": self.passed}


@torch.inference_mode()
def exact_distribution(runner: ModelRunner, prompt_ids: list[int], length: int,
                       settings: Sampling) -> dict[tuple[int, ...], float]:
    """The probability of every continuation of `length` tokens with non-zero probability under `settings`."""
    found: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(length):
        longer = {}
        for prefix, mass in found.items():
            ids = prompt_ids + list(prefix)
            probs = warp(runner.forward(ids, runner.new_cache(len(ids)), last_only=True)[-1], settings)
            for token in torch.nonzero(probs).flatten().tolist():
                longer[prefix + (token,)] = mass * float(probs[token])
        found = longer
    return found


def empirical_counts(decoder: Decoder, prompt_ids: list[int], length: int, settings: Sampling, draws: int,
                     max_new_tokens: int | None = None, sampler: type[Sampler] = Sampler) -> dict[tuple[int, ...], int]:
    """How often each continuation's first `length` tokens came out of `draws` generations, the i-th seeded by
    (seed, i). Generating `max_new_tokens` (default `length`) lets drafts reach further than the tokens counted.
    `sampler`: the sampler class (tests plant a faulty one)."""
    stop = StopCondition(max_new_tokens or length)
    counts: dict[tuple[int, ...], int] = {}
    for i in range(draws):
        drawn = sampler(settings, settings.seed_for("distribution", i))
        tokens = tuple(decoder.generate(prompt_ids, stop, sampler=drawn).tokens[:length])
        counts[tokens] = counts.get(tokens, 0) + 1
    return counts


def chi_square(counts: dict[tuple[int, ...], int], exact: dict[tuple[int, ...], float],
               alpha: float) -> DistributionCheck:
    """Pearson's chi-square test of `counts` against `exact`; a continuation outside the exact support fails
    outright (p = 0)."""
    draws = sum(counts.values())
    if any(c not in exact for c in counts):
        return DistributionCheck(float("inf"), 0.0, len(exact), draws, alpha)
    observed, expected, pooled_o, pooled_e = [], [], 0, 0.0
    for continuation, probability in exact.items():
        if probability * draws < MIN_EXPECTED:
            pooled_o, pooled_e = pooled_o + counts.get(continuation, 0), pooled_e + probability * draws
        else:
            observed.append(counts.get(continuation, 0))
            expected.append(probability * draws)
    if pooled_e > 0:
        observed.append(pooled_o)
        expected.append(pooled_e)
    scale = draws / sum(expected)  # the exact probabilities sum to 1 up to float rounding
    result = chisquare(observed, [e * scale for e in expected])
    return DistributionCheck(float(result.statistic), float(result.pvalue), len(observed), draws, alpha)


def two_sample(counts: dict[tuple[int, ...], int], reference: dict[tuple[int, ...], int],
               alpha: float) -> DistributionCheck:
    """Pearson's chi-square test that two sets of counts (e.g. a decoder's and vanilla's, from independent seeds)
    come from one distribution; continuations seen fewer than 2 × 5 times in both together are pooled into one
    cell, so that every expected count of equally many draws is at least 5."""
    kept = [c for c in set(counts) | set(reference) if counts.get(c, 0) + reference.get(c, 0) >= 2 * MIN_EXPECTED]
    pooled = [sum(v for c, v in side.items() if c not in kept) for side in (counts, reference)]
    table = [[side.get(c, 0) for c in kept] + ([n] if sum(pooled) else []) for side, n in zip((counts, reference),
                                                                                             pooled)]
    result = chi2_contingency(table, correction=False)
    return DistributionCheck(float(result.statistic), float(result.pvalue), len(table[0]), sum(counts.values()),
                             alpha)


def check_distribution(decoder: Decoder, prompt_ids: list[int], settings: Sampling, length: int = 3,
                       draws: int = 2000, alpha: float = 0.001, max_new_tokens: int | None = None,
                       sampler: type[Sampler] = Sampler) -> DistributionCheck:
    """The chi-square check of `decoder`'s first `length` tokens after `prompt_ids` against the model's exact
    distribution under `settings` (which should have a small `top_k`, so that the continuations are few)."""
    exact = exact_distribution(decoder.runner, prompt_ids, length, settings)
    counts = empirical_counts(decoder, prompt_ids, length, settings, draws, max_new_tokens, sampler)
    return chi_square(counts, exact, alpha)


def checked_decoders(out_dir: Path, task: str) -> set[str]:
    """The decoders whose distribution check on `task` the run folder already holds."""
    path = out_dir / DISTRIBUTION_FILE
    if not path.is_file():
        return set()
    rows, damaged = read_rows(path, CHECK_KEYS)
    if damaged:
        print(f"warning: {set_aside(path, rows, damaged)}", file=sys.stderr)
    return {row["decoder"] for row in rows if row["task"] == task}


@torch.inference_mode()
def informative_prefix(runner: ModelRunner, prompt_ids: list[int], settings: Sampling,
                       horizon: int = RUN_HORIZON) -> list[int]:
    """The prompt extended by vanilla's greedy tokens up to the position (within `horizon`, before an end of
    sequence) where the next token's distribution under `settings` has the most entropy."""
    cache = runner.new_cache(len(prompt_ids) + horizon + 1)
    logits = runner.forward(prompt_ids, cache, last_only=True)[-1]
    tokens: list[int] = []
    best, best_entropy = 0, -1.0
    for position in range(horizon + 1):
        probs = warp(logits, settings)
        entropy = float(-(probs * probs.clamp_min(1e-30).log()).sum())
        if entropy > best_entropy:
            best, best_entropy = position, entropy
        token = int(logits.argmax())
        if position == horizon or token in runner.eos_token_ids:
            break
        tokens.append(token)
        logits = runner.forward([token], cache)[-1]
    return prompt_ids + tokens[:best]


def record_run_checks(out_dir: Path, task: str, sample_id: str, prompt_ids: list[int], decoders: dict[str, Decoder],
                      sampling: Sampling, draws: int) -> None:
    """Checks each of `decoders` (those `checked_decoders` does not list yet: a resumed run keeps its rows) and
    appends its row to the run folder's `distribution.jsonl` as soon as it is done."""
    settings = Sampling(sampling.temperature, sampling.top_p, min(sampling.top_k or RUN_TOP_K, RUN_TOP_K),
                        sampling.seed)
    start = informative_prefix(next(iter(decoders.values())).runner, prompt_ids, settings)
    for name, decoder in decoders.items():
        check = check_distribution(decoder, start, settings, RUN_LENGTH, draws, max_new_tokens=RUN_GENERATED)
        row = {"task": task, "decoder": name, "sample_id": sample_id, "prefix_tokens": len(start) - len(prompt_ids),
               "tokens": RUN_LENGTH, "sampling": settings.as_dict(), **check.as_dict()}
        with open(out_dir / DISTRIBUTION_FILE, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
