"""Training a decoder's heads for a task from the command line: prompts from the task, training in the decoder.

The task supplies prompts that are never scored (`Task.training_prompts`); the decoder class owns its heads' loss
(`train_heads(runner, task_name, prompt_ids_list, **settings) -> Path`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.core.decoding import DECODERS
from harness.core.errors import HarnessError
from harness.core.model_runner import ModelRunner
from tasks.base import TASKS, encode_prompt


def trainable_decoder(name: str) -> type:
    """The decoder class, if it has heads to train (checked before the model loads)."""
    decoder = DECODERS.get(name)
    if not hasattr(decoder, "train_heads"):
        with_heads = [n for n in DECODERS.names() if hasattr(DECODERS.get(n), "train_heads")]
        raise HarnessError(f"decoder {name!r} has no heads to train; pick one of: {', '.join(with_heads)}")
    return decoder


def train_heads(runner: ModelRunner, decoder_name: str, task_name: str, n_prompts: int, data: str | None = None,
                **settings: Any) -> Path:
    """Trains `decoder_name`'s heads for `task_name` on its first `n_prompts` training prompts; returns the file."""
    decoder = trainable_decoder(decoder_name)
    if n_prompts < 2:
        raise HarnessError(f"--prompts must be at least 2 (one is held out), got {n_prompts}")
    task = TASKS.get(task_name)(data)
    prompts = task.training_prompts(n_prompts)
    if len(prompts) < 2:
        raise HarnessError(f"task {task_name!r} has no training prompts; pass --data with its source or pick another task")
    prompt_ids = [encode_prompt(p, runner.tokenizer, task.use_chat_template) for p in prompts]
    metadata = {"data": {"task": task_name, "training_prompts": len(prompts), "rows": "the task's first training rows",
                         "data": data}}
    return decoder.train_heads(runner, task_name, prompt_ids, metadata=metadata, **settings)
