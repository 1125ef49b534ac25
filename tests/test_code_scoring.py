"""HumanEval scoring keeps the prompt's helper functions; generated code runs in a clean, memory-limited child."""
import os
from concurrent.futures import ThreadPoolExecutor

import tasks  # noqa: F401  (registers the tasks)
from tasks.base import TASKS
from tasks.code_execution import run_program


def _signature_and_body(problem: dict) -> str:
    """A reply made of the entry point's signature and the canonical solution alone (no helpers)."""
    signature = next(line for line in problem["prompt"].splitlines()
                     if line.startswith(f"def {problem['entry_point']}("))
    return f"```python\n{signature}\n{problem['canonical_solution']}```"


def test_signature_plus_canonical_solution_passes_all_164_problems():
    task = TASKS.get("humaneval")()
    samples = task.samples()
    assert len(samples) == 164
    with ThreadPoolExecutor(max_workers=2) as pool:
        scores = list(pool.map(lambda s: task.score(s, _signature_and_body(s.reference))["pass@1"], samples))
    failed = [s.id for s, score in zip(samples, scores) if score != 1.0]
    assert not failed, failed  # HumanEval/10, /32, /38, /50 need the prompt's helper functions


def test_the_child_has_a_memory_limit():
    limit = "[l for l in open('/proc/self/limits') if l.startswith('Max address space')][0].split()[3]"
    assert run_program(f"soft = {limit}\nassert soft != 'unlimited' and int(soft) <= 8 * 2**30, soft\n")
    assert not run_program("x = bytearray(64 * 2**20)", memory_limit_bytes=48 * 2**20)


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


def test_a_program_that_hangs_is_killed_with_its_children():
    assert not run_program("import time\ntime.sleep(30)", timeout_s=1.0)
