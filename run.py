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
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import NoReturn
from pathlib import Path


from harness.core.backends.runner_backends import RUNNERS
from harness.core.embedded import ModelNotInstalled
from harness.core.errors import HarnessError, MissingHeads, SettingError
from harness.core.sampling import Sampling


MODEL_HELP = "'smollm2' (embedded default), 'qwen2.5-coder-0.5b' (embedded), a hub id, a folder or a .gguf"


class Parser(argparse.ArgumentParser):
    """argparse, its errors in one line naming the flag and where the usage is (not the whole usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_model_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The model, where it runs and the local data: shared by runs, sweeps and `train-heads`."""
    p.add_argument("--model", default="smollm2", help=MODEL_HELP)
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on a CPU with bf16 hardware, else float32), "
                   "float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data", default=None, help="local data: a folder with <task>/test.jsonl, or a file")
    return p


def add_run_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of a benchmark run shared by `bench` and `sweep`: tasks, samples, model, data, output."""
    p.add_argument("--tasks", default="humaneval",
                   help="comma-separated task names; TASK:SUBSET runs one subset (spec_bench:summarization)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N samples of each task")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override each task's generation budget")
    add_model_arguments(p)
    p.add_argument("--runner", default=os.environ.get("FASTDECODE_RUNNER", "fast"), choices=RUNNERS,
                   help="fast (default; FASTDECODE_RUNNER changes it): the fastest arithmetic measured correct here "
                   "(on a CPU the native kernels, a C call per layer); eager: the model's own modules, as the papers "
                   "measured; compiled: the static step compiled by inductor (CPU); captured: the static step in CUDA "
                   "graphs (GPU); meta.json's runner and kernel_path name it")
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
    p.add_argument("--batch-size", type=int, default=1,
                   help="sequences each decoder decodes together, sharing every pass over the weights (default 1); "
                        "rows stay one per sample, speed-ups compare decoders at the same batch size")
    p.add_argument("--refill", action="store_true",
                   help="with --batch-size: a finished sequence's place goes to the next sample at once (default: "
                        "static batches)")
    return p


def sampling_settings(args: argparse.Namespace, decoder_names: list[str]) -> Sampling:
    """The run's `Sampling`; under sampling, a decoder that decodes greedily only is refused before the model loads."""
    from harness.core.decoding import DECODERS
    from harness.schema import base_decoder

    sampling = Sampling(args.temperature, args.top_p, args.top_k, args.seed)
    greedy_only = [n for n in decoder_names if not DECODERS.get(base_decoder(n)).samples]
    if not sampling.greedy and greedy_only:
        samplers = ", ".join(n for n in DECODERS.names() if DECODERS.get(n).samples)
        raise HarnessError(f"{', '.join(greedy_only)} decode{'s' if len(greedy_only) == 1 else ''} greedily only; "
                           f"drop {'it' if len(greedy_only) == 1 else 'them'} from --decoders or use "
                           f"--temperature 0 (decoders that sample: {samplers})")
    return sampling


def run_decoders(args: argparse.Namespace, decoder_names: list[str], settings: dict[str, dict],
                 extra_meta: dict) -> tuple[int, Path | None]:
    """`harness.run.pipeline.run_decoders` with the run's options and sampling settings read from `args`."""
    from harness.run.pipeline import RunOptions, run_decoders as run

    sampling = sampling_settings(args, decoder_names)
    options = RunOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions)})
    return run(options, sampling, decoder_names, settings, extra_meta)


def bench_parser() -> argparse.ArgumentParser:
    p = Parser(prog="run.py", description="Benchmark fast decoders against greedy decoding.")
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
    check_arguments(args)
    decoder_names = DECODERS.parse_list(args.decoders)
    code, out = run_decoders(args, decoder_names, parse_settings(args.set, decoder_names), {})
    if code in (0, 1) and out is not None and not args.no_report:  # 1: a decoder failed every sample
        from reports.render import write_report

        print(f"report: {write_report(out).html}")
    return code


