"""lm-eval's own command line with the `fastdecode` model registered (lm-eval 0.4 reads no plugin entry points):

    python -m integrations.lm_eval run --model fastdecode --model_args decoder=pld --tasks TASK --include_path DIR

Every argument is lm-eval's; `python run.py lm-eval` adds the harness's local task templates and speed log on top.
"""
from __future__ import annotations

import sys

from lm_eval.__main__ import cli_evaluate

from integrations.lm_eval import backend  # noqa: F401  (registers "fastdecode" with lm-eval)


def main() -> int:
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
