"""Task plugins. Importing this package registers every task in `tasks.base.TASKS`."""
from tasks import humaneval  # noqa: F401
