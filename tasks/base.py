"""The task interface: samples, prompts, stops and scoring.

A task loads its rows from the public source (Hugging Face `datasets`, or a package) or from a local copy (`--data`:
a JSON-lines file, or a folder holding `<task>/test.jsonl`). The order is the source's own, so every run sees the
same samples. The first `train_rows` rows are reserved for training heads (`training_prompts`) and never scored;
`samples` evaluates from the rest (`--train-rows` overrides the task's default). Prompts go through the model's chat
template when it has one. A row without one of the task's `fields`, or with one of another kind (null, a list where
text is expected), is a one-line error naming file, line and field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.core.errors import HarnessError
from harness.core.registry import Registry
from tasks.fields import kind_name, row_problem
from tasks.sources import data_file, file_sha256, read_jsonl, rows_sha256


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
    fields: ClassVar[dict[str, Any]] = {}  # the fields every row must have, and their kinds (`tasks.fields`)
    runs_code: ClassVar[bool] = False  # scoring runs generated code (in `tasks.sandbox`)

    def __init__(self, data: str | None = None, train_rows: int | None = None) -> None:
        """`train_rows` overrides how many leading rows are reserved for training heads (`--train-rows`)."""
        self.data = data
        if train_rows is not None:
            self.train_rows = train_rows
        self._rows: list[dict] | None = None
        self._line_of: dict[int, int] = {}  # id(row) -> its line in the local file

    def samples(self, limit: int | None = None) -> list[Sample]:
        """Evaluation samples in a fixed order; the first `limit` of them."""
        rows = self.rows()[self.train_rows:]
        rows = rows if limit is None else rows[:limit]
        return [self.sample(row, self.train_rows + i) for i, row in enumerate(rows)]

    def training_prompts(self, n: int) -> list[str]:
        """Prompts that are never scored, for training heads: the first `min(n, train_rows)` rows."""
        return [self.sample(row, i).prompt for i, row in enumerate(self.rows()[: min(n, self.train_rows)])]

    def split_counts(self) -> tuple[int, int]:
        """(rows reserved for training heads, rows that can be scored)."""
        total = len(self.rows())
        return min(self.train_rows, total), max(total - self.train_rows, 0)

    def split_line(self) -> str:
        """One line for the start of a run: how many rows train heads and how many are scored."""
        training, scored = self.split_counts()
        return (f"{self.name}: {training + scored} rows from {self.local_path() or self.source}: {training} reserved "
                f"for training heads (never scored), {scored} scored (--train-rows N changes the split)")

    def split_info(self) -> dict[str, Any]:
        """Which rows train heads and which are scored, and a content hash of the source, for the run's metadata
        (a resumed run refuses another source)."""
        path = self.local_path()
        return {**self.split_rows(), "source_sha256": file_sha256(path) if path else rows_sha256(self.rows())}

    def split_rows(self) -> dict[str, Any]:
        return {"source": self.local_path() or self.source, "training_rows": [0, self.train_rows],
                "evaluation_rows_from": self.train_rows}

    def rows(self) -> list[dict]:
        if self._rows is None:
            path = self.local_path()
            if path:
                self._rows, lines = read_jsonl(path)
                self._line_of = {id(row): line for row, line in zip(self._rows, lines)}
            else:
                self._rows = self.load_source_rows()
        return self._rows

    def sample(self, row: dict, index: int) -> Sample:
        """`to_sample`, with a row that lacks a field, or holds one of another kind, reported as one line naming
        file, line and field."""
        problem = row_problem(row, self.fields)
        if problem is None:
            try:
                return self.to_sample(row, index)
            except KeyError as exc:
                problem = f"no field {exc.args[0]!r}"
        where = (f"{self.local_path()} line {self._line_of[id(row)]}" if id(row) in self._line_of
                 else f"{self.source} row {index}")
        needs = ", ".join(f"{name} ({kind_name(kind)})" for name, kind in self.fields.items())
        raise HarnessError(f"{where}: {problem} (task {self.name} rows need {needs}); fix the row or pass another "
                           f"--data")

    def local_path(self) -> str | None:
        """The local copy named by --data, or None to read the public source."""
        return str(data_file(self.data, type(self).name, self.data_file_name)) if self.data else None

    def restricted_to(self, subset: str) -> "Task":
        """This task on one named subset of its rows (`--tasks TASK:SUBSET`); tasks with subsets override it."""
        raise HarnessError(f"task {self.name!r} has no subsets; drop ':{subset}' (tasks with subsets: spec_bench)")

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


def build_task(spec: str, data: str | None = None, train_rows: int | None = None) -> Task:
    """`TASK` or `TASK:SUBSET` (e.g. `spec_bench:summarization`, one Spec-Bench category) → the task."""
    name, _, subset = spec.partition(":")
    task = TASKS.get(name)(data, train_rows)
    return task.restricted_to(subset) if subset else task


def parse_task_list(specs: str) -> list[str]:
    """Comma-separated `TASK` or `TASK:SUBSET` names, each task name checked."""
    chosen = [s.strip() for s in specs.split(",") if s.strip()]
    TASKS.parse_list(",".join(s.partition(":")[0] for s in chosen))
    return chosen
