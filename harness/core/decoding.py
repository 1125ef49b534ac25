"""The decoder plugin interface.

A decoder is built once for a model (`Decoder(runner, **settings)`), then `generate`s from prompt token ids until
`max_new_tokens` or a stop, returning the new token ids and its own statistics. Register one with
`@DECODERS.register("name")`. Under greedy decoding every decoder must return exactly vanilla's tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from harness.core.heads import HeadsNeed
from harness.core.kv_cache import LayeredKVCache
from harness.core.model_runner import ModelRunner
from harness.core.registry import Registry

# Slots a cache keeps beyond prompt + max_new_tokens, for drafts and candidate trees that are rolled back.
CACHE_HEADROOM = 128


@dataclass
class StopCondition:
    """When generation ends: `max_new_tokens`, an end-of-sequence id, or a stop string in the decoded text.

    The stopping token is kept (as `model.generate` does). Every decoder cuts its output through the same
    condition, so stopping can never break parity.
    """
    max_new_tokens: int
    eos_token_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()
    tokenizer: Any = None

    def cut(self, tokens: list[int]) -> tuple[list[int], bool]:
        """Returns (tokens up to and including the first stop, whether generation is finished)."""
        for i, token in enumerate(tokens[: self.max_new_tokens]):
            if token in self.eos_token_ids:
                return tokens[: i + 1], True
        tokens = tokens[: self.max_new_tokens]
        if self.stop_strings and self.tokenizer is not None:
            end = self._stop_string_end(tokens)
            if end is not None:
                return tokens[:end], True
        return tokens, len(tokens) >= self.max_new_tokens

    def _stop_string_end(self, tokens: list[int]) -> int | None:
        if not any(s in self.tokenizer.decode(tokens) for s in self.stop_strings):
            return None
        for n in range(1, len(tokens) + 1):  # the shortest prefix that already contains a stop string
            if any(s in self.tokenizer.decode(tokens[:n]) for s in self.stop_strings):
                return n
        return None


class TokenSink:
    """Collects a decoder's accepted tokens, applies the stop condition and signals the first token."""

    def __init__(self, stop: StopCondition, on_first_token: Callable[[], None] | None = None) -> None:
        self.stop = stop
        self.tokens: list[int] = []
        self.done = stop.max_new_tokens <= 0
        self._on_first_token = on_first_token

    def add(self, new_tokens: list[int]) -> bool:
        """Appends tokens (already verified); returns True once generation is finished."""
        if self._on_first_token is not None and new_tokens:
            self._on_first_token()
            self._on_first_token = None
        self.tokens, self.done = self.stop.cut(self.tokens + list(new_tokens))
        return self.done


@dataclass
class Generation:
    tokens: list[int]
    stats: dict[str, Any] = field(default_factory=dict)


class Decoder:
    """Base class: subclasses implement `_generate` with the runner's primitives."""

    name: ClassVar[str]

    def __init__(self, runner: ModelRunner, task: str | None = None, **settings: Any) -> None:
        """`task` names the task the decoder will serve (decoders with trained heads load the heads for it)."""
        self.runner = runner
        self.task = task
        self.settings = settings

    @classmethod
    def heads_needed(cls, model_name: str, task: str | None, settings: dict[str, Any]) -> HeadsNeed | None:
        """The trained heads this decoder, built with `settings` for `task` on the model `model_name`, would load (None: it needs none), so the
        runner can train missing ones before building it. Decoders with heads override this."""
        return None

    def generate(self, prompt_ids: list[int], stop: StopCondition,
                 on_first_token: Callable[[], None] | None = None) -> Generation:
        with torch.inference_mode():
            return self._generate(list(prompt_ids), stop, on_first_token)

    def _generate(self, prompt_ids: list[int], stop: StopCondition,
                  on_first_token: Callable[[], None] | None) -> Generation:
        raise NotImplementedError

    def new_cache(self, prompt_ids: list[int], stop: StopCondition) -> LayeredKVCache:
        return self.runner.new_cache(len(prompt_ids) + stop.max_new_tokens + CACHE_HEADROOM)


DECODERS: Registry[type[Decoder]] = Registry("decoder")


def greedy(logits: torch.Tensor) -> list[int]:
    """Argmax token per row of logits [q, vocab]."""
    return logits.argmax(dim=-1).tolist()


def accepted_prefix_length(drafted: list[int], verified: list[int]) -> int:
    """How many drafted tokens the verifier's greedy tokens confirm, in order, before the first mismatch."""
    n = 0
    while n < len(drafted) and n < len(verified) and drafted[n] == verified[n]:
        n += 1
    return n
