"""Sampling: the warped target distribution, a seeded per-sample sampler, and lossless speculative sampling.

`Sampling` holds the run-wide settings (temperature 0, the default, is greedy decoding). The target distribution
of a logits row is softmax(logits / temperature) restricted to the top-k tokens and then to the smallest set of
most likely tokens whose mass reaches top-p, renormalised, computed in float32 (`Sampler.probs`).

Speculative sampling (Leviathan et al. 2023; Chen et al. 2023) keeps the output distribution exactly the target's
whatever the drafts are: a token drafted from q is accepted with probability min(1, p/q); on rejection the next
token is drawn from normalise(max(0, p - q)) (`accept_chain` with the drafts' q, as AdaDecode's sampled early tokens
have). A deterministic draft (prompt lookup, a greedy draft) has a point mass
q = δ(d): d is accepted with probability p(d), else the token is drawn from p with d removed. Several deterministic
candidates for one position (the siblings of a tree) are tried in turn, each against p with the earlier rejected
ones removed (SpecInfer's multi-step rejection sampling); whichever sibling or residual token comes out, its
probability is exactly p's.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from harness.core.errors import SettingError


@dataclass(frozen=True)
class Sampling:
    """Run-wide sampling settings; `temperature` 0 is greedy decoding (top-p, top-k and seed are then unused)."""
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise SettingError("temperature", f"must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SettingError("top_p", f"must lie in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise SettingError("top_k", f"must be 0 (no cut) or more, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict[str, Any]:
        """For meta.json: `{"greedy": true}` alone under greedy decoding."""
        if self.greedy:
            return {"greedy": True}
        return {"greedy": False, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "seed": self.seed}

    def seed_for(self, *key: Any) -> int:
        """A generator seed from the run's seed and `key` (e.g. task and sample id), so that a sample's draws do
        not depend on which samples ran before it."""
        digest = hashlib.sha256("/".join(map(str, (self.seed, *key))).encode()).digest()
        return int.from_bytes(digest[:8], "little")

    def sampler(self, *key: Any) -> "Sampler | None":
        """The sampler for the generation `key` names; None under greedy decoding."""
        return None if self.greedy else Sampler(self, self.seed_for(*key))


def warp(logits: torch.Tensor, settings: Sampling) -> torch.Tensor:
    """The target distribution of each row of `logits` [..., vocab], in float32: temperature, top-k, top-p."""
    scores = logits.float() / settings.temperature
    if 0 < settings.top_k < scores.shape[-1]:
        kth = scores.topk(settings.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if settings.top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more likely tokens
        drop = (before >= settings.top_p).scatter(-1, order, before >= settings.top_p)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


class Sampler:
    """Draws tokens for one generation from the target distribution, with its own seeded generator."""

    def __init__(self, settings: Sampling, seed: int) -> None:
        self.settings = settings
        self.generator = torch.Generator().manual_seed(seed)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return warp(logits, self.settings)

    def uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def draw(self, probs: torch.Tensor) -> int:
        """A token from the (unnormalised, non-negative) weights `probs` [vocab], by inverse CDF: the generator
        lives on the CPU whatever the device. `right=True` never returns a zero-weight token."""
        cdf = probs.double().cumsum(dim=-1)
        value = torch.tensor(self.uniform(), dtype=cdf.dtype, device=cdf.device) * cdf[-1]
        return min(int(torch.searchsorted(cdf, value.reshape(1), right=True)), probs.shape[-1] - 1)

    def sample(self, logits: torch.Tensor) -> int:
        """A token from the target distribution of the last row of `logits`."""
        return self.draw(self.probs(logits[-1]))

    def choose_among(self, candidates: Sequence[int], probs: torch.Tensor) -> tuple[int, int | None]:
        """Multi-step rejection sampling of deterministic `candidates` for one position against the target
        `probs` [vocab]: (the token, the index of the accepted candidate or None when all were rejected and the
        token was drawn from the residual)."""
        residual = probs.double().clone()
        for index, token in enumerate(candidates):
            mass = float(residual.sum())
            chance = float(residual[token]) / mass if mass > 0 else 0.0
            if self.uniform() < chance:
                return token, index
            residual[token] = 0.0
        return self.draw(residual), None

    def accept_chain(self, drafted: list[int], logits: torch.Tensor,
                     draft_probs: Sequence[torch.Tensor | None] | None = None) -> list[int]:
        """Speculative sampling of a drafted chain against verify `logits` [len(drafted) + 1, vocab]: the accepted
        drafted prefix plus one token drawn by the verifier (from the residual at a rejection, else the bonus after
        the last draft). `draft_probs[j]`: the distribution q [vocab] draft j was drawn from, or None (the default
        for all) for a deterministic draft (a point mass)."""
        probs = self.probs(logits)
        for j, token in enumerate(drafted):
            q = None if draft_probs is None else draft_probs[j]
            if q is None:
                chosen, index = self.choose_among([token], probs[j])
                if index is None:
                    return drafted[:j] + [chosen]
                continue
            p_token, q_token = float(probs[j, token]), float(q[token])
            if self.uniform() >= min(1.0, p_token / q_token):
                return drafted[:j] + [self.draw((probs[j].double() - q.double()).clamp(min=0))]
        return drafted + [self.draw(probs[len(drafted)])]
