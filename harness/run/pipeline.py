"""A whole run, from settings to summary: check everything that can be checked before the model loads, load it,
train missing heads, record the run's conditions in `meta.json`, run the benchmark loop, print the summary."""
from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

import decoders  # noqa: F401  (registers the decoders)
import tasks  # noqa: F401  (registers the tasks)
from harness.core.decoding import CACHE_HEADROOM, DECODERS, check_settings
from harness.core.errors import HarnessError, SettingError
from harness.core.loading import load_runner, resolve_device
from harness.core.model_runner import ModelRunner
from harness.core.sampling import Sampling
from harness.run.benchmark import BenchConfig, run_benchmark
from harness.run.distributed import World
from harness.run.meta import command_line, device_name, environment, write_meta
from harness.run.meta_file import read_meta
from harness.run.recommended import resolve_settings
from harness.run.run_lock import claim, release
from harness.run.training import prepare_heads
from harness.schema import RESULTS_FILE, base_decoder, decoder_order
from reports.run_files import load_run
from reports.summary import format_summary
from tasks.base import Sample, Task, build_task, parse_task_list
from tasks import sandbox

SEED = 0


@dataclass(frozen=True)
class RunOptions:
    """What a run is asked to do; the fields are named as the command line's options (`--max-new-tokens`:
    `max_new_tokens`), so the CLI fills them from its parsed arguments."""
    tasks: str = "humaneval"
    limit: int | None = None
    max_new_tokens: int | None = None
    model: str = "smollm2"
    dtype: str = "auto"
    device: str = "auto"
    runner: str = "fast"
    data: str | None = None
    train_rows: int | None = None
    out: str | None = None
    warmup: int = 1
    no_telemetry: bool = False
    no_train: bool = False
    distribution_draws: int = 200
    batch_size: int = 1
    refill: bool = False


def run_decoders(options: RunOptions, sampling: Sampling, decoder_names: list[str], settings: dict[str, dict],
                 extra_meta: dict) -> tuple[int, Path | None]:
    """Runs (or resumes) the decoders beside vanilla into the run folder and prints the summary: (exit code, folder).
    Under torchrun, ranks other than 0 get no folder: rank 0 alone merges, summarizes and reports.

    `decoder_names` may be sweep variants (`DECODER@SETTINGS`), `settings` is keyed by the same names."""
    settings = {name: check_settings(DECODERS.get(base_decoder(name)), name, values)
                for name, values in settings.items()}  # a typo or a bad value fails before the model loads
    if options.batch_size < 1:
        raise SettingError("batch_size", f"must be 1 or more (the sequences decoded together), not {options.batch_size}")
    if options.refill and options.batch_size == 1:
        raise SettingError("refill", "needs a batch (--batch-size 2 or more): at batch 1 there is no place to refill")
    world = World.from_env()  # rank 0 of 1, or this process's rank under torchrun
    if world.rank == 0 and options.out:
        check_out(Path(options.out))
    device = world.device(resolve_device(options.device))  # a bad --device fails before any data is read
    chosen_tasks = [build_task(spec, options.data, options.train_rows) for spec in parse_task_list(options.tasks)]
    splits = {}
    for task in chosen_tasks:
        task.samples(options.limit)  # a missing data file or an unreachable hub fails before the model loads
        check_scored_rows(task)
        splits[task.name] = task.split_info()  # so does any other file it reads (HumanEval: MBPP's rows)
        if world.rank == 0:
            print(task.split_line(), file=sys.stderr)
    isolated = code_isolation(chosen_tasks)
    torch.manual_seed(SEED)
    runner = load_runner(options.model, options.dtype, str(device), max_context=lambda tokenizer: longest_sequence(
        chosen_tasks, tokenizer, options.limit, options.max_new_tokens), runner=options.runner)
    check_context(runner, chosen_tasks, options.limit, options.max_new_tokens)
    names = decoder_order(decoder_names)
    task_names = [t.name for t in chosen_tasks]
    explicit = {n: settings.get(n, {}) for n in names}
    refuse = ("--no-train: leave it out to train them now" if options.no_train else
              "under torchrun: train them first in one process" if world.distributed else None)
    trained = prepare_heads(runner, explicit, task_names, options.data, refuse)
    settings_used = resolve_settings(runner.name, explicit, task_names)
    task_settings = {task: {n: used["settings"] for n, used in by_name.items()}
                     for task, by_name in settings_used.items()}
    for task, by_name in task_settings.items():  # a value out of range fails before anything is written
        for name, values in by_name.items():
            DECODERS.get(base_decoder(name))(runner, task=task, **values)
    world.start(device)
    out = None
    try:
        out = Path(world.on_rank0(lambda: options.out or str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))))
        out.mkdir(parents=True, exist_ok=True)
        world.on_rank0(lambda: claim(out))  # one writer per run folder: a second is refused before it writes
        meta = {**environment(runner), "world_size": world.world_size,
                "device_names": world.gather(device_name(device)), "max_new_tokens": options.max_new_tokens,
                "limit": options.limit, "split": "test", "seed": SEED, "sampling": sampling.as_dict(),
                "warmup": options.warmup, "batch_size": options.batch_size, "refill": options.refill,
                "telemetry": not options.no_telemetry, "decoders": names,
                # per decoder: whether its output equals vanilla's bit for bit by construction on this runner
                "bit_exact": {n: runner.exact_chunks and DECODERS.get(base_decoder(n)).exact_on_runner for n in names},
                "decoder_settings": explicit, "settings_used": settings_used,
                "tasks": splits, "command_lines": [command_line()],
                **({"trained_heads": trained} if trained else {}), **isolated, **extra_meta}
        world.on_rank0(lambda: write_meta(out, meta))
        config = BenchConfig(out_dir=out, limit=options.limit, max_new_tokens=options.max_new_tokens,
                             warmup=options.warmup, telemetry=not options.no_telemetry, decoder_settings=settings,
                             world=world, sampling=sampling, distribution_draws=options.distribution_draws,
                             task_settings=task_settings, batch_size=options.batch_size, refill=options.refill,
                             conditions={
                                 "telemetry": not options.no_telemetry, "warmup": options.warmup,
                                 "commit": meta["git_commit"], "launch": uuid.uuid4().hex[:12]})
        try:
            rows = run_benchmark(runner, decoder_names, chosen_tasks, config)
        except KeyboardInterrupt:
            print(f"interrupted: the rows written so far are in {out / world.results_file}; rerun the same command "
                  f"to resume", file=sys.stderr)
            return 130, out
    finally:
        world.stop()
        release(out)
    if rows is None:  # ranks other than 0: rank 0 merged, summarizes and reports
        return 0, None
    print(f"results: {out / RESULTS_FILE}")
    run = load_run(out)
    rows_of_run = run.rows[run.rows["task"].isin(task_names) & run.rows["decoder"].isin(names)]
    print(format_summary(rows_of_run, run.meta, run.distribution))
    if trained:
        print("trained heads this run (cached for later runs): " + "; ".join(
            f"{t['kind']} for {t['task']} in {t['seconds'] / 60:.1f} min" for t in trained) +
            f"; {sum(t['seconds'] for t in trained) / 60:.1f} min in all")
    return failed_decoders(rows_of_run), out


