"""Spec-Bench (480 questions in 13 categories: MT-bench's 8 × 10, then translation, summarization, qa,
math_reasoning and rag × 80): the standard speed benchmark for speculative decoding.

Only first turns are run. An MT-bench second turn's prompt holds the model's own first answer, so each decoder's
prompt would depend on its own output (and a parity failure on turn 1 would change turn 2's prompt); speed and
parity are measured on the first turns alone. Quality is not scored (Spec-Bench measures speed; parity with greedy
decoding carries vanilla's quality over). The first 20 % of each category (96 questions) are kept for training
heads; samples are ordered round-robin over categories so a small `--limit` still covers them all.
`--tasks spec_bench:summarization` (any category) runs one category's evaluation rows (summarization: 64 of 80).
"""
from __future__ import annotations

from itertools import chain, zip_longest

from harness.core.errors import HarnessError
from tasks.base import TASKS, Sample, Task
from tasks.sources import url_rows

URL = "https://raw.githubusercontent.com/hemingkx/Spec-Bench/main/data/spec_bench/question.jsonl"
TRAIN_FRACTION = 0.2


@TASKS.register("spec_bench")
class SpecBench(Task):
    max_new_tokens = 256
    data_file_name = "question.jsonl"
    source = URL
    fields = {"question_id": int | str, "category": str, "turns": list[str]}

    def load_source_rows(self) -> list[dict]:
        return url_rows(URL, type(self).name)

    def __init__(self, data: str | None = None, train_rows: int | None = None) -> None:
        """By default the first 20 % of each category train heads; `train_rows` N instead takes the first N
        questions of the round-robin order."""
        super().__init__(data)
        self.fixed_train_rows = train_rows
        self.category: str | None = None

    def restricted_to(self, subset: str) -> "SpecBench":
        """One category's rows: results, heads and reports name the task `spec_bench:<category>`."""
        categories = sorted({row["category"] for row in self.rows() if "category" in row})
        if subset not in categories:
            raise HarnessError(f"spec_bench has no category {subset!r}; known categories: {', '.join(categories)}")
        self.category, self.name = subset, f"{type(self).name}:{subset}"
        return self

    def _split(self) -> tuple[list[dict], list[dict]]:
        """(training rows, evaluation rows in round-robin category order)."""
        by_category: dict[str, list[dict]] = {}
        for row in self.rows():
            self.sample(row, 0)  # every row has its fields
            if self.category in (None, row["category"]):
                by_category.setdefault(row["category"], []).append(row)
        if self.fixed_train_rows is not None:
            ordered = _round_robin(list(by_category.values()))
            return ordered[: self.fixed_train_rows], ordered[self.fixed_train_rows:]
        cut = {c: int(len(rows) * TRAIN_FRACTION) for c, rows in by_category.items()}
        train = [row for c, rows in by_category.items() for row in rows[: cut[c]]]
        return train, _round_robin([rows[cut[c]:] for c, rows in by_category.items()])

    def samples(self, limit: int | None = None) -> list[Sample]:
        rows = self._split()[1]
        return [self.sample(row, i) for i, row in enumerate(rows if limit is None else rows[:limit])]

    def training_prompts(self, n: int) -> list[str]:
        return [self.sample(row, i).prompt for i, row in enumerate(self._split()[0][:n])]

    def split_counts(self) -> tuple[int, int]:
        train, rest = self._split()
        return len(train), len(rest)

    def split_rows(self) -> dict:
        train = self._split()[0]
        return {"source": self.local_path() or self.source, "turns": "first only",
                "training_question_ids": [row["question_id"] for row in train],
                "evaluation": f"the other questions of category {self.category}" if self.category else
                "the other questions, round-robin over categories"}

    def to_sample(self, row: dict, index: int) -> Sample:
        return Sample(id=f"spec_bench/{row['question_id']}", prompt=row["turns"][0], reference=row.get("reference"),
                      meta={"category": row["category"]})

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        return {}


def _round_robin(groups: list[list[dict]]) -> list[dict]:
    return [row for row in chain.from_iterable(zip_longest(*groups)) if row is not None]
