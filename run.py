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


def train_heads_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py train-heads", description="Train a decoder's heads for a task.")
    p.add_argument("--decoder", required=True, help="decoder whose heads to train (e.g. adadecode)")
    p.add_argument("--task", required=True, help="task whose training prompts (never scored) to use")
    p.add_argument("--prompts", type=int, default=64, help="number of training prompts (a tenth is held out)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="length of the model's own greedy continuations")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps")
    p.add_argument("--exit-layers", default=None, help="comma-separated layers for exit heads (default: the decoder's)")
    p.add_argument("--model", default="smollm2", help="'smollm2' (embedded default), a hub id, a folder or a .gguf")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data", default=None, help="local data: a folder with <task>/test.jsonl, or a file")
    return p


def train_heads(argv: list[str]) -> int:
    args = train_heads_parser().parse_args(argv)
    import decoders  # noqa: F401  (registers the decoders)
    import tasks  # noqa: F401  (registers the tasks)
    from harness.core.loading import load_runner
    from harness.training import train_heads as train

    settings = {"max_new_tokens": args.max_new_tokens, "steps": args.steps}
    if args.exit_layers:
        settings["exit_layers"] = [int(layer) for layer in args.exit_layers.split(",")]
    runner = load_runner(args.model, args.dtype, args.device)
    path = train(runner, args.decoder, args.task, args.prompts, args.data, **settings)
    print(f"heads: {path}")
    return 0


COMMANDS = {"bench": bench, "train-heads": train_heads}


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