def check_arguments(args: argparse.Namespace) -> None:
    """The checks a run's arguments need before anything loads: counts, the data path, the runner."""
    for flag in ("limit", "warmup", "train_rows", "distribution_draws"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            raise HarnessError(f"--{flag.replace('_', '-')} must be 0 or more, got {getattr(args, flag)}")
    if getattr(args, "data", None) and not Path(args.data).expanduser().exists():
        raise HarnessError(f"--data {args.data} does not exist; pass a data folder (e.g. --data ../shared/data) or a "
                           f"JSON-lines file, or leave --data out")
    if args.runner not in RUNNERS:  # argparse checks a given --runner, not the default FASTDECODE_RUNNER gave
        raise HarnessError(f"FASTDECODE_RUNNER={args.runner} names no runner; set it to one of {', '.join(RUNNERS)} "
                           "or unset it")
    if args.limit == 0:
        raise HarnessError("--limit 0 scores no sample; pass --limit 1 or more (leave it out for every sample)")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise HarnessError(f"--max-new-tokens must be 1 or more, got {args.max_new_tokens} "
                           "(leave it out for each task's own budget)")


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
    p = Parser(prog="run.py sweep", description="One decoder over a grid of its settings, every "
                                "point beside vanilla on the same samples; writes OUT/sweep.csv and OUT/report.")
    p.add_argument("--decoder", required=True, help="the decoder whose settings to sweep (e.g. layerskip); for a "
                                                       "batch_size grid, one or more, comma-separated")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=VALUE,VALUE,...",
                   help="a setting and its values (repeatable: the grid is every combination); batch_size=1,2,4,... "
                        "sweeps the batch size instead: one run per size in OUT/batch_size=B, every decoder beside "
                        "vanilla, then OUT/batch_sweep.csv and .png")
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
    from harness.run.sweep import sweep_variants
    from reports.render import write_report
    from reports.sweeps import write_sweep_csv

    check_arguments(args)
    for name in args.decoder.split(","):
        DECODERS.get(name)
    if args.recommend and not DECODERS.get(args.decoder).trains_heads:
        raise HarnessError(f"--recommend stores a setting with the decoder's trained heads; {args.decoder} has none")
    if args.recommend and args.temperature:
        raise HarnessError("--recommend stores a point checked by token parity, which needs greedy decoding; "
                           "drop --temperature or --recommend")
    grid = parse_grid(args.grid)
    if "batch_size" in grid:
        return batch_sweep(args, grid)
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


def batch_sweep(args: argparse.Namespace, grid: dict[str, list]) -> int:
    """One run per batch size of the grid, every decoder of `--decoder` beside vanilla, into OUT/batch_size=B; then
    the speed-up curve against batch size (`reports/batch_sweep.py`)."""
    from reports.batch_sweep import write_batch_sweep
    from reports.run_files import load_run

    if len(grid) > 1 or args.recommend:
        raise HarnessError("--grid batch_size=... sweeps the batch size alone: give decoder settings with --set and "
                           "drop --recommend and other --grid keys")
    sizes = grid["batch_size"]
    if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes):
        raise HarnessError(f"--grid batch_size takes whole numbers 1 or more, not {sizes}")
    names = args.decoder.split(",")
    settings = parse_settings(args.set, names)
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    runs = []
    for size in sizes:
        folder = out / f"batch_size={size}"
        code, done = run_decoders(argparse.Namespace(**{**vars(args), "batch_size": size, "out": str(folder),
                                                        "refill": args.refill and size > 1}),
                                  names, settings, {"sweep": {"decoders": names, "grid": grid}})
        if code or done is None:
            return code
        runs.append(load_run(done))
    csv, lines = write_batch_sweep(out, runs)
    print("\n".join(lines))
    print(f"batch sweep: {csv} and {csv.with_suffix('.png')}")
    return 0


