"""Prompt lookup decoding (Saxena 2023; transformers' `prompt_lookup_num_tokens`): drafts copied from the context.

No draft model and no training: the last n tokens of the context (prompt and output so far, n from `max_ngram`
down to `min_ngram`) are looked up earlier in the context, and the `k` tokens that followed their latest earlier
occurrence are proposed. The full model verifies them in one chunk (the shared draft → verify loop), so the output
is greedy decoding's; a round without a match is a plain decoding step. It pays off where the output copies from
the input: summaries, retrieval-augmented answers, code edits.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from harness.core.decoding import DECODERS
from harness.core.errors import HarnessError
from harness.core.speculation import DraftVerifyDecoder


def lookup(context: list[int] | np.ndarray, max_ngram: int, min_ngram: int, k: int) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the context's last n tokens, trying n from
    `max_ngram` down to `min_ngram`; [] when no n-gram recurs."""
    tokens = np.asarray(context)
    for n in range(min(max_ngram, len(tokens) - 1), min_ngram - 1, -1):
        windows = sliding_window_view(tokens[:-1], n)  # every n-gram that has a token after it
        starts = np.flatnonzero((windows == tokens[-n:]).all(axis=1))
        if len(starts):
            follow = starts[-1] + n
            return tokens[follow:follow + k].tolist()
    return []


@DECODERS.register("pld")
class PromptLookup(DraftVerifyDecoder):
    """Settings: `max_ngram` (3), `min_ngram` (1), `k` (10, the most tokens drafted per round)."""

    def __init__(self, runner, task=None, max_ngram: int = 3, min_ngram: int = 1, k: int = 10) -> None:
        super().__init__(runner, task)
        self.check_ranges({"max_ngram": max_ngram, "min_ngram": min_ngram, "k": k})
        self.max_ngram, self.min_ngram, self.k = max_ngram, min_ngram, k

    @classmethod
    def check_ranges(cls, settings: dict[str, Any]) -> None:
        if not 1 <= settings["min_ngram"] <= settings["max_ngram"]:
            raise HarnessError(f"pld needs 1 <= min_ngram <= max_ngram, got min_ngram={settings['min_ngram']}, "
                               f"max_ngram={settings['max_ngram']}")
        if settings["k"] < 1:
            raise HarnessError(f"pld k (tokens drafted per round) must be 1 or more, got {settings['k']}")

    def _generate(self, prompt_ids, stop, on_first_token):
        self._context = list(prompt_ids)  # the prompt, then every token emitted or drafted since
        return super()._generate(prompt_ids, stop, on_first_token)

    def _draft_and_verify(self, pending, cache, committed, budget):
        # The first `committed` tokens are in the cache: the prompt, earlier pending tokens and the drafts the
        # verifier accepted (still at their places in `_context`); what follows them was rejected.
        context = self._context[:committed] + [pending]
        drafted = lookup(context, self.max_ngram, self.min_ngram, min(self.k, budget))
        self._context = context + drafted
        return drafted, self.runner.forward([pending] + drafted, cache)

