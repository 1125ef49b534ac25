"""Draft-then-verify bookkeeping for speculative decoders, greedy or sampling.

Each round starts from a *pending* token (accepted but not yet in the KV cache, which holds `committed` valid
slots in every layer). A decoder drafts up to `budget` tokens after it, then verifies pending + drafts with the
full model in one chunk: logits row j is the model's prediction after pending, d1..dj. The longest drafted
prefix the verifier confirms is kept together with the verifier's next token (the bonus), every layer is rolled
back to the accepted positions, and the bonus becomes the next pending token. Under greedy decoding this emits
exactly the vanilla tokens whatever the drafts were. Under sampling the drafts (deterministic: point masses) are
accepted by speculative sampling (`Sampler.accept_chain`), which draws the output from exactly vanilla's
distribution whatever the drafts were.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from harness.core.decoding import Decoder, Generation, TokenSink, accepted_prefix_length, greedy
from harness.core.kv_cache import LayeredKVCache
from harness.core.sampling import Sampler


def accept_chain(drafted: list[int], verify_logits: torch.Tensor, sampler: Sampler | None,
                 draft_probs: Sequence[torch.Tensor | None] | None = None) -> list[int]:
    """The accepted drafted prefix plus the verifier's next token (logits: [len(drafted) + 1, vocab]): the confirmed
    prefix under greedy decoding, else by speculative sampling (`draft_probs`: what each draft was drawn from, None
    for deterministic drafts)."""
    if sampler is not None:
        return sampler.accept_chain(drafted, verify_logits, draft_probs)
    verified = greedy(verify_logits)
    n = accepted_prefix_length(drafted, verified)
    return drafted[:n] + [verified[n]]


@dataclass
class SpeculationStats:
    """Counts in vLLM's spec-decode terms; `steps` are full-model passes (prefill + verifications)."""
    steps: int = 0
    drafted: int = 0
    acceptance_lengths: list[int] = field(default_factory=list)  # per drafting round, bonus token included

    def record(self, drafted: int, accepted: int) -> None:
        self.steps += 1
        if drafted:
            self.drafted += drafted
            self.acceptance_lengths.append(accepted + 1)

    def as_dict(self) -> dict[str, Any]:
        drafts = len(self.acceptance_lengths)
        accepted = sum(self.acceptance_lengths) - drafts
        return {"steps": self.steps, "drafted": self.drafted, "accepted": accepted,
                "acceptance_rate": accepted / self.drafted if self.drafted else None,
                "mean_acceptance_length": 1 + accepted / drafts if drafts else None,
                "acceptance_lengths": list(self.acceptance_lengths)}


class DraftVerifyDecoder(Decoder):
    """The draft → verify → accept → roll back loop; subclasses supply `_draft_and_verify`."""

    samples = True

    def _draft_and_verify(self, pending: int, cache: LayeredKVCache, committed: int,
                   budget: int) -> tuple[list[int], torch.Tensor]:
        """Drafts at most `budget` tokens after `pending` and verifies them: (drafts, full-model logits for
        pending + drafts). May leave any slots beyond `committed` in the cache; the loop crops them."""
        raise NotImplementedError

    def _propose(self, logits: torch.Tensor, position: int, depth: int) -> tuple[int, float | None]:
        """The draft token from draft logits [1, vocab], for cache `position`, the `depth`-th of its round (0-based),
        and the drafter's confidence in it (None here; adaptive drafters return a probability).

        Greedy, read with one host sync per drafted token; tests override it to plant drafts."""
        return int(logits[-1].argmax()), None

    def _after_round(self, drafted: int, accepted: int) -> None:
        """Called after each verification (adaptive drafters tune themselves here)."""

    def _extra_stats(self) -> dict[str, Any]:
        return {}

    def _generate(self, prompt_ids, stop, on_first_token):
        cache = self.new_cache(prompt_ids, stop)
        sink = TokenSink(stop, on_first_token)
        stats = SpeculationStats(steps=1)
        emitted = self.pick(self.runner.forward(prompt_ids, cache, last_only=True))
        committed = len(prompt_ids)
        while not sink.add(emitted):
            budget = stop.max_new_tokens - len(sink.tokens) - 1  # the bonus token always comes on top
            drafted, logits = self._draft_and_verify(emitted[-1], cache, committed, budget)
            emitted = accept_chain(drafted, logits, self.sampler)
            committed += len(emitted)  # pending + the accepted drafts now hold valid slots; the bonus is pending
            cache.crop(committed)
            stats.record(len(drafted), len(emitted) - 1)
            self._after_round(len(drafted), len(emitted) - 1)
        return Generation(sink.tokens, stats.as_dict() | self._extra_stats())