def recommend(decoder: str, out: Path, csv: Path, keys: list[str]) -> None:
    """Stores each task's fastest lossless sweep point with the decoder's heads (`harness.run.recommended`)."""
    import pandas as pd

    from harness.run.meta_file import read_meta
    from harness.run.recommended import best_lossless_point, store_recommendation

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
    p = Parser(prog="run.py train-heads", description="Train a decoder's heads for a task.")
    p.add_argument("--decoder", required=True, help="decoder whose heads to train (e.g. adadecode)")
    p.add_argument("--task", required=True, help="task whose training prompts (never scored) to use")
    p.add_argument("--prompts", type=int, default=None,
                   help="number of training prompts, a tenth held out (default: the decoder's recipe, 150)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="length of the model's own greedy continuations (default: the decoder's recipe, 64)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the decoder's recipe)")
    p.add_argument("--exit-layers", default=None,
                   help="comma-separated layers for exit heads (default: the decoder's recipe)")
    add_model_arguments(p)
    p.add_argument("--train-rows", type=int, default=None, help="leading rows of the task reserved for training "
                   "(default: the task's; humaneval's are MBPP's): --prompts beyond them are not available")
    return p


def train_heads(argv: list[str]) -> int:
    args = train_heads_parser().parse_args(argv)
    import decoders  # noqa: F401  (registers the decoders)
    import tasks  # noqa: F401  (registers the tasks)
    from harness.core.loading import load_runner
    from harness.run.training import train_heads as train, trainable_decoder

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
    p = Parser(prog="run.py report", description="Tables and plots of a run folder.")
    p.add_argument("run_dir", help="a run folder (meta.json + results.jsonl)")
    p.add_argument("--out", default=None, help="report folder (default: RUN_DIR/report)")
    p.add_argument("--sweep-runs", nargs="+", default=(), metavar="RUN_DIR",
                   help="more run folders made with other decoder settings (e.g. gamma), for trade-off curves")
    p.add_argument("--model-runs", nargs="+", default=(), metavar="RUN_DIR",
                   help="runs of other models (e.g. --model qwen2.5-coder-0.5b) or runners (--runner eager): the "
                        "model ladder, each decoder's speed-up and statistics on every model and runner side by side")
    args = p.parse_args(argv)
    from reports.render import write_report

    written = write_report(args.run_dir, args.out, tuple(args.sweep_runs), tuple(args.model_runs))
    print(written.markdown.read_text(encoding="utf-8"))
    print(f"report: {written.html} (HTML), {written.markdown}, {written.csv}, {len(written.figures)} figures")
    return 0


def compare(argv: list[str]) -> int:
    p = Parser(prog="run.py compare", description="Exit 1 when a candidate run regresses against a "
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
    p = Parser(prog="run.py lm-eval", allow_abbrev=False, add_help=False,
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
    from integrations.lm_eval import backend as lm_eval_backend  # registers the "fastdecode" model with lm-eval
    from integrations.lm_eval.cli import evaluate
    from integrations.lm_eval.tasks import render_tasks

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
        listing = "python run.py lm-eval ls tasks" + (f" --data {args.data}" if args.data else " (--data DIR adds ours)")
        evaluate(["lm-eval", *command, *rest], listing)
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
    Parser(prog="run.py doctor", description="What this machine gives the harness: one ok/warn/fail "
                            "line per fact, with the fix.").parse_args(argv)
    from harness.measure.doctor import FAIL, run_checks

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
        print(f"error: {cli_message(exc)}", file=sys.stderr)
        return 2


def cli_message(exc: HarnessError) -> str:
    """The core's error in the command line's terms: a setting as its flag, missing heads with the command that
    trains them."""
    if isinstance(exc, SettingError):
        return f"--{exc.setting.replace('_', '-')} {exc.problem}"
    if isinstance(exc, ModelNotInstalled):
        return f"{exc}; install it with: {exc.install_command}"
    if isinstance(exc, MissingHeads):
        from harness.run.training import train_command

        return f"{exc}; train them with: {train_command(exc)}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
