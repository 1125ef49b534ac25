"""HumanEval scoring keeps the prompt's helper functions; generated code runs in the sandbox (tests/test_sandbox.py)."""
from concurrent.futures import ThreadPoolExecutor

import tasks  # noqa: F401  (registers the tasks)
from tasks.base import TASKS


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
