#!/usr/bin/env python
"""Command line of the harness: the only place that parses arguments.

    python run.py --decoders adadecode,vanilla --tasks xsum,humaneval --limit 20
    python run.py --list
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


COMMANDS = {"bench": bench, "lm-eval": lm_eval}


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
