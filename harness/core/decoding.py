"""The decoder plugin interface.

A decoder is built once for a model (`Decoder(runner, **settings)`), then `generate`s from prompt token ids until
`max_new_tokens` or a stop, returning the new token ids and its own statistics. Register one with
`@DECODERS.register("name")`. Under greedy decoding every decoder must return exactly vanilla's tokens. A decoder
that sets `samples = True` also takes a `Sampler` (`harness.core.sampling`) and must then draw its output from
exactly vanilla's distribution; the others refuse one.

A decoder declares its settings as typed keyword parameters of its `__init__` (after `runner` and `task`, no
`**settings`): `check_settings` reads them from there, so `--set` and `model_args` refuse a typo or a mistyped value
in one line, before the model loads.
"""
from __future__ import annotations

import importlib.util
import inspect
import re
import time
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from harness.core.batching import Batch, SequenceJob, SequenceResult
from harness.core.errors import HarnessError, SettingError
from harness.core.heads import HeadsNeed
from harness.core.kv_cache import LayeredKVCache
from harness.core.model_runner import ModelRunner
from harness.core.registry import Registry
from harness.core.sampling import Sampler

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

    def cut(self, tokens: list[int], checked: int = 0) -> tuple[list[int], bool]:
        """Returns (tokens up to and including the earliest stop, whether generation is finished).

        The earliest stop of any kind wins: a stop string completed before an end-of-sequence token in the same
        chunk ends generation there, as it does for a decoder that adds one token at a time. `checked`: how many
        leading tokens are already known to hold no stop (they are not searched again).
        """
        tokens = tokens[: self.max_new_tokens]
        end = next((i + 1 for i in range(checked, len(tokens)) if tokens[i] in self.eos_token_ids), None)
        if self.stop_strings and self.tokenizer is not None:
            string_end = self._stop_string_end(tokens[:end] if end else tokens, checked)
            end = string_end if string_end is not None else end
        if end is not None:
            return tokens[:end], True
        return tokens, len(tokens) >= self.max_new_tokens

    def _stop_string_end(self, tokens: list[int], checked: int) -> int | None:
        """The shortest prefix of `tokens` (longer than `checked`) whose text holds a stop string, or None.

        Only the text that can hold a new stop is decoded: the new tokens and, before them, as many tokens as the
        longest stop string has characters (plus two for tokens whose bytes merge across a boundary), so each call
        costs the new tokens, not the whole output.
        """
        if checked >= len(tokens):
            return None
        start = max(0, checked - max(map(len, self.stop_strings)) - 2)
        if not self._holds_stop(tokens[start:]):
            return None
        for n in range(max(checked, start) + 1, len(tokens) + 1):
            if self._holds_stop(tokens[start:n]):
                return n
        return None

    def _holds_stop(self, tokens: list[int]) -> bool:
        text = self.tokenizer.decode(tokens)
        return any(s in text for s in self.stop_strings)


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
        self.tokens, self.done = self.stop.cut(self.tokens + list(new_tokens), checked=len(self.tokens))
        return self.done


@dataclass
class Generation:
    tokens: list[int]
    stats: dict[str, Any] = field(default_factory=dict)


