#!/usr/bin/env python
"""Command line of the harness: the only place that parses arguments.

    python run.py --decoders adadecode,vanilla --tasks xsum,humaneval --limit 20
    python run.py --list
    python run.py doctor
    python run.py sweep --decoder layerskip --grid exit_layer=16,24 --grid speculations=2,4 --tasks xsum --limit 3
    python run.py lm-eval --data ../shared/data --model_args decoder=vanilla --tasks fastdecode_gsm8k --limit 5
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.core.errors import HarnessError
from harness.core.sampling import Sampling


SEED = 0


def add_run_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of a benchmark run shared by `bench` and `sweep`: tasks, samples, model, data, output."""
    p.add_argument("--tasks", default="humaneval",
                   help="comma-separated task names; TASK:SUBSET runs one subset (spec_bench:summarization)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples of each task")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override each task's generation budget")
    p.add_argument("--model", default="smollm2", help="'smollm2' (embedded default), a hub id, a folder or a .gguf")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on a CPU with bf16 hardware, else float32), "
                   "float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data", default=None, help="local data: a folder with <task>/test.jsonl, or a file")
    p.add_argument("--train-rows", type=int, default=None,
                   help="leading rows of each task reserved for training heads, never scored (default: the task's)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<timestamp>); an existing one is resumed")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded generations per decoder and task (default 1)")
    p.add_argument("--no-telemetry", action="store_true", help="do not measure memory (NVML sampler, peaks)")
    p.add_argument("--no-report", action="store_true", help="do not write the report (run.py report RUN_DIR does)")
    p.add_argument("--no-train", action="store_true",
                   help="stop when a decoder's trained heads are missing (default: train them with its default recipe)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature for every decoder (default 0: greedy decoding, checked by token parity)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep the most likely tokens up to this "
                   "mass (default 1: all; used with --temperature)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0: all; used with "
                   "--temperature)")
    p.add_argument("--seed", type=int, default=0,
                   help="sampling seed; each sample draws from its own generator seeded by it, the task and the sample")
    p.add_argument("--distribution-draws", type=int, default=200,
                   help="under sampling, draws of each decoder's distribution check on each task's first sample, the "
                        "verdict that replaces token parity (default 200; 0: no check)")
    return p


def sampling_settings(args: argparse.Namespace, decoder_names: list[str]) -> Sampling:
    """The run's `Sampling`; under sampling, a decoder that decodes greedily only is refused before the model loads."""
    from harness.core.decoding import DECODERS
    from harness.results import base_decoder

    sampling = Sampling(args.temperature, args.top_p, args.top_k, args.seed)
    greedy_only = [n for n in decoder_names if not DECODERS.get(base_decoder(n)).samples]
    if not sampling.greedy and greedy_only:
        samplers = ", ".join(n for n in DECODERS.names() if DECODERS.get(n).samples)
        raise HarnessError(f"{', '.join(greedy_only)} decode{'s' if len(greedy_only) == 1 else ''} greedily only; "
                           f"drop {'it' if len(greedy_only) == 1 else 'them'} from --decoders or use "
                           f"--temperature 0 (decoders that sample: {samplers})")
    return sampling


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description="Benchmark fast decoders against greedy decoding.")
    p.add_argument("--list", action="store_true", help="list decoders and tasks, then exit")
    p.add_argument("--decoders", default="vanilla", help="comma-separated decoder names (vanilla always runs too)")
    p.add_argument("--set", action="append", default=[], metavar="DECODER.KEY=VALUE",
                   help="a decoder setting (repeatable); the value is read as int, float, bool or text")
    return add_run_arguments(p)


def list_plugins() -> None:
    from harness.core.decoding import DECODERS
    from tasks.base import TASKS

    print("decoders:", ", ".join(DECODERS.names()))
    print("tasks:", ", ".join(TASKS.names()))


