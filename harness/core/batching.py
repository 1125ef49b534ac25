"""Several sequences decoded at once by one decoder, sharing every pass over the weights, the decoder unchanged.

Each sequence runs its own shallow copy of the decoder (its own cache, sampler and per-sequence state) in a thread
of its own, against a `SequenceView` of the runner. The view's `run_layers` and `logits` compute nothing: they
hand the call to the `Batch` and wait. Once every live sequence waits, the batch runs all waiting `run_layers`
calls as one `ModelRunner.run_layers_batch` (each layer's linears once over the rows of every sequence that reaches
it, attention per sequence over its own cache) and all waiting `logits` calls as one lm-head pass, then wakes them.
So sequences that accepted different numbers of drafts, exited at different layers or skip other sub-layers still
share the layers they have in common, and a decoder's Python (drafting, acceptance, stopping) is the one it runs
alone. A round starts only when every live sequence waits, so which calls share a round never depends on thread
timing; on the batch-invariant path each sequence's tokens are bit for bit those it decodes alone.

A sequence that finishes leaves the batch; with `refill` the next prompt takes its place at once, otherwise a new
batch starts when the whole batch is done. Times are host clocks (`perf_counter`) read as each sequence starts,
emits its first token and finishes; a batch on a GPU ends with a synchronize.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from harness.core.errors import HarnessError
from harness.core.layer_calls import LayerCall


@dataclass
class SequenceJob:
    """One prompt of a batch: what `Decoder.generate` takes."""
    prompt_ids: list[int]
    stop: Any  # a StopCondition
    sampler: Any = None  # a Sampler, or None for greedy decoding


@dataclass
class SequenceResult:
    """A sequence's generation (or the exception it raised) and its host times, in seconds from the batch start."""
    generation: Any = None
    error: BaseException | None = None
    batch: int = 0  # which batch (static batches) or refill pass it ran in
    size: int = 1  # how many sequences its batch admitted at most
    started_s: float = 0.0
    first_token_s: float | None = None
    finished_s: float = 0.0


@dataclass
class _Sequence:
    index: int
    job: SequenceJob
    result: SequenceResult
    call: tuple[str, Any] | None = None  # ("layers", LayerCall) or ("logits", hidden) while it waits
    reply: Any = None
    answered: bool = False
    done: bool = False


class SequenceView:
    """What a sequence's decoder sees as its runner: the runner itself, except that `run_layers`, `logits` and
    `forward` go through the batch."""

    def __init__(self, runner, batch: Batch, sequence: _Sequence) -> None:
        self._runner, self._batch, self._sequence = runner, batch, sequence

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def run_layers(self, hidden: torch.Tensor, cache, start: int = 0, end: int | None = None,
                   positions: torch.Tensor | None = None, chunk_mask: torch.Tensor | None = None,
                   skip_attention: frozenset[int] = frozenset(), skip_mlp: frozenset[int] = frozenset()
                   ) -> torch.Tensor:
        end = self._runner.n_layers if end is None else end
        call = LayerCall(hidden, cache, start, end, positions, chunk_mask, frozenset(skip_attention),
                         frozenset(skip_mlp))
        return self._batch.wait_for(self._sequence, ("layers", call))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._batch.wait_for(self._sequence, ("logits", hidden))

    def forward(self, token_ids, cache, last_only: bool = False) -> torch.Tensor:
        hidden = self.run_layers(self.embed(token_ids), cache)
        return self.logits(hidden[:, -1:] if last_only else hidden)