class Decoder(ABC):
    """Base class: subclasses implement `_generate` with the runner's primitives.

    Optional abilities are declared here and overridden where a decoder has them: `heads_needed` (the trained
    heads it loads), `trains_heads` with `default_recipe` and `train_heads` (it can train them), `measured_settings`
    (its best measured settings per model, the default where its heads file stores none)."""

    name: ClassVar[str]
    # Whether, on the runner's batch-invariant path (`ModelRunner.exact_chunks`), this decoder computes bit for bit
    # what vanilla computes. Causal chunks are exact there; tree verification is not (a node's ancestors sit at other
    # cache slots than in left-to-right decoding, so attention's reductions add the same terms in other lanes), nor
    # is a decoder that computes outside the runner. Parity classification allows those numerical near-ties.
    exact_on_runner: ClassVar[bool] = True
    samples: ClassVar[bool] = False  # True for decoders that accept a sampler (lossless sampling)
    trains_heads: ClassVar[bool] = False  # True for decoders with `default_recipe` and `train_heads`
    needs_package: ClassVar[str | None] = None  # an optional package it runs on (a peer's own engine)
    # model name → {"settings": {...}, "source": where they were measured}
    measured_settings: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, runner: ModelRunner, task: str | None = None) -> None:
        """`task` names the task the decoder will serve (decoders with trained heads load the heads for it); a
        decoder's settings are the typed keyword parameters of its own `__init__` (`declared_settings`)."""
        self.runner = runner
        self.task = task
        self.sampler: Sampler | None = None  # set by each `generate`

    @classmethod
    def check_ranges(cls, settings: dict[str, Any]) -> None:
        """Refuses, in one line, a value out of range that needs no model to see (`settings`: every declared
        setting, defaults filled in). `check_settings` calls it before the model loads, and `__init__` with the
        values the decoder is built with; decoders whose settings have such ranges override it."""

    @classmethod
    def heads_needed(cls, model_name: str, task: str | None, settings: dict[str, Any]) -> HeadsNeed | None:
        """The trained heads this decoder, built with `settings` for `task` on the model `model_name`, would load (None: it needs none), so the
        runner can train missing ones before building it. Decoders with heads override this."""
        return None

    def generate(self, prompt_ids: list[int], stop: StopCondition,
                 on_first_token: Callable[[], None] | None = None, sampler: Sampler | None = None) -> Generation:
        """Greedy decoding, or sampling from `sampler`'s target distribution (decoders with `samples` only)."""
        if sampler is not None and not self.samples:
            raise HarnessError(f"{self.name} decodes greedily only; use temperature 0 (the default) for it")
        self.sampler = sampler
        with torch.inference_mode():
            return self._generate(list(prompt_ids), stop, on_first_token)

    def generate_batch(self, jobs: list[SequenceJob], size: int, refill: bool = False) -> list[SequenceResult]:
        """Decodes the jobs `size` sequences at a time, each pass over the weights shared by the batch
        (`harness.core.batching`): every sequence gets the tokens `generate` gives it alone (bit for bit on the
        batch-invariant path). `refill`: a finished sequence's place goes to the next job at once."""
        return Batch(self, size, refill).decode(jobs)

    def pick(self, logits: torch.Tensor) -> list[int]:
        """The next token from the last row of `logits`: its argmax, or a draw from the target distribution."""
        return greedy(logits[-1:]) if self.sampler is None else [self.sampler.sample(logits)]

    @classmethod
    def default_recipe(cls, runner: ModelRunner) -> dict[str, Any]:
        """The settings `train_heads` trains with by default, `prompts` among them (decoders that train heads)."""
        raise NotImplementedError(f"{cls.name} trains no heads")

    @classmethod
    def train_heads(cls, runner: ModelRunner, task_name: str, prompt_ids_list: list[list[int]],
                    **settings: Any) -> Path:
        """Trains the decoder's heads for `task_name` on the training prompts; returns the saved file."""
        raise NotImplementedError(f"{cls.name} trains no heads")

    @abstractmethod
    def _generate(self, prompt_ids: list[int], stop: StopCondition,
                  on_first_token: Callable[[], None] | None) -> Generation:
        """Decodes one prompt with the runner's primitives (under `inference_mode`, `self.sampler` set)."""

    def new_cache(self, prompt_ids: list[int], stop: StopCondition) -> LayeredKVCache:
        return self.runner.new_cache(len(prompt_ids) + stop.max_new_tokens + CACHE_HEADROOM)


DECODERS: Registry[type[Decoder]] = Registry("decoder")

_NOT_SETTINGS = ("self", "runner", "task")


def declared_defaults(decoder: type[Decoder]) -> dict[str, Any]:
    """The default value of each of a decoder's declared settings that has one."""
    return {name: p.default for name, p in inspect.signature(decoder.__init__).parameters.items()
            if name in declared_settings(decoder) and p.default is not p.empty}


