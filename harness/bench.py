"""Runs decoders over task samples, timing each generation and streaming one JSON line per (decoder, sample)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from harness.core.decoding import Decoder, StopCondition
from harness.core.model_runner import ModelRunner
from tasks.base import Task


@dataclass
class BenchConfig:
    out_dir: Path
    limit: int | None = None
    max_new_tokens: int | None = None


def run_benchmark(runner: ModelRunner, decoders: dict[str, Decoder], tasks: dict[str, Task],
                  config: BenchConfig) -> Path:
    config.out_dir.mkdir(parents=True, exist_ok=True)
    results = config.out_dir / "results.jsonl"
    totals: dict[str, list[float]] = {name: [0, 0.0] for name in decoders}
    with open(results, "a", encoding="utf-8") as out:
        for task_name, task in tasks.items():
            stop = StopCondition(config.max_new_tokens or task.max_new_tokens, frozenset(runner.eos_token_ids),
                                 task.stop_strings, runner.tokenizer)
            for sample in task.samples(config.limit):
                prompt_ids = task.prompt_ids(sample, runner.tokenizer)
                for name, decoder in decoders.items():
                    start = time.perf_counter()
                    gen = decoder.generate(prompt_ids, stop)
                    seconds = time.perf_counter() - start
                    totals[name][0] += len(gen.tokens)
                    totals[name][1] += seconds
                    row = {"decoder": name, "task": task_name, "sample_id": sample.id, "prompt_ids": prompt_ids,
                           "tokens": gen.tokens, "new_tokens": len(gen.tokens), "seconds": seconds,
                           "tokens_per_s": len(gen.tokens) / seconds, "stats": gen.stats}
                    out.write(json.dumps(row) + "\n")
                    out.flush()
    for name, (tokens, seconds) in totals.items():
        print(f"{name}: {tokens / seconds:.2f} tokens/s ({int(tokens)} tokens in {seconds:.1f} s)")
    return results
