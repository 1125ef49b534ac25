"""The code sandbox: a pass needs the program to run to its end; hostile programs are refused or fail to score."""
import http.server
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import tasks  # noqa: F401  (registers the tasks)
from tasks.base import TASKS
from tasks.sandbox import BUBBLEWRAP, PROCESS_GROUP, Isolation, isolation, run_program

FALLBACK = Isolation(PROCESS_GROUP, "forced by the test")
BOTH = [pytest.param(None, id="strongest"), pytest.param(FALLBACK, id="process-group")]
needs_bubblewrap = pytest.mark.skipif(isolation().tool != BUBBLEWRAP, reason=f"no bubblewrap: {isolation().detail}")


def _sleepers(marker: str, wait_s: float = 2.0) -> list[int]:
    """Host pids of live `sleep <marker>` processes (a program's descendants, seen from outside any namespace),
    after giving killed ones `wait_s` to go."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                alive = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
                if alive and Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                    found.append(int(pid))
            except OSError:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _marker() -> str:
    return f"{600 + uuid.uuid4().int % 10**6 / 10**6:.6f}"  # a unique duration for `sleep`


@pytest.mark.parametrize("where", BOTH)
def test_an_early_exit_does_not_score(where):
    assert run_program("x = 1\n", where=where)  # the control: a program that runs to its end passes
    assert not run_program("import os\nos._exit(0)\n", where=where)
    assert not run_program("import sys\nsys.exit(0)\nraise AssertionError\n", where=where)


def test_an_early_exit_scores_zero_on_humaneval_and_mbpp(shared_data):
    for task_name, data in (("humaneval", None), ("mbpp", str(shared_data))):
        task = TASKS.get(task_name)(data)
        sample = task.samples(1)[0]
        for reply in ("```python\nimport os\nos._exit(0)\n```", "```python\nimport sys\nsys.exit(0)\n```"):
            assert task.score(sample, reply)["pass@1"] == 0.0, (task_name, reply)


def test_the_reliability_guard_is_in_force():
    assert run_program("import os, shutil, subprocess\n"
                       "assert os.system is None and os.kill is None and os.fork is None\n"
                       "assert subprocess.Popen is None and shutil.rmtree is None\n")


@pytest.mark.parametrize("where", BOTH)
def test_the_child_has_limits_on_memory_file_size_cpu_time_and_processes(where):
    limits = "{l[:26].strip(): l[26:].split()[0] for l in open('/proc/self/limits')}"
    assert run_program(f"limits = {limits}\nassert all(limits[k] != 'unlimited' for k in "
                       "('Max address space', 'Max file size', 'Max cpu time', 'Max processes')), limits\n",
                       where=where)
    assert not run_program("x = bytearray(64 * 2**20)", memory_limit_bytes=48 * 2**20, where=where)
    assert not run_program("open('big', 'wb').write(b'0' * 32 * 2**20)\n", where=where)


@pytest.mark.parametrize("where", BOTH)
def test_a_forked_child_does_not_outlive_a_program_that_returned(where):
    marker = _marker()
    program = (f"import posix, time\nif posix.fork() == 0:\n    posix.execv('/usr/bin/sleep', ['sleep', '{marker}'])\n"
               "time.sleep(0.5)\n")
    assert run_program(program, where=where)
    assert not _sleepers(marker)


@pytest.mark.parametrize("where", BOTH)
def test_a_setsid_child_does_not_survive_the_timeout(where):
    marker = _marker()
    program = (f"import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n"
               f"    posix.execv('/usr/bin/sleep', ['sleep', '{marker}'])\ntime.sleep(30)\n")
    started = time.monotonic()
    assert not run_program(program, timeout_s=1.5, where=where)
    assert time.monotonic() - started < 10
    assert not _sleepers(marker)


def test_a_program_that_stops_its_supervisor_is_killed_with_its_whole_session():
    """Without bubblewrap the program can reach its supervisor: the harness then kills the whole session."""
    marker = _marker()
    program = ("import os, posix, signal, time\n"
               f"if posix.fork() == 0:\n    posix.execv('/usr/bin/sleep', ['sleep', '{marker}'])\n"
               "posix.kill(os.getppid(), signal.SIGSTOP)\ntime.sleep(30)\n")
    assert not run_program(program, timeout_s=1.0, where=FALLBACK)
    assert not _sleepers(marker)


def test_the_child_is_a_clean_process(tmp_path):
    """No open file, module or environment of the harness reaches the child (a fork would inherit them)."""
    import torch  # noqa: F401  (loaded here, must not be in the child)

    with open(tmp_path / "harness-file", "w") as held:
        fd = held.fileno()
        os.environ["FASTDECODE_SECRET_TEST"] = "1"
        try:
            assert run_program(f"import os, sys\ntry:\n    os.fstat({fd})\nexcept OSError:\n    pass\n"
                               "else:\n    raise SystemExit(1)\n"
                               "assert 'torch' not in sys.modules\n"
                               "assert 'FASTDECODE_SECRET_TEST' not in os.environ\n")
        finally:
            del os.environ["FASTDECODE_SECRET_TEST"]


@needs_bubblewrap
def test_the_harness_environment_is_not_readable_through_proc():
    """A secret in the harness's environment (as started: /proc/<pid>/environ shows that) stays out of reach."""
    program = ("import os\npid, found = os.getpid(), b''\n"
               "while pid > 1:\n"
               "    pid = int(open(f'/proc/{pid}/stat').read().rpartition(')')[2].split()[1])\n"
               "    try:\n"
               "        found += open(f'/proc/{pid}/environ', 'rb').read()\n"
               "    except OSError:\n"
               "        pass\n"
               "assert b'FASTDECODE_SECRET_TEST=leak' in found\n")
    harness = f"from tasks.sandbox import run_program\nprint(run_program({program!r}))"
    scored = subprocess.run([sys.executable, "-c", harness], env={**os.environ, "FASTDECODE_SECRET_TEST": "leak"},
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert scored.stdout.strip() == "False", scored.stderr


@needs_bubblewrap
def test_the_users_files_are_not_readable(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    for path in (secret, Path(__file__), Path.home() / ".cache"):
        assert path.exists()
        assert not run_program(f"import os\nassert os.path.exists({str(path)!r})\n"), path


@needs_bubblewrap
def test_a_write_outside_the_scratch_folder_fails(tmp_path):
    marker = tmp_path / "written-by-the-program"
    assert run_program("open('scratch.txt', 'w').write('ok')\n")  # the control: its own scratch folder is writable
    assert not run_program(f"open({str(marker)!r}, 'w').write('x')\n")
    assert not run_program("open('/usr/fastdecode-marker', 'w').write('x')\n")
    assert not marker.exists() and not Path("/usr/fastdecode-marker").exists()


@needs_bubblewrap
def test_the_network_is_unreachable_even_on_loopback():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        program = f"import urllib.request\nurllib.request.urlopen({url!r}, timeout=3).read()\n"
        assert run_program(program, where=FALLBACK)  # the control: the server answers outside the sandbox
        assert not run_program(program)
    finally:
        server.shutdown()


def test_a_weaker_isolation_is_recorded_in_the_run_and_warned_in_its_report(monkeypatch, capsys):
    import tasks.sandbox as sandbox
    from reports.verdict import _isolation_warnings
    from harness.run.pipeline import code_isolation

    monkeypatch.setattr(sandbox, "isolation", lambda: Isolation(PROCESS_GROUP, "bubblewrap is not installed"))
    meta = code_isolation([TASKS.get("humaneval")()])
    assert meta["code_isolation"]["weaker"] and "weaker isolation" in capsys.readouterr().err
    assert code_isolation([TASKS.get("gsm8k")()]) == {}  # no generated code runs, nothing to say
    [warning] = _isolation_warnings(meta)
    assert warning.level == "caution" and "WEAKER CODE ISOLATION" in warning.text
    assert not _isolation_warnings({"code_isolation": Isolation(BUBBLEWRAP, "bwrap").as_dict()})