def declared_settings(decoder: type[Decoder]) -> dict[str, Any]:
    """A decoder's settings and their types: the keyword parameters of its `__init__` after `runner` and `task`."""
    hints = typing.get_type_hints(decoder.__init__)
    return {name: hints.get(name, Any) for name, p in inspect.signature(decoder.__init__).parameters.items()
            if name not in _NOT_SETTINGS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


RUN_WIDE_SAMPLING = ("temperature", "top_p", "top_k", "seed")


def check_settings(decoder: type[Decoder], name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings converted to their declared types; an unknown key, a value of the wrong type or one out of the
    range the decoder checks without a model (`Decoder.check_ranges`) is a one-line HarnessError, the first two
    naming the decoder's settings and their types (so a typo fails before the model loads)."""
    if decoder.needs_package and importlib.util.find_spec(decoder.needs_package) is None:
        raise HarnessError(f"{name} needs the {decoder.needs_package} package, which is not installed: "
                           f"pip install {decoder.needs_package}")
    declared = declared_settings(decoder)
    listing = ", ".join(f"{key} ({type_name(kind)})" for key, kind in declared.items()) or "none"
    checked = {}
    for key, value in settings.items():
        if key in RUN_WIDE_SAMPLING and key not in declared:
            raise SettingError(key, f"is run-wide, not a setting of {name}: each decoder samples vanilla's "
                               "distribution, the one its speed-up and distribution check are measured against")
        if key not in declared:
            raise HarnessError(f"{name} has no setting {key!r}; its settings: {listing}")
        try:
            checked[key] = convert_setting(declared[key], value)
        except (TypeError, ValueError):
            raise HarnessError(f"{name} setting {key}={value!r} is not {type_name(declared[key])}; "
                               f"its settings: {listing}") from None
    decoder.check_ranges({**declared_defaults(decoder), **checked})
    return checked


def type_name(kind: Any) -> str:
    """`int`, `list[int] | None`, ... as a user reads them."""
    if isinstance(kind, type) and not typing.get_args(kind):
        return kind.__name__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(kind)).replace("NoneType", "None")


def convert_setting(kind: Any, value: Any) -> Any:
    """`value` as type `kind` (ints pass as floats, "24+28" or 24 as list[int]); TypeError when it is not one."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any or kind is inspect.Parameter.empty:
        return value
    if origin in (typing.Union, types.UnionType):
        for member in args:
            try:
                return convert_setting(member, value)
            except (TypeError, ValueError):
                continue
        raise TypeError(kind)
    if kind is type(None):
        if value is None:
            return None
        raise TypeError(kind)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if origin is list:
        if isinstance(value, str):
            value = [part for part in re.split(r"[+, ]", value) if part]
        elif isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError(kind)
        return [convert_setting(args[0], int(v) if args[0] is int and isinstance(v, str) else v) for v in value]
    if origin is dict and isinstance(value, dict):
        return value
    if isinstance(kind, type) and kind not in (int, float) and isinstance(value, kind):
        return value
    raise TypeError(kind)


def greedy(logits: torch.Tensor) -> list[int]:
    """Argmax token per row of logits [q, vocab]."""
    return logits.argmax(dim=-1).tolist()


def accepted_prefix_length(drafted: list[int], verified: list[int]) -> int:
    """How many drafted tokens the verifier's greedy tokens confirm, in order, before the first mismatch."""
    n = 0
    while n < len(drafted) and n < len(verified) and drafted[n] == verified[n]:
        n += 1
    return n


def whole_batches(decoder: Decoder, jobs: list[SequenceJob], size: int, refill: bool,
                  generate_many: Callable[[list[SequenceJob]], list[list[int]]]) -> list[SequenceResult]:
    """`Decoder.generate_batch` for a peer that decodes a whole batch in one library call (`generate_many`: each
    job's new tokens, uncut): static batches of `size` jobs (the library admits no sequence mid-batch, so `refill`
    does not apply), every sequence taking its batch's time, the batch sampling from its first job's sampler. An
    exception fails every sequence of its batch."""
    results = []
    for batch, start in enumerate(range(0, len(jobs), size)):
        part = jobs[start:start + size]
        began = time.perf_counter()
        try:
            if part[0].sampler is not None and not decoder.samples:
                raise HarnessError(f"{decoder.name} decodes greedily only")
            decoder.sampler = part[0].sampler
            with torch.inference_mode():
                outputs, failure = generate_many(part), None
        except Exception as exc:  # every sequence of the batch failed with it
            outputs, failure = [None] * len(part), exc
        finished = time.perf_counter() - began
        for job, tokens in zip(part, outputs):
            result = SequenceResult(error=failure, batch=batch, size=size, finished_s=finished)
            if failure is None:
                sink = TokenSink(job.stop)
                sink.add(tokens)
                result.generation = Generation(sink.tokens, {"refill": False} if refill else {})
            results.append(result)
    return results
