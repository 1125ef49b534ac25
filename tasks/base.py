"""The task interface: samples, prompts, stops and scoring.

A task loads its rows from the public source (Hugging Face `datasets`, or a package) or from a local copy (`--data`:
a JSON-lines file, or a folder holding `<task>/test.jsonl`). The order is the source's own, so every run sees the
same samples. The first `train_rows` rows are reserved for training heads (`training_prompts`) and never scored;
`samples` evaluates from the rest. Prompts go through the model's chat template when it has one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.core.registry import Registry
from tasks.sources import data_file, read_jsonl


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
    source: ClassVar[str] = ""  # where the rows come from without --data, for the run's metadata
    data_file_name: ClassVar[str] = "test.jsonl"  # the file's name inside <data folder>/<task>/

    def __init__(self, data: str | None = None) -> None:
        self.data = data
        self._rows: list[dict] | None = None

    def samples(self, limit: int | None = None) -> list[Sample]:
        """Evaluation samples in a fixed order; the first `limit` of them."""
        rows = self.rows()[self.train_rows:]
        rows = rows if limit is None else rows[:limit]
        return [self.to_sample(row, self.train_rows + i) for i, row in enumerate(rows)]

    def training_prompts(self, n: int) -> list[str]:
        """Prompts that are never scored, for training heads: the first `min(n, train_rows)` rows."""
        return [self.to_sample(row, i).prompt for i, row in enumerate(self.rows()[: min(n, self.train_rows)])]

    def split_info(self) -> dict[str, Any]:
        """Which rows train heads and which are scored, for the run's metadata."""
        return {"source": self.local_path() or self.source, "training_rows": [0, self.train_rows],
                "evaluation_rows_from": self.train_rows}

    def rows(self) -> list[dict]:
        if self._rows is None:
            path = self.local_path()
            self._rows = read_jsonl(path) if path else self.load_source_rows()
        return self._rows

    def local_path(self) -> str | None:
        """The local copy named by --data, or None to read the public source."""
        return str(data_file(self.data, self.name, self.data_file_name)) if self.data else None

    def load_source_rows(self) -> list[dict]:
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


TASKS: Registry[type[Task]] = Registry("task")
