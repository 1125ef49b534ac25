"""The task interface: samples, prompts, stops and scoring.

A task loads its evaluation samples deterministically (file order, or a seeded shuffle), turns each into prompt
token ids (through the model's chat template when it has one), says when generation stops, and scores a
completion. Tasks whose heads are trained on the same source keep its first `train_rows` rows for training only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness.core.errors import HarnessError
from harness.core.registry import Registry


@dataclass
class Sample:
    id: str
    prompt: str
    reference: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


class Task:
    name: ClassVar[str]
    max_new_tokens: ClassVar[int] = 128
    stop_strings: ClassVar[tuple[str, ...]] = ()
    train_rows: ClassVar[int] = 0  # leading rows of the source reserved for head training, never scored
    use_chat_template: ClassVar[bool] = True

    def __init__(self, data: str | None = None) -> None:
        self.data = data

    def samples(self, limit: int | None = None) -> list[Sample]:
        """Evaluation samples in a fixed order; the first `limit` of them."""
        rows = self.load_rows()[self.train_rows:]
        samples = [self.to_sample(row, i) for i, row in enumerate(rows)]
        return samples if limit is None else samples[:limit]

    def training_prompts(self, n: int) -> list[str]:
        """Prompts that are never scored, for training heads."""
        rows = self.load_rows()[: self.train_rows]
        return [self.to_sample(row, i).prompt for i, row in enumerate(rows)][:n]

    def load_rows(self) -> list[dict]:
        raise NotImplementedError

    def to_sample(self, row: dict, index: int) -> Sample:
        raise NotImplementedError

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        raise NotImplementedError

    def prompt_ids(self, sample: Sample, tokenizer) -> list[int]:
        return encode_prompt(sample.prompt, tokenizer, self.use_chat_template)


def encode_prompt(prompt: str, tokenizer, use_chat_template: bool = True) -> list[int]:
    """Token ids for a user prompt, wrapped in the model's chat template when it has one."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt)["input_ids"]


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def local_rows(data: str | None, folder: str, file: str = "test.jsonl") -> list[dict] | None:
    """Rows from a local copy: `data` is a JSON-lines file, or a data folder holding `<folder>/<file>`."""
    if data is None:
        return None
    path = Path(data).expanduser()
    if path.is_dir():
        path = path / folder / file
    if not path.is_file():
        raise HarnessError(f"data file {path} not found; pass --data a JSON-lines file or a folder holding {folder}/{file}")
    return read_jsonl(path)


TASKS: Registry[type[Task]] = Registry("task")