def failed_decoders(rows) -> int:
    """1 (and one line each) when a decoder has no successful sample on a task, else 0: CI must notice."""
    code = 0
    for (task, decoder), group in rows.groupby(["task", "decoder"]):
        errors = group["error"].dropna() if "error" in group else group.iloc[:0]
        if len(errors) == len(group):
            print(f"error: every one of {decoder}'s {len(group)} samples on {task} failed (first: {errors.iloc[0]}); "
                  f"exit code 1", file=sys.stderr)
            code = 1
    return code


def check_scored_rows(task: Task) -> None:
    """A task must have a row to score: an empty source, or one of training rows only, is refused."""
    total, where = len(task.rows()), task.local_path() or task.source
    if not total:
        raise HarnessError(f"{task.name}: {where} holds no rows; add the task's rows to it or pass another --data")
    if not task.split_counts()[1]:
        raise HarnessError(f"{task.name}: all {total} rows of {where} are reserved for training heads (the first "
                           f"{task.train_rows}), none is scored; pass --train-rows N below {total} (e.g. --train-rows 0)")


def check_out(out: Path) -> None:
    """Before the model loads: --out must be a folder no other run is writing, with a readable meta.json."""
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file, not a run folder; name a folder (new or a run's, to resume it)")
    if out.is_dir():
        read_meta(out)
        claim(out)
        release(out)


def code_isolation(chosen_tasks: list[Task]) -> dict:
    """`{"code_isolation": ...}` for meta.json when a task scores generated code; a weaker one is said at once."""
    if not any(task.runs_code for task in chosen_tasks):
        return {}
    found = sandbox.isolation()
    if found.weaker:
        print(f"warning: {found.describe()}; apt-get install -y bubblewrap for the full sandbox "
              f"(python run.py doctor)", file=sys.stderr)
    return {"code_isolation": found.as_dict()}


def prompt_lengths(chosen_tasks: list[Task], tokenizer, limit: int | None) -> list[tuple[int, Task, Sample]]:
    """Every sample of the run with its task and its prompt's length in tokens."""
    return [(len(task.prompt_ids(sample, tokenizer)), task, sample)
            for task in chosen_tasks for sample in task.samples(limit)]


def longest_sequence(chosen_tasks: list[Task], tokenizer, limit: int | None, max_new_tokens: int | None) -> int:
    """The most positions any sample of the run reaches: its prompt plus the generation budget and the cache's
    headroom for drafts."""
    return max(length + (max_new_tokens or task.max_new_tokens) + CACHE_HEADROOM
               for length, task, _ in prompt_lengths(chosen_tasks, tokenizer, limit))


def check_context(runner: ModelRunner, chosen_tasks: list[Task], limit: int | None, max_new_tokens: int | None) -> None:
    """Before any generation: every sample's prompt, its generation budget and the drafts' headroom fit in the
    model's context (`max_position_embeddings`); else one line naming the budget that fits, or the prompt too long."""
    context = getattr(runner.config, "max_position_embeddings", None)
    needed = longest_sequence(chosen_tasks, runner.tokenizer, limit, max_new_tokens)
    if context is None or needed <= context:
        return
    prompt, _, sample = max(prompt_lengths(chosen_tasks, runner.tokenizer, limit), key=lambda p: p[0])
    room = context - prompt - CACHE_HEADROOM
    fix = (f"pass --max-new-tokens {room} or less" if room >= 1 else
           f"the prompt of {sample.id} alone takes {prompt} of the {context} positions: use shorter prompts (fix or "
           f"drop that row of --data, or a --limit that stops before it)")
    raise HarnessError(f"this run needs up to {needed} positions (prompt + generation budget + {CACHE_HEADROOM} for "
                       f"drafts), more than {runner.name}'s context of {context} positions (max_position_embeddings); "
                       f"{fix}")
