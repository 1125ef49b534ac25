#!/usr/bin/env python
"""Command line of the harness: the only place that parses arguments.

    python run.py --decoders adadecode,vanilla --tasks xsum,humaneval --limit 20
    python run.py --list
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.core.errors import HarnessError


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description="Benchmark fast decoders against greedy decoding.")
    p.add_argument("--list", action="store_true", help="list decoders and tasks, then exit")
    p.add_argument("--decoders", default="vanilla", help="comma-separated decoder names")
    p.add_argument("--tasks", default="humaneval", help="comma-separated task names")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples of each task")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override each task's generation budget")
    p.add_argument("--model", default="smollm2", help="'smollm2' (embedded default), a hub id, a folder or a .gguf")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data", default=None, help="local data: a folder with <task>/test.jsonl, or a file")
    p.add_argument("--out", default=None, help="run folder (default: runs/<timestamp>)")
    return p


def list_plugins() -> None:
    from harness.core.decoding import DECODERS
    from tasks.base import TASKS

    print("decoders:", ", ".join(DECODERS.names()))
    print("tasks:", ", ".join(TASKS.names()))


def bench(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    import decoders  # noqa: F401  (registers the decoders)
    import tasks  # noqa: F401  (registers the tasks)
    from harness.bench import BenchConfig, run_benchmark
    from harness.core.decoding import DECODERS
    from harness.core.loading import load_runner
    from tasks.base import TASKS

    if args.list:
        list_plugins()
        return 0
    if args.limit is not None and args.limit < 0:
        raise HarnessError(f"--limit must be 0 or more, got {args.limit}")
    decoder_names = DECODERS.parse_list(args.decoders)
    task_names = TASKS.parse_list(args.tasks)
    runner = load_runner(args.model, args.dtype, args.device)
    chosen_decoders = {name: DECODERS.get(name)(runner) for name in decoder_names}
    chosen_tasks = {name: TASKS.get(name)(args.data) for name in task_names}
    out = Path(args.out) if args.out else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    results = run_benchmark(runner, chosen_decoders, chosen_tasks,
                            BenchConfig(out_dir=out, limit=args.limit, max_new_tokens=args.max_new_tokens))
    print(f"results: {results}")
    return 0


def report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py report", description="Tables and plots of a run folder.")
    p.add_argument("run_dir", help="a run folder (meta.json + results.jsonl)")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--sweep-runs", nargs="+", default=(), metavar="RUN_DIR",
                   help="more run folders made with other values of gamma, for the trade-off curve")
    args = p.parse_args(argv)
    from reports.render import write_report

    written = write_report(args.run_dir, args.out, tuple(args.sweep_runs))
    print(written.markdown.read_text(encoding="utf-8"))
    print(f"report: {written.html} (HTML), {written.markdown}, {written.csv}, {len(written.figures)} figures")
    return 0


def compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py compare",
                                description="Fail (exit 1) when a candidate run regresses against a baseline run.")
    p.add_argument("baseline", help="baseline run folder")
    p.add_argument("candidate", help="candidate run folder")
    p.add_argument("--max-slowdown", default="5%", help="largest allowed loss of tokens/s or speedup (5%% or 0.05)")
    p.add_argument("--min-parity", type=float, default=1.0, help="lowest allowed parity rate of a decoder")
    p.add_argument("--max-quality-drop", type=float, default=0.02, help="largest allowed drop of a quality mean")
    args = p.parse_args(argv)
    from reports.compare import Thresholds, find_regressions, parse_fraction
    from reports.run_files import load_run

    limits = Thresholds(parse_fraction(args.max_slowdown), args.min_parity, args.max_quality_drop)
    regressions = find_regressions(load_run(args.baseline), load_run(args.candidate), limits)
    for regression in regressions:
        print(regression)
    print(f"{len(regressions)} regression(s)" if regressions else "no regression")
    return 1 if regressions else 0


COMMANDS = {"bench": bench, "report": report, "compare": compare}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "bench"
    try:
        return COMMANDS[command](argv)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
