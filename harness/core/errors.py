class HarnessError(Exception):
    """A user-facing error: its message is one line that names the fix. `run.py` prints it without a traceback."""