def parse_value(text: str) -> int | float | bool | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_settings(items: list[str], decoder_names: list[str]) -> dict[str, dict]:
    """`--set adadecode.gamma=0.9` → {"adadecode": {"gamma": 0.9}} (checked against the decoder by `run_decoders`)."""
    settings: dict[str, dict] = {}
    for item in items:
        target, sep, value = item.partition("=")
        decoder, dot, key = target.partition(".")
        if not (sep and dot and decoder and key):
            raise HarnessError(f"--set {item!r} is not DECODER.KEY=VALUE (e.g. --set adadecode.gamma=0.9)")
        if decoder not in decoder_names:
            raise HarnessError(f"--set {item!r} names decoder {decoder!r}, which is not in --decoders "
                               f"{','.join(decoder_names)}")
        settings.setdefault(decoder, {})[key] = parse_value(value)
    return settings


def bench(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    import decoders  # noqa: F401  (registers the decoders)
    from harness.core.decoding import DECODERS

    if args.list:
        list_plugins()
        return 0
    check_counts(args)
    decoder_names = DECODERS.parse_list(args.decoders)
    code, out = run_decoders(args, decoder_names, parse_settings(args.set, decoder_names), {})
    if code in (0, 1) and out is not None and not args.no_report:  # 1: a decoder failed every sample
        from reports.render import write_report

        print(f"report: {write_report(out).html}")
    return code


def check_counts(args: argparse.Namespace) -> None:
    for flag in ("limit", "warmup", "train_rows", "distribution_draws"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise HarnessError(f"--{flag.replace('_', '-')} must be 0 or more, got {getattr(args, flag)}")
    if getattr(args, "data", None) and not Path(args.data).expanduser().exists():
        raise HarnessError(f"--data {args.data} does not exist; pass a data folder (e.g. --data ../shared/data) or a "
                           f"JSON-lines file, or leave --data out")
    if args.limit == 0:
        raise HarnessError("--limit 0 scores no sample; pass --limit 1 or more (leave it out for every sample)")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise HarnessError(f"--max-new-tokens must be 1 or more, got {args.max_new_tokens} "
                           "(leave it out for each task's own budget)")


def run_decoders(args: argparse.Namespace, decoder_names: list[str], settings: dict[str, dict],
                 extra_meta: dict) -> tuple[int, Path | None]:
    """Runs (or resumes) the decoders beside vanilla into the run folder and prints the summary: (exit code, folder).
    Under torchrun, ranks other than 0 get no folder: rank 0 alone merges, summarizes and reports.

    `decoder_names` may be sweep variants (`DECODER@SETTINGS`), `settings` is keyed by the same names."""
    import decoders  # noqa: F401  (registers the decoders)
    import tasks  # noqa: F401  (registers the tasks)
    from harness.benchmark import BenchConfig, decoder_order, run_benchmark
    from harness.core.decoding import DECODERS, check_settings
    from harness.results import base_decoder
    from harness.core.loading import load_runner, resolve_device
    from harness.distributed import World
    from harness.run_lock import claim, release
    from harness.meta import command_line, device_name, environment, write_meta
    from harness.recommended import resolve_settings
    from harness.training import prepare_heads
    from reports.run_files import load_run
    from reports.summary import format_summary
    from tasks.base import build_task, parse_task_list

    settings = {name: check_settings(DECODERS.get(base_decoder(name)), name, values)
                for name, values in settings.items()}  # a typo or a bad value fails before the model loads
    sampling = sampling_settings(args, decoder_names)
    world = World.from_env()  # rank 0 of 1, or this process's rank under torchrun
    if world.rank == 0 and args.out:
        check_out(Path(args.out))
    device = world.device(resolve_device(args.device))  # a bad --device fails before any data is read
    chosen_tasks = [build_task(spec, args.data, args.train_rows) for spec in parse_task_list(args.tasks)]
    for task in chosen_tasks:
        task.samples(args.limit)  # a missing data file or an unreachable hub fails before the model loads
        if not task.split_counts()[1]:
            raise HarnessError(f"{task.name}: all {len(task.rows())} rows of {task.local_path() or task.source} are "
                               f"reserved for training heads (the first {task.train_rows}), none is scored; pass "
                               f"--train-rows N below {len(task.rows())} (e.g. --train-rows 0)")
        if world.rank == 0:
            print(task.split_line(), file=sys.stderr)
    isolated = code_isolation(chosen_tasks)
    torch.manual_seed(SEED)
    runner = load_runner(args.model, args.dtype, str(device), max_context=lambda tokenizer: longest_sequence(
        chosen_tasks, tokenizer, args.limit, args.max_new_tokens))
    names = decoder_order(decoder_names)
    task_names = [t.name for t in chosen_tasks]
    explicit = {n: settings.get(n, {}) for n in names}
    refuse = ("--no-train: leave it out to train them now" if args.no_train else
              "under torchrun: train them first in one process" if world.distributed else None)
    trained = prepare_heads(runner, explicit, task_names, args.data, refuse)
    settings_used = resolve_settings(runner.name, explicit, task_names)
    task_settings = {task: {n: used["settings"] for n, used in by_name.items()}
                     for task, by_name in settings_used.items()}
    for task, by_name in task_settings.items():  # a value out of range fails before anything is written
        for name, values in by_name.items():
            DECODERS.get(base_decoder(name))(runner, task=task, **values)
    world.start(device)
    out = None
    try:
        out = Path(world.on_rank0(lambda: args.out or str(Path("runs") / time.strftime("%Y%m%d-%H%M%S"))))
        out.mkdir(parents=True, exist_ok=True)
        world.on_rank0(lambda: claim(out))  # one writer per run folder: a second is refused before it writes
        meta = {**environment(runner), "world_size": world.world_size,
                "device_names": world.gather(device_name(device)), "max_new_tokens": args.max_new_tokens,
                "limit": args.limit, "split": "test", "seed": SEED, "sampling": sampling.as_dict(),
                "warmup": args.warmup,
                "telemetry": not args.no_telemetry, "decoders": names,
                # per decoder: whether its output equals vanilla's bit for bit by construction on this runner
                "bit_exact": {n: runner.exact_chunks and DECODERS.get(base_decoder(n)).exact_on_runner for n in names},
                "decoder_settings": explicit, "settings_used": settings_used,
                "tasks": {t.name: t.split_info() for t in chosen_tasks}, "command_lines": [command_line()],
                **({"trained_heads": trained} if trained else {}), **isolated, **extra_meta}
        world.on_rank0(lambda: write_meta(out, meta))
        config = BenchConfig(out_dir=out, limit=args.limit, max_new_tokens=args.max_new_tokens, warmup=args.warmup,
                             telemetry=not args.no_telemetry, decoder_settings=settings, world=world, sampling=sampling,
                             distribution_draws=args.distribution_draws, task_settings=task_settings)
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
    print(f"results: {out / 'results.jsonl'}")
    run = load_run(out)
    print(format_summary(run.rows[run.rows["task"].isin(task_names) & run.rows["decoder"].isin(names)], run.meta,
                         run.distribution))
    if trained:
        print("trained heads this run (cached for later runs): " + "; ".join(
            f"{t['kind']} for {t['task']} in {t['seconds'] / 60:.1f} min" for t in trained) +
            f"; {sum(t['seconds'] for t in trained) / 60:.1f} min in all")
    return failed_decoders(run.rows[run.rows["task"].isin(task_names) & run.rows["decoder"].isin(names)]), out


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


def check_out(out: Path) -> None:
    """Before the model loads: --out must be a folder no other run is writing, with a readable meta.json."""
    from harness.meta_file import read_meta
    from harness.run_lock import claim, release

    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out} is a file, not a run folder; name a folder (new or a run's, to resume it)")
    if out.is_dir():
        read_meta(out)
        claim(out)
        release(out)


def code_isolation(chosen_tasks: list) -> dict:
    """`{"code_isolation": ...}` for meta.json when a task scores generated code; a weaker one is said at once."""
    from tasks.sandbox import isolation

    if not any(task.runs_code for task in chosen_tasks):
        return {}
    found = isolation()
    if found.weaker:
        print(f"warning: {found.describe()}; apt-get install -y bubblewrap for the full sandbox "
              f"(python run.py doctor)", file=sys.stderr)
    return {"code_isolation": found.as_dict()}


def longest_sequence(chosen_tasks: list, tokenizer, limit: int | None, max_new_tokens: int | None) -> int:
    """The most positions any sample of the run reaches: its prompt plus the generation budget and the cache's
    headroom for drafts (asked only for a sliding-window model)."""
    from harness.core.decoding import CACHE_HEADROOM

    return max(len(task.prompt_ids(sample, tokenizer)) + (max_new_tokens or task.max_new_tokens) + CACHE_HEADROOM
               for task in chosen_tasks for sample in task.samples(limit))


def parse_grid(items: list[str]) -> dict[str, list]:
    """`["exit_layer=12,16", "speculations=2,3"]` → {"exit_layer": [12, 16], "speculations": [2, 3]}."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        parsed = [parse_value(v.strip()) for v in values.split(",")]
        if not (sep and key.strip() and all(v != "" for v in parsed)):
            raise HarnessError(f"--grid {item!r} is not KEY=VALUE,VALUE,... (e.g. --grid exit_layer=12,16,20)")
        if key.strip() in grid:
            raise HarnessError(f"--grid names {key.strip()!r} twice; give all its values in one --grid")
        if len(set(map(str, parsed))) < len(parsed):
            raise HarnessError(f"--grid {item!r} repeats a value")
        grid[key.strip()] = parsed
    return grid


def sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py sweep", description="One decoder over a grid of its settings, every "
                                "point beside vanilla on the same samples; writes OUT/sweep.csv and OUT/report.")
    p.add_argument("--decoder", required=True, help="the decoder whose settings to sweep (e.g. layerskip)")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=VALUE,VALUE,...",
                   help="a setting and its values (repeatable: the grid is every combination)")
    p.add_argument("--set", action="append", default=[], metavar="DECODER.KEY=VALUE",
                   help="a setting shared by every point (repeatable), as for bench")
    p.add_argument("--recommend", action="store_true",
                   help="store each task's fastest point without errors or parity mismatches with the decoder's "
                        "trained heads, as its recommended setting")
    return add_run_arguments(p)


def sweep(argv: list[str]) -> int:
    args = sweep_parser().parse_args(argv)
    import decoders  # noqa: F401  (registers the decoders)
    from harness.core.decoding import DECODERS
    from harness.sweep import sweep_variants
    from reports.render import write_report
    from reports.sweeps import write_sweep_csv

    check_counts(args)
    DECODERS.get(args.decoder)
    if args.recommend and not hasattr(DECODERS.get(args.decoder), "default_recipe"):
        raise HarnessError(f"--recommend stores a setting with the decoder's trained heads; {args.decoder} has none")
    if args.recommend and args.temperature:
        raise HarnessError("--recommend stores a point checked by token parity, which needs greedy decoding; "
                           "drop --temperature or --recommend")
    grid = parse_grid(args.grid)
    fixed = parse_settings(args.set, [args.decoder]).get(args.decoder, {})
    variants = sweep_variants(args.decoder, grid, fixed)
    code, out = run_decoders(args, list(variants), variants,
                             {"sweep": {"decoder": args.decoder, "grid": grid, "fixed": fixed}})
    if code or out is None:
        return code
    csv = write_sweep_csv(out)
    print(f"sweep: {csv}" + ("" if args.no_report else f"; report: {write_report(out).html}"))
    if args.recommend:
        recommend(args.decoder, out, csv, list(grid))
    return 0


def recommend(decoder: str, out: Path, csv: Path, keys: list[str]) -> None:
    """Stores each task's fastest lossless sweep point with the decoder's heads (`harness.recommended`)."""
    import pandas as pd

    from harness.meta_file import read_meta
    from harness.recommended import best_lossless_point, store_recommendation

    meta = read_meta(out)
    for task, points in pd.read_csv(csv).groupby("task"):
        best = best_lossless_point(points.to_dict("records"))
        if best is None:
            print(f"recommend: no point on {task} without errors and parity mismatches; nothing stored")
            continue
        used = meta["settings_used"][task][best["variant"]]["settings"]
        source = (f"run.py sweep {out} on {task}: fastest of {len(points)} points without errors or parity "
                  f"mismatches, speed-up {best['speedup']:.3f} (median of {int(best['samples'])} per-sample ratios)")
        path = store_recommendation(meta["model"], decoder, task, used, source)
        print(f"recommend: {task}: {', '.join(f'{k}={used[k]}' for k in keys)} stored in {path}")


def train_heads_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py train-heads", description="Train a decoder's heads for a task.")
    p.add_argument("--decoder", required=True, help="decoder whose heads to train (e.g. adadecode)")
    p.add_argument("--task", required=True, help="task whose training prompts (never scored) to use")
    p.add_argument("--prompts", type=int, default=None,
                   help="number of training prompts, a tenth held out (default: the decoder's recipe, 150)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="length of the model's own greedy continuations (default: the decoder's recipe, 64)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the decoder's recipe)")
    p.add_argument("--exit-layers", default=None,
                   help="comma-separated layers for exit heads (default: the decoder's recipe)")
    p.add_argument("--model", default="smollm2", help="'smollm2' (embedded default), a hub id, a folder or a .gguf")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on a CPU with bf16 hardware, else float32), "
                   "float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data", default=None, help="local data: a folder with <task>/test.jsonl, or a file")
    p.add_argument("--train-rows", type=int, default=None, help="leading rows of the task reserved for training "
                   "(default: the task's; humaneval's are MBPP's): --prompts beyond them are not available")
    return p


def train_heads(argv: list[str]) -> int:
    args = train_heads_parser().parse_args(argv)
    import decoders  # noqa: F401  (registers the decoders)
    import tasks  # noqa: F401  (registers the tasks)
    from harness.core.loading import load_runner
    from harness.training import train_heads as train, trainable_decoder

    decoder = trainable_decoder(args.decoder)
    runner = load_runner(args.model, args.dtype, args.device)
    settings = dict(decoder.default_recipe(runner))
    given = {"prompts": args.prompts, "max_new_tokens": args.max_new_tokens, "steps": args.steps,
             "exit_layers": args.exit_layers and [int(layer) for layer in args.exit_layers.split(",")]}
    settings.update({key: value for key, value in given.items() if value is not None})
    path = train(runner, args.decoder, args.task, settings.pop("prompts"), args.data, args.train_rows, **settings)
    print(f"heads: {path}")
    return 0


def report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py report", description="Tables and plots of a run folder.")
    p.add_argument("run_dir", help="a run folder (meta.json + results.jsonl)")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--sweep-runs", nargs="+", default=(), metavar="RUN_DIR",
                   help="more run folders made with other decoder settings (e.g. gamma), for trade-off curves")
    args = p.parse_args(argv)
    from reports.render import write_report

    written = write_report(args.run_dir, args.out, tuple(args.sweep_runs))
    print(written.markdown.read_text(encoding="utf-8"))
    print(f"report: {written.html} (HTML), {written.markdown}, {written.csv}, {len(written.figures)} figures")
    return 0


def compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py compare", description="Exit 1 when a candidate run regresses against a "
                                "baseline run; 2 when they cannot be compared (a damaged or unlike run, bad input).")
    p.add_argument("baseline", help="baseline run folder")
    p.add_argument("candidate", help="candidate run folder")
    p.add_argument("--max-slowdown", default="5%", help="largest allowed loss of tokens/s or speedup (5%% or 0.05)")
    p.add_argument("--min-parity", type=float, default=1.0,
                   help="lowest allowed share of samples without a parity mismatch (exact or near-tie; default 1.0)")
    p.add_argument("--max-quality-drop", type=float, default=0.02, help="largest allowed drop of a quality mean")
    p.add_argument("--allow-different", action="store_true", help="compare runs made under different conditions "
                   "(model, dtype, device, token budget, sample count, sampling), with a warning, instead of exit 2")
    args = p.parse_args(argv)
    from reports.compare import Thresholds, different_conditions, parse_fraction, verdict_table
    from reports.run_files import load_run

    for flag, value in (("--min-parity", args.min_parity), ("--max-quality-drop", args.max_quality_drop)):
        if not 0 <= value <= 1:
            raise HarnessError(f"{flag} {value:g} lies outside 0..1; give a share between 0 and 1")
    limits = Thresholds(parse_fraction(args.max_slowdown), args.min_parity, args.max_quality_drop)
    baseline, candidate = load_run(args.baseline), load_run(args.candidate)
    differences = different_conditions(baseline, candidate)
    if differences and not args.allow_different:
        raise HarnessError(f"the runs were made under different conditions ({'; '.join(differences)}): their "
                           f"figures are not alike; compare like with like, or pass --allow-different")
    if differences:
        print(f"WARNING: DIFFERENT CONDITIONS ({'; '.join(differences)}): the verdict compares unlike runs\n")
    table, regressions = verdict_table(baseline, candidate, limits)
    print(table + "\n")
    for regression in regressions:
        print(regression)
    print(f"{len(regressions)} regression(s)" if regressions else "no regression")
    return 1 if regressions else 0


def lm_eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py lm-eval", allow_abbrev=False, add_help=False,
                                description="lm-evaluation-harness with a fastdecode decoder as the model; every "
                                            "other argument goes to lm-eval's own CLI (lm-eval run --help).")
    p.add_argument("--model", "-M", default="fastdecode", help="lm-eval model (default: fastdecode, ours)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (device= in --model_args wins)")
    p.add_argument("--data", default=os.environ.get("FASTDECODE_DATA"),
                   help="folder with gsm8k/test.jsonl, xsum/test.jsonl: adds the local tasks fastdecode_gsm8k and "
                        "fastdecode_xsum_choice (tag fastdecode_local) (default: $FASTDECODE_DATA)")
    p.add_argument("--output_path", "-o", default=None,
                   help="lm-eval's output path; fastdecode also writes fastdecode_requests_<time>.jsonl there")
    return p


def lm_eval(argv: list[str]) -> int:
    args, rest = lm_eval_parser().parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        lm_eval_parser().print_help()
    from harness import lm_eval_backend  # registers the "fastdecode" model with lm-eval
    from harness.lm_eval_tasks import render_tasks
    from lm_eval.__main__ import cli_evaluate

    if rest[:1] in (["ls"], ["validate"]):
        command, rest = rest[:1], rest[1:]
    else:
        command = ["run", "--model", args.model, "--device", args.device]
        rest = rest[1:] if rest[:1] == ["run"] else rest
    speed_log = None
    if args.output_path:
        rest += ["--output_path", args.output_path]
        out = Path(args.output_path)
        if args.model == "fastdecode":
            speed_log = (out.parent if out.suffix == ".json" else out) / \
                f"fastdecode_requests_{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
            rest += ["--model_args", f"speed_log={speed_log}"]
    with tempfile.TemporaryDirectory(prefix="fastdecode-lm-eval-") as tasks_dir:
        if args.data:
            if "--include_path" in rest:
                raise HarnessError("pass either --data (our local task templates) or --include_path, not both")
            rest += ["--include_path", str(render_tasks(args.data, tasks_dir))]
        sys.argv = ["lm-eval", *command, *rest]
        cli_evaluate()
    if speed_log is not None and speed_log.is_file():
        rows = [json.loads(line) for line in speed_log.read_text(encoding="utf-8").splitlines()]
        print(f"fastdecode: {lm_eval_backend.speed_summary(rows)}; per-request speed: {speed_log}")
    return 0


USAGE = """usage: python run.py [COMMAND] [OPTIONS]   (python run.py --help for every option)

  python run.py --decoders adadecode,vanilla --tasks xsum,humaneval --limit 20 --data ../shared/data
      benchmark decoders against greedy decoding (missing trained heads are trained first)
  python run.py report runs/<folder>
      the verdict, figures and tables of a run (Markdown here, HTML in runs/<folder>/report)
  python run.py compare BASELINE_RUN CANDIDATE_RUN
      a verdict table of two runs; exits 1 on a regression

other commands: sweep, train-heads, lm-eval; python run.py --list names the decoders and tasks"""

def doctor(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="run.py doctor", description="What this machine gives the harness: one ok/warn/fail "
                            "line per fact, with the fix.").parse_args(argv)
    from harness.doctor import FAIL, run_checks

    checks = run_checks()
    for check in checks:
        print(check)
    return 1 if any(c.status == FAIL for c in checks) else 0


COMMANDS = {"bench": bench, "doctor": doctor, "sweep": sweep, "train-heads": train_heads, "report": report, "compare": compare,
            "lm-eval": lm_eval}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a run over a whole task is never started by accident
        print(USAGE)
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "bench"
    try:
        return COMMANDS[command](argv)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
