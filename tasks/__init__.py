"""Task plugins. Importing this package registers every task in `tasks.base.TASKS`."""
from tasks import cnndm, gsm8k, humaneval, mbpp, spec_bench, xsum  # noqa: F401