class Batch:
    """Decodes jobs `size` at a time with copies of one decoder (see the module doc)."""

    def __init__(self, decoder, size: int, refill: bool = False) -> None:
        if size < 1:
            raise HarnessError(f"a batch holds at least one sequence, not {size}")
        self.decoder, self.runner, self.size, self.refill = decoder, decoder.runner, size, refill
        self._cond = threading.Condition()

    def decode(self, jobs: list[SequenceJob]) -> list[SequenceResult]:
        """Every job's result, in job order."""
        results = [SequenceResult() for _ in jobs]
        queue = list(range(len(jobs)))
        batch = 0
        while queue:
            admitted = queue[:self.size]
            del queue[:self.size]
            self._run(jobs, results, admitted, queue if self.refill else [], batch)
            batch += 1
        return results

    def _run(self, jobs: list[SequenceJob], results: list[SequenceResult], admitted: list[int],
             waiting: list[int], batch: int) -> None:
        """Decodes the admitted jobs together (and, as they finish, the waiting ones in their place)."""
        start = time.perf_counter()
        live: list[_Sequence] = []

        def admit(index: int) -> None:
            result = results[index]
            result.batch, result.size, result.started_s = batch, self.size, time.perf_counter() - start
            sequence = _Sequence(index, jobs[index], result)
            live.append(sequence)
            threading.Thread(target=self._decode_one, args=(sequence, start), daemon=True).start()

        with self._cond, torch.inference_mode():
            for index in admitted:
                admit(index)
            while live:
                self._cond.wait_for(lambda: all(s.call is not None or s.done for s in live))
                for finished in [s for s in live if s.done]:
                    live.remove(finished)
                    if waiting:
                        admit(waiting.pop(0))
                if any(s.call is None for s in live):
                    continue  # a newly admitted sequence has not asked yet
                if live:
                    self._round(live)
            if self.runner.device.type == "cuda":
                torch.cuda.synchronize(self.runner.device)

    def _round(self, sequences: list[_Sequence]) -> None:
        """Runs every waiting call: the layer calls as one batch, the logits calls as one lm-head pass."""
        layers = [s for s in sequences if s.call[0] == "layers"]
        full = [s for s in layers if not s.call[1].fits()]
        for s in full:  # refused alone, before anything is written, so the others' caches stay whole
            self._answer(s, s.call[1].cache.full_error())
        layers = [s for s in layers if s not in full]
        heads = [s for s in sequences if s.call is not None and s.call[0] == "logits"]
        for group, compute in ((layers, self.runner.run_layers_batch), (heads, self.runner.logits_batch)):
            if not group:
                continue
            try:
                outputs = compute([s.call[1] for s in group])
            except Exception as exc:  # the whole group failed alike: each sequence raises it
                outputs = [exc] * len(group)
            for s, out in zip(group, outputs):
                self._answer(s, out)
        self._cond.notify_all()

    def _answer(self, sequence: _Sequence, reply: Any) -> None:
        sequence.call, sequence.reply, sequence.answered = None, reply, True

    def wait_for(self, sequence: _Sequence, call: tuple[str, Any]) -> Any:
        """Hands a sequence's call to the batch and returns its result once the batch has run it."""
        with self._cond:
            sequence.call, sequence.answered = call, False
            self._cond.notify_all()
            self._cond.wait_for(lambda: sequence.answered)
            reply, sequence.reply = sequence.reply, None
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _decode_one(self, sequence: _Sequence, start: float) -> None:
        # One intra-op thread here: a sequence thread's own ops are small (embeddings, argmax), and a thread team
        # of its own per sequence would spin beside the batch's passes and take their cores.
        torch.set_num_threads(1)
        result, job = sequence.result, sequence.job
        decoder = copy.copy(self.decoder)
        decoder.runner = SequenceView(self.runner, self, sequence)

        def first_token() -> None:
            result.first_token_s = time.perf_counter() - start

        try:
            result.generation = decoder.generate(job.prompt_ids, job.stop, on_first_token=first_token,
                                                 sampler=job.sampler)
        except Exception as exc:  # the sequence's own failure, recorded in its result
            result.error = exc
        finally:
            result.finished_s = time.perf_counter() - start
            with self._cond:
                sequence.done = True
                self._cond.notify_all()
