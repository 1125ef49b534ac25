"""GSM8K (`openai/gsm8k` main test split): grade-school maths, scored by exact match of the final number.

The reference's final number follows `####`; the reply's is the number after its last `####` if it writes one,
else its last number. Thousands separators, `$` and trailing `.0` are ignored. The first 200 rows train heads.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from tasks.base import TASKS, Sample, Task
from tasks.sources import hub_rows

PROMPT = "{question}\nSolve it step by step, then give the final answer on the last line as '#### <number>'."
NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> Decimal | None:
    """The answer a text ends on, as a number (None when it holds no number)."""
    if "####" in text:
        found = NUMBER.findall(text.rsplit("####", 1)[1])[:1]
    else:
        found = NUMBER.findall(text)[-1:]
    if not found:
        return None
    try:
        return Decimal(found[0].replace(",", "").replace("$", ""))
    except InvalidOperation:
        return None


@TASKS.register("gsm8k")
class GSM8K(Task):
    max_new_tokens = 256
    train_rows = 200
    fields = {"question": str, "answer": str}
    source = "openai/gsm8k main test"

    def load_source_rows(self) -> list[dict]:
        return hub_rows("openai/gsm8k", "main", "test", self.name)

    def to_sample(self, row: dict, index: int) -> Sample:
        return Sample(id=f"gsm8k/{index}", prompt=PROMPT.format(question=row["question"]), reference=row["answer"])

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        expected, got = final_number(sample.reference), final_number(completion)
        return {"exact_match": float(expected is not None and got is not None and expected == got)}
