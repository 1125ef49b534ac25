"""Summarisation tasks scored with ROUGE-1/2/L F-measures (`rouge-score`, Porter stemming)."""
from __future__ import annotations

from typing import ClassVar

from tasks.base import Sample, Task

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class SummarizationTask(Task):
    """Rows hold a `document_field` to summarise and a `summary_field` reference; the first 200 rows train heads."""

    document_field: ClassVar[str]
    summary_field: ClassVar[str]
    instruction: ClassVar[str]
    train_rows = 200

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.fields = {cls.document_field: str, cls.summary_field: str}
    _scorer = None

    def to_sample(self, row: dict, index: int) -> Sample:
        return Sample(id=f"{self.name}/{row.get('id', index)}",
                      prompt=f"{self.instruction}\n\n{row[self.document_field]}", reference=row[self.summary_field])

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        if SummarizationTask._scorer is None:
            from rouge_score import rouge_scorer  # imported when first scoring: the harness runs without it

            SummarizationTask._scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
        scores = SummarizationTask._scorer.score(sample.reference, completion)
        return {name: scores[name].fmeasure for name in ROUGE_TYPES}
