"""lm-eval's own command line with the `fastdecode` model registered (lm-eval 0.4 reads no plugin entry points):

    python -m integrations.lm_eval run --model fastdecode --model_args decoder=pld --tasks TASK --include_path DIR

Every argument is lm-eval's; `python run.py lm-eval` adds the harness's local task templates and speed log on top.
Bad input (an unknown task or decoder) is one line on stderr and exit code 2.
"""
from __future__ import annotations

import sys

from harness.core.errors import HarnessError
from integrations.lm_eval import backend  # noqa: F401  (registers "fastdecode" with lm-eval)
from integrations.lm_eval.cli import evaluate


def main() -> int:
    try:
        evaluate(sys.argv, "python -m integrations.lm_eval ls tasks (--include_path DIR for a folder of task YAMLs)")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
