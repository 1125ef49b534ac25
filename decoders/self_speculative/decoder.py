"""Draft & Verify self-speculative decoding (Zhang et al. 2023): the draft is the model with sub-layers skipped.

The skip set comes from the `skip_attention`/`skip_mlp` settings, or from a greedy search over the model's own
generations (`decoders.self_speculative.skip_search`), run once per model and cached in `cache_dir()/skip_sets/`. Drafting
stops after a token whose draft probability falls below a threshold γ that follows the acceptance rate (the
paper's adaptive draft-exiting): AR ← β·AR + (1−β)·AR_round, then γ ← β·γ + (1−β)·(γ + ε if AR ≤ α else γ − ε).
The drafted chunk is recomputed by the full model in one verification pass: the draft's keys/values come from a
different residual stream, so they are dropped first.
"""
from __future__ import annotations

import torch

from harness.core.decoding import DECODERS
from decoders.self_speculative.skip_search import SkipSet, load_or_search
from harness.core.speculation import DraftVerifyDecoder


@DECODERS.register("self_speculative")
class SelfSpeculative(DraftVerifyDecoder):
    def __init__(self, runner, task=None, skip_attention: list[int] | None = None, skip_mlp: list[int] | None = None,
                 max_draft: int = 8, threshold: float = 0.6, target_acceptance: float = 0.8, step: float = 0.01,
                 momentum: float = 0.5) -> None:
        super().__init__(runner, task)
        if skip_attention is None and skip_mlp is None:
            self.skip = load_or_search(runner)
        else:
            self.skip = SkipSet(frozenset(skip_attention or ()), frozenset(skip_mlp or ()))
        self.max_draft = max_draft
        self.initial_threshold = threshold
        self.target_acceptance = target_acceptance
        self.step = step
        self.momentum = momentum

    def _generate(self, prompt_ids, stop, on_first_token):
        self.threshold, self.acceptance = self.initial_threshold, self.target_acceptance  # each sample alike
        return super()._generate(prompt_ids, stop, on_first_token)

    def _draft_and_verify(self, pending, cache, committed, budget):
        runner, skip = self.runner, self.skip
        drafted: list[int] = []
        token = pending
        for depth in range(min(self.max_draft, budget)):
            hidden = runner.run_layers(runner.embed([token]), cache, skip_attention=skip.attention,
                                       skip_mlp=skip.mlp)
            token, probability = self._propose(runner.logits(hidden), committed + depth + 1, depth)
            drafted.append(token)
            if probability < self.threshold:
                break
        cache.crop(committed)
        return drafted, runner.forward([pending] + drafted, cache)

    def _propose(self, logits, position, depth):
        """The draft's top token and its probability, read together in one host sync per drafted token."""
        probability, token = torch.softmax(logits[-1].float(), dim=-1).max(dim=-1)
        token, probability = torch.stack([token.double(), probability.double()]).tolist()
        return int(token), probability

    def _after_round(self, drafted, accepted):
        if not drafted:
            return
        beta = self.momentum
        self.acceptance = beta * self.acceptance + (1 - beta) * accepted / drafted
        target = self.threshold + (self.step if self.acceptance <= self.target_acceptance else -self.step)
        self.threshold = beta * self.threshold + (1 - beta) * target

    def _extra_stats(self):
        return {"skip_attention": sorted(self.skip.attention), "skip_mlp": sorted(self.skip.mlp),
                "final_threshold": self.threshold}
