"""Training a decoder's heads for a task: prompts from the task, training in the decoder, and the first-run hook.

The task supplies prompts that are never scored (`Task.training_prompts`); the decoder class owns its heads' loss
(`train_heads(runner, task_name, prompt_ids_list, **settings) -> Path`) and its default recipe (`default_recipe`,
the settings the README's measured heads were trained with). `prepare_heads` runs before a benchmark: heads that a
decoder needs (`Decoder.heads_needed`) and that are missing are trained with that recipe and cached, or, when
training is not allowed, the run stops with the command that trains them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from harness.core.decoding import DECODERS
from harness.core.embedded import EMBEDDED
from harness.core.errors import HarnessError, MissingHeads
from harness.core.heads import HeadsNeed
from harness.core.loading import EMBEDDED_MODEL
from harness.core.model_runner import ModelRunner
from harness.schema import base_decoder
from tasks.base import Task, build_task, encode_prompt


def trainable_decoder(name: str) -> type:
    """The decoder class, if it has heads to train (checked before the model loads)."""
    decoder = DECODERS.get(name)
    if not decoder.trains_heads:
        with_heads = [n for n in DECODERS.names() if DECODERS.get(n).trains_heads]
        raise HarnessError(f"decoder {name!r} has no heads to train; pick one of: {', '.join(with_heads)}")
    return decoder


def training_rows(task: Task, n: int) -> str:
    """Which rows `n` training prompts of `task` come from, in words (they are never scored)."""
    info = task.split_info()
    other = info.get("training_source")
    if other:
        return f"the first {n} rows of {other['task']} ({other['source']}), never scored"
    return f"the first {n} rows of {info['source']} (reserved for training, never scored)"


def train_heads(runner: ModelRunner, decoder_name: str, task_name: str, n_prompts: int, data: str | None = None,
                train_rows: int | None = None, **settings: Any) -> Path:
    """Trains `decoder_name`'s heads for `task_name` on its first `n_prompts` training prompts (of `train_rows`
    reserved rows, default the task's); returns the file."""
    decoder = trainable_decoder(decoder_name)
    if n_prompts < 2:
        raise HarnessError(f"--prompts must be at least 2 (one is held out), got {n_prompts}")
    task = build_task(task_name, data, train_rows)
    prompts = task.training_prompts(n_prompts)
    if len(prompts) < 2:
        raise HarnessError(f"task {task_name!r} has no training prompts; pass --data with its source or pick another task")
    prompt_ids = [encode_prompt(p, runner.tokenizer, task.use_chat_template) for p in prompts]
    metadata = {"data": {"task": task_name, "training_prompts": len(prompts),
                         "rows": training_rows(task, len(prompts)), "data": data}}
    measured = decoder.measured_settings.get(runner.name)
    if measured:  # the setting measured fastest with heads of this recipe travels with the heads
        metadata["recommended"] = measured
    return decoder.train_heads(runner, task_name, prompt_ids, metadata=metadata, **settings)


def missing_heads(runner: ModelRunner, settings: dict[str, dict], task_names: list[str]) -> dict[HeadsNeed, str]:
    """The heads the decoders (names may be sweep variants, keys of `settings`) need for the tasks and lack, one
    entry per heads file (the exit layers every decoder needs from it merged), with why each is unusable."""
    needs: dict[tuple[str, str], HeadsNeed] = {}
    for name, decoder_settings in settings.items():
        for task in task_names:
            need = DECODERS.get(base_decoder(name)).heads_needed(runner.name, task, decoder_settings)
            if need is not None:
                known = needs.get((need.kind, task))
                layers = tuple(sorted(set(need.exit_layers) | set(known.exit_layers if known else ())))
                needs[(need.kind, task)] = HeadsNeed(need.kind, task, need.path, layers)
    return {need: why for need in needs.values() if (why := need.missing())}


def seconds_per_token(runner: ModelRunner, context: int, probes: int = 6) -> float:
    """The runner's median time for one decoding step after `context` tokens (a typical training prompt), now."""
    times = []
    with torch.inference_mode():
        cache = runner.new_cache(context + probes)
        runner.forward([0] * context, cache)
        for _ in range(probes):
            start = time.perf_counter()
            runner.forward([0], cache)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def prepare_heads(runner: ModelRunner, settings: dict[str, dict], task_names: list[str], data: str | None,
                  refuse: str | None = None) -> list[dict[str, Any]]:
    """Trains every missing heads file the run needs with its decoder's default recipe (a notice first, progress
    bars while it trains); returns what was trained, for the run's metadata. With `refuse` (why training is not
    allowed here) a missing file stops the run instead, naming the command that trains it."""
    missing = missing_heads(runner, settings, task_names)
    if missing and refuse:
        need, why = next(iter(missing.items()))
        raise HarnessError(f"{why}; train them with: {train_command(need.error(why, runner.name, data))} ({refuse})")
    trained = []
    for need in missing:
        recipe = dict(DECODERS.get(need.kind).default_recipe(runner))
        if need.exit_layers:
            recipe["exit_layers"] = sorted(set(recipe.get("exit_layers", ())) | set(need.exit_layers))
        n_prompts = recipe.pop("prompts")
        task = build_task(need.task, data)
        prompts = task.training_prompts(n_prompts)
        rows = training_rows(task, len(prompts))
        lengths = sorted(len(encode_prompt(p, runner.tokenizer, task.use_chat_template)) for p in prompts)
        step_s = seconds_per_token(runner, lengths[len(lengths) // 2] + recipe["max_new_tokens"] // 2 if lengths else 16)
        layers = f" at exit layers {', '.join(map(str, recipe['exit_layers']))}" if "exit_layers" in recipe else ""
        estimate = n_prompts * recipe["max_new_tokens"] * step_s
        print(f"note: no usable {need.kind} heads for {need.task} ({need.missing()}); training them now with the "
              f"default recipe{layers}: {recipe['max_new_tokens']} generated tokens on each of {rows}, then "
              f"{recipe['steps']} training steps. The generations take about {minutes(estimate)} at the "
              f"{step_s * 1e3:.0f} ms per token measured now at a typical prompt's length (less where one stops "
              f"early; prefills, hidden states and training steps come on top). Saved to {need.path} for later runs "
              f"(--no-train stops instead).",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        path = train_heads(runner, need.kind, need.task, n_prompts, data, **recipe)
        seconds = time.perf_counter() - start
        print(f"note: {need.kind} heads for {need.task} trained in {minutes(seconds)}: {path}", file=sys.stderr)
        trained.append({"kind": need.kind, "task": need.task, "path": str(path), "seconds": round(seconds, 1),
                        "recipe": {"prompts": n_prompts, **recipe}, "rows": rows})
    return trained


def train_command(missing: MissingHeads) -> str:
    """The command line that trains the missing heads (at their exit layers when the error names some), for the
    model and from the data the error names (an embedded model by its alias, the default one unnamed)."""
    layers = f" --exit-layers {','.join(map(str, missing.exit_layers))}" if missing.exit_layers else ""
    model = next((alias for alias, embedded in EMBEDDED.items() if embedded.name == missing.model), missing.model)
    return (f"python run.py train-heads --decoder {missing.kind} --task {missing.task or 'TASK'}{layers}" +
            (f" --model {model}" if model not in (None, EMBEDDED_MODEL) else "") +
            (f" --data {missing.data}" if missing.data else ""))
