"""lm-eval's own command line, with its answer to an unknown task turned into one line that names the fix."""
from __future__ import annotations

import sys

from harness.core.errors import HarnessError

TASKS_NOT_FOUND = "Tasks not found: "  # lm-eval 0.4's ValueError for task names it does not know


def evaluate(argv: list[str], list_command: str) -> None:
    """Runs lm-eval's command line on `argv` (as `sys.argv`: the program's name first); an unknown task is a
    HarnessError naming `list_command`, the command that lists the task names."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = argv
    try:
        cli_evaluate()
    except ValueError as exc:
        if not str(exc).startswith(TASKS_NOT_FOUND):
            raise
        raise HarnessError(f"lm-eval has no task {str(exc).removeprefix(TASKS_NOT_FOUND)}; see the task names with: "
                           f"{list_command}") from None
