"""CNN/DailyMail (`abisee/cnn_dailymail` 3.0.0 test split): multi-sentence highlights of news articles."""
from __future__ import annotations

from tasks.base import TASKS
from tasks.sources import hub_rows
from tasks.summarization import SummarizationTask


@TASKS.register("cnndm")
class CNNDailyMail(SummarizationTask):
    document_field = "article"
    summary_field = "highlights"
    instruction = "Summarize the following news article in three sentences."
    max_new_tokens = 128
    source = "abisee/cnn_dailymail 3.0.0 test"

    def load_source_rows(self) -> list[dict]:
        return hub_rows("abisee/cnn_dailymail", "3.0.0", "test", self.name)
