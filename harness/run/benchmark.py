"""The benchmark loop: every decoder over every task sample, interleaved per sample, one streamed row each.

Vanilla greedy decoding always runs first on each sample (unless its row is already in the run folder): it is the
parity reference for the other decoders, and interleaving (vanilla, method, vanilla, method …) makes slow machine
drift hit all decoders alike. A sweep's points run as variants `DECODER@SETTINGS` (`harness/run/sweep.py`), each with
its own settings, interleaved the same way (vanilla once per sample for all of them). Under sampling (`--temperature`
above 0) every generation draws from a sampler seeded by the run's seed, the task and the sample id (the same seed
for every decoder on a sample), token parity, which needs greedy decoding, is not checked, and each task ends with
the check of every decoder's output distribution that replaces it (`harness/checks/distribution.py`). Decoders are built
once per task (`Cls(runner, task=name, **settings)`); `warmup` generations per decoder and task run first and are not
recorded. An exception in one sample is recorded in that row's `error` and the run goes on. Under torchrun every
rank runs its own shard of each task's samples (`harness/run/distributed.py`).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness.core.batching import SequenceJob
from harness.core.decoding import DECODERS, Decoder, Generation, StopCondition
from harness.core.model_runner import ModelRunner
from harness.core.sampling import Sampler, Sampling
from harness.run.distributed import World, merge_results
from harness.checks.distribution import checked_decoders, record_run_checks
from harness.checks.parity import check
from harness.run.results import Key, ResultStore, result_files
from harness.schema import REFERENCE_DECODER, RESULTS_FILE, base_decoder, decoder_order
from harness.measure.telemetry import MemoryProbe
from harness.measure.timing import GenerationTimer
from tasks.base import Sample, Task


REFILL_GROUP = 4


@dataclass
class BenchConfig:
    out_dir: Path
    limit: int | None = None
    max_new_tokens: int | None = None
    warmup: int = 1
    telemetry: bool = True
    decoder_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # per task, the settings each decoder is built with (explicit ones plus recommendations); wins over the above
    task_settings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    world: World = field(default_factory=World)
    sampling: Sampling = field(default_factory=Sampling)
    distribution_draws: int = 200  # draws of each decoder's distribution check under sampling (0: none)
    batch_size: int = 1  # sequences decoded together (`harness.core.batching`)
    refill: bool = False  # a finished sequence's place goes to the next sample at once

    @property
    def group(self) -> int:
        """Samples each decoder decodes in one call at batch > 1, vanilla first (static batches: one batch; with
        refill: `REFILL_GROUP` batches' worth, so that refilling happens and decoders still alternate)."""
        return self.batch_size * (REFILL_GROUP if self.refill else 1)
    conditions: dict[str, Any] | None = None  # every row's `conditions` (`harness.schema.CONDITIONS`)


class Measurer:
    """Runs one generation under the timer and the memory probe, and turns it into a result row."""

    def __init__(self, runner: ModelRunner, telemetry: bool, sampling: Sampling = Sampling()) -> None:
        self.runner = runner
        self.sampling = sampling
        self.timer = GenerationTimer(runner.device)
        self.probe = MemoryProbe(runner.device, enabled=telemetry)

    def measure(self, name: str, decoder: Decoder, prompt_ids: list[int], stop: StopCondition,
                sampler: Sampler | None, reference: list[int] | None) -> dict[str, Any]:
        """A timed generation's fields of a result row: tokens, text, timing, stats, memory and, under greedy
        decoding with a `reference` (vanilla's tokens), the parity check. The decoder's exceptions pass through."""
        fields: dict[str, Any] = {"memory": None}
        self.probe.start()
        try:
            self.timer.start()
            gen = decoder.generate(prompt_ids, stop, on_first_token=self.timer.first_token, sampler=sampler)
            timing = self.timer.stop()
        finally:
            fields["memory"] = self.probe.stop()
        return fields | self._fields(name, decoder, prompt_ids, gen, timing.ttft_s, timing.total_s, sampler,
                                     reference)

    def _fields(self, name: str, decoder: Decoder, prompt_ids: list[int], gen: Generation, ttft_s: float | None,
                total_s: float, sampler: Sampler | None, reference: list[int] | None) -> dict[str, Any]:
        fields = dict(tokens=gen.tokens, new_tokens=len(gen.tokens), ttft_s=ttft_s,
                      decode_s=None if ttft_s is None else total_s - ttft_s, total_s=total_s,
                      tokens_per_s=len(gen.tokens) / total_s if total_s else None, stats=gen.stats,
                      text=self.runner.tokenizer.decode(gen.tokens, skip_special_tokens=True), parity=None)
        if name != REFERENCE_DECODER and reference is not None and sampler is None:
            fields["parity"] = check(self.runner, decoder.exact_on_runner, prompt_ids, reference, gen.tokens)
        return fields

    def measure_batch(self, name: str, decoder: Decoder, jobs: list[SequenceJob], references: list[list[int] | None],
                      size: int, refill: bool = False) -> tuple[list[dict[str, Any] | Exception], dict[str, Any]]:
        """The jobs decoded `size` at a time: per job, its fields of a result row (timing its own sequence's, from
        its admission to its last token) or the exception it raised; and the `batch` fields its rows share (size,
        sequences, tokens and wall time: the aggregate throughput; the memory the batch used)."""
        self.probe.start()
        try:
            began = time.perf_counter()
            results = decoder.generate_batch(jobs, size, refill)
            wall_s = time.perf_counter() - began
        finally:
            memory = self.probe.stop()
        batch = {"size": size, "refill": refill, "sequences": len(jobs),
                 "tokens": sum(len(r.generation.tokens) for r in results if r.error is None), "wall_s": wall_s}
        fields = []
        for job, result, reference in zip(jobs, results, references):
            if result.error is not None:
                fields.append(result.error)
                continue
            ttft = None if result.first_token_s is None else result.first_token_s - result.started_s
            fields.append({"memory": memory} | self._fields(name, decoder, job.prompt_ids, result.generation, ttft,
                                                            result.finished_s - result.started_s, job.sampler,
                                                            reference))
        return fields, batch

    def batch_rows(self, name: str, decoder: Decoder, task: Task, samples: list[tuple[int, Sample]],
                   prompts: list[list[int]], stop: StopCondition, references: list[list[int] | None],
                   config: BenchConfig, batch_id: int) -> list[dict[str, Any]]:
        """The samples decoded `config.batch_size` at a time (`measure_batch`), one row each."""
        jobs = [SequenceJob(ids, stop, self.sampling.sampler(task.name, sample.id))
                for ids, (_, sample) in zip(prompts, samples)]
        fields, batch = self.measure_batch(name, decoder, jobs, references, config.batch_size, config.refill)
        rows = []
        for (index, sample), ids, measured in zip(samples, prompts, fields):
            row = empty_row(name, task.name, sample.id, index, len(ids)) | {"category": sample.meta.get("category"),
                                                                              "batch": {"id": batch_id, **batch}}
            rows.append(scored(row, task, sample, lambda measured=measured: _raised(measured)))
        return rows

    def row(self, name: str, decoder: Decoder, task: Task, sample: Sample, index: int, prompt_ids: list[int],
            stop: StopCondition, reference: list[int] | None) -> dict[str, Any]:
        row = empty_row(name, task.name, sample.id, index, len(prompt_ids)) | {"category": sample.meta.get("category")}
        return scored(row, task, sample, lambda: self.measure(name, decoder, prompt_ids, stop,
                                                              self.sampling.sampler(task.name, sample.id), reference))


def scored(row: dict[str, Any], task: Task, sample: Sample, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The row with its measured fields and quality score, or the first line of the exception either raised in its
    `error` (the run goes on)."""
    try:
        row.update(measure())
        row["quality"] = task.score(sample, row["text"])
    except Exception as exc:  # recorded in the row; the run goes on
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return row


def _raised(measured: dict[str, Any] | Exception) -> dict[str, Any]:
    if isinstance(measured, Exception):
        raise measured
    return measured


def empty_row(decoder: str, task: str, sample_id: Any, index: int, prompt_tokens: int) -> dict[str, Any]:
    """A result row before its generation: every field present, the measured ones None."""
    return {"decoder": decoder, "task": task, "sample_id": sample_id, "sample_index": index, "category": None,
            "prompt_tokens": prompt_tokens, "tokens": None, "text": None, "new_tokens": None, "ttft_s": None,
            "decode_s": None, "total_s": None, "tokens_per_s": None, "stats": None, "memory": None, "parity": None,
            "quality": None, "error": None, "batch": None, "conditions": None}


class Throughput:
    """Live tokens/s per decoder for the progress bar."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}

    def add(self, row: dict[str, Any]) -> dict[str, str]:
        if row["error"] is None:
            total = self.totals.setdefault(row["decoder"], [0, 0.0])
            total[0] += row["new_tokens"]
            total[1] += row["total_s"]
        return {name: f"{tokens / seconds:.1f} tok/s" for name, (tokens, seconds) in self.totals.items() if seconds}


def run_task(runner: ModelRunner, store: ResultStore, measurer: Measurer, names: list[str], task: Task,
             config: BenchConfig) -> None:
    shard = [(i, s) for i, s in enumerate(task.samples(config.limit)) if config.world.owns(i)]
    pending = [(s, n) for _, s in shard for n in names if not store.has(n, task.name, s.id)]
    checks = not config.sampling.greedy and config.distribution_draws and shard and config.world.rank == 0
    unchecked = [n for n in names if n not in checked_decoders(config.out_dir, task.name)] if checks else []
    if not pending and not unchecked:
        return
    stop = StopCondition(config.max_new_tokens or task.max_new_tokens, frozenset(runner.eos_token_ids),
                         task.stop_strings, runner.tokenizer)
    settings = config.task_settings.get(task.name, config.decoder_settings)
    decoders = {n: DECODERS.get(base_decoder(n))(runner, task=task.name, **settings.get(n, {}))
                for n in dict.fromkeys([n for _, n in pending] + unchecked)}
    if pending:
        first = list(dict.fromkeys(s.id for s, _ in pending))[:config.batch_size]
        warm_up({n: decoders[n] for n in dict.fromkeys(n for _, n in pending)},
                [task.prompt_ids(s, runner.tokenizer) for _, s in shard if s.id in first], stop, config.warmup,
                config.sampling, config.batch_size)
    throughput = Throughput()
    desc = f"{task.name} (rank {config.world.rank})" if config.world.distributed else task.name
    with tqdm(total=len(pending), desc=desc, unit="gen", file=sys.stderr, dynamic_ncols=True) as bar:
        def add(row: dict[str, Any]) -> None:
            store.append(row | {"conditions": config.conditions})
            bar.set_postfix(throughput.add(row), refresh=False)
            bar.update()

        if config.batch_size > 1:
            run_batches(runner, store, measurer, names, task, config, decoders, shard, stop, add)
        else:
            for index, sample in shard:
                prompt_ids = None
                for name in names:
                    if store.has(name, task.name, sample.id):
                        continue
                    prompt_ids = prompt_ids or task.prompt_ids(sample, runner.tokenizer)
                    add(measurer.row(name, decoders[name], task, sample, index, prompt_ids, stop,
                                     store.reference_tokens(task.name, sample.id)))
    if unchecked:  # also on a resumed run whose generations were all done before it was stopped
        _, sample = shard[0]
        record_run_checks(config.out_dir, task.name, str(sample.id), task.prompt_ids(sample, runner.tokenizer),
                          {n: decoders[n] for n in unchecked}, config.sampling, config.distribution_draws)


def run_batches(runner: ModelRunner, store: ResultStore, measurer: Measurer, names: list[str], task: Task,
                config: BenchConfig, decoders: dict[str, Decoder], shard: list[tuple[int, Sample]],
                stop: StopCondition, add: Callable[[dict[str, Any]], None]) -> None:
    """At batch > 1: the shard's samples in fixed groups (`BenchConfig.group`), each decoder in turn decoding the
    group's samples it has no row for yet, vanilla first (its rows are the others' parity references)."""
    for start in range(0, len(shard), config.group):
        group = shard[start:start + config.group]
        for name in names:
            todo = [(index, sample) for index, sample in group if not store.has(name, task.name, sample.id)]
            if not todo:
                continue
            prompts = [task.prompt_ids(sample, runner.tokenizer) for _, sample in todo]
            references = [store.reference_tokens(task.name, sample.id) for _, sample in todo]
            for row in measurer.batch_rows(name, decoders[name], task, todo, prompts, stop, references, config,
                                           start // config.group):
                add(row)


def warm_up(decoders: dict[str, Decoder], prompts: list[list[int]], stop: StopCondition, n: int,
            sampling: Sampling = Sampling(), batch_size: int = 1) -> None:
    """Unrecorded generations (first-call allocations, kernel selection) of the first prompt, or at batch > 1 of a
    batch of the first prompts; a failure shows again in the rows."""
    for name, decoder in decoders.items():
        for i in range(n):
            try:
                if batch_size == 1:
                    decoder.generate(prompts[0], stop, sampler=sampling.sampler("warmup", i))
                    continue
                jobs = [SequenceJob(ids, stop, sampling.sampler("warmup", i)) for ids in prompts]
                failed = next((r.error for r in decoder.generate_batch(jobs, batch_size) if r.error), None)
                if failed is not None:
                    raise failed
            except Exception as exc:
                print(f"note: warm-up of {name} failed ({type(exc).__name__}: {exc})", file=sys.stderr)
                break


def planned_rows(names: list[str], tasks: list[Task], limit: int | None) -> list[Key]:
    """Every (decoder, task, sample) the run must hold, in the order a single process writes them."""
    return [(name, task.name, str(sample.id)) for task in tasks for sample in task.samples(limit) for name in names]


def run_benchmark(runner: ModelRunner, decoder_names: list[str], tasks: list[Task],
                  config: BenchConfig) -> dict[Key, dict[str, Any]] | None:
    """Runs (or resumes) the benchmark into `config.out_dir`; returns all the folder's rows (None on ranks but 0).

    Rank files (this launch's, or a killed launch's) are merged into `results.jsonl` once every rank is done."""
    names = decoder_order(decoder_names)
    store = ResultStore(config.out_dir, config.world.results_file)
    measurer = Measurer(runner, config.telemetry, config.sampling)
    try:
        for task in tasks:
            run_task(runner, store, measurer, names, task, config)
    finally:
        store.close()
    config.world.barrier()
    if config.world.rank != 0:
        return None
    if result_files(config.out_dir) == [config.out_dir / RESULTS_FILE]:
        return store.rows
    return merge_results(config.out_dir, planned_rows(names, tasks, config.limit))
