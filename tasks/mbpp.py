"""MBPP (`google-research-datasets/mbpp`, full test split, 500 problems): write a function, score pass@1.

The prompt gives the task text and its test asserts (so the function name is known, as in the MBPP paper); the
asserts run in a separate process. The first 100 rows are kept for training heads (HumanEval's heads too).
"""
from __future__ import annotations

from tasks.base import TASKS, Sample, Task
from tasks.code_execution import extract_code, passes
from tasks.sources import hub_rows

PROMPT = "{text}\nYour code should pass these tests:\n{tests}\nReply with the code in one Python code block."


@TASKS.register("mbpp")
class MBPP(Task):
    max_new_tokens = 256
    runs_code = True
    train_rows = 100
    fields = {"task_id": int | str, "text": str, "test_list": list[str]}
    source = "google-research-datasets/mbpp full test"

    def load_source_rows(self) -> list[dict]:
        return hub_rows("google-research-datasets/mbpp", "full", "test", self.name)

    def to_sample(self, row: dict, index: int) -> Sample:
        return Sample(id=f"mbpp/{row['task_id']}", prompt=PROMPT.format(text=row["text"], tests="\n".join(row["test_list"])),
                      reference=row)

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        row = sample.reference
        # check_correctness runs `prompt + completion + test` then `check(entry_point)`: the asserts sit in check().
        test = "def check(_):\n" + "".join(f"    {t}\n" for t in row["test_list"])
        return {"pass@1": float(passes(row.get("test_setup_code") or "", "\n" + extract_code(completion), test, "None"))}
