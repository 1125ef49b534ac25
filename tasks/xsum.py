"""XSum (`EdinburghNLP/xsum` test split): one-sentence summaries of BBC articles."""
from __future__ import annotations

from tasks.base import TASKS
from tasks.sources import hub_rows
from tasks.summarization import SummarizationTask


@TASKS.register("xsum")
class XSum(SummarizationTask):
    document_field = "document"
    summary_field = "summary"
    instruction = "Summarize the following article in one sentence."
    max_new_tokens = 64
    stop_strings = ("\n\n",)
    source = "EdinburghNLP/xsum test"

    def load_source_rows(self) -> list[dict]:
        return hub_rows("EdinburghNLP/xsum", None, "test", self.name)
