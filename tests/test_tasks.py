"""Each task's loader and scorer on real rows from ../shared/data (HumanEval from its package)."""
import json

import pytest

import tasks  # noqa: F401
from harness.core.errors import HarnessError
from tasks.base import TASKS
from tasks.code_execution import extract_code
from tasks.gsm8k import final_number


def test_gsm8k_reference_with_commas_and_hashes_scores_exact_match(shared_data):
    task = TASKS.get("gsm8k")(str(shared_data))
    samples = task.samples()
    sample = next(s for s in samples if "," in s.reference.rsplit("####", 1)[1])  # a real answer like "#### 1,600"
    answer = sample.reference.rsplit("####", 1)[1].strip()
    assert task.score(sample, f"Step by step... so the total is {answer}.\n#### {answer}") == {"exact_match": 1.0}
    assert task.score(sample, f"The answer is ${answer.replace(',', '')}.") == {"exact_match": 1.0}
    assert task.score(sample, "#### 7, not 12") == {"exact_match": 0.0}
    assert task.score(sample, "I do not know.") == {"exact_match": 0.0}


def test_final_number_reads_after_the_last_hashes_or_the_last_number():
    assert final_number("12 apples, 3 pears\n#### 1,234") == 1234
    assert final_number("it costs $1,000.50 then 18") == 18
    assert final_number("#### $2,125.0") == 2125


def test_training_rows_are_never_scored_and_order_is_fixed(shared_data):
    for name in ("xsum", "gsm8k", "mbpp"):
        task = TASKS.get(name)(str(shared_data))
        prompts = task.training_prompts(10_000)
        samples = task.samples()
        assert len(prompts) == task.train_rows > 0
        assert not set(prompts) & {s.prompt for s in samples}
        assert [s.id for s in TASKS.get(name)(str(shared_data)).samples(5)] == [s.id for s in samples[:5]]


def test_xsum_rouge_on_real_rows(shared_data):
    task = TASKS.get("xsum")(str(shared_data))
    sample = task.samples(1)[0]
    assert sample.reference and "Summarize" in sample.prompt
    assert task.score(sample, sample.reference) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    partial = task.score(sample, " ".join(sample.reference.split()[:5]))
    assert 0 < partial["rouge1"] < 1


def test_cnndm_loads_a_local_copy_and_scores_rouge(shared_data, tmp_path):
    """No CNN/DM copy is shared: Spec-Bench's summarization rows are CNN/DM articles with their highlights."""
    rows = [json.loads(line) for line in (shared_data / "spec_bench" / "question.jsonl").read_text().splitlines()]
    cnndm = [{"id": str(r["question_id"]), "article": r["turns"][0].removeprefix("Summarize: "),
              "highlights": r["reference"][0]} for r in rows if r["category"] == "summarization"]
    (tmp_path / "cnndm").mkdir()
    (tmp_path / "cnndm" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cnndm))
    task = TASKS.get("cnndm")(str(tmp_path))
    task.train_rows = 40  # these 80 rows are fewer than the 200 reserved from the real split
    sample = task.samples(1)[0]
    assert len(task.samples()) == 40 and sample.id == f"cnndm/{cnndm[40]['id']}"
    assert task.score(sample, sample.reference)["rougeL"] == 1.0


def test_humaneval_canonical_solution_passes_and_a_wrong_one_fails():
    task = TASKS.get("humaneval")()
    samples = task.samples()
    assert len(samples) == 164
    sample = samples[2]
    problem = sample.reference
    whole = f"Here you go:\n```python\n{problem['prompt']}{problem['canonical_solution']}```\nIt works."
    assert task.score(sample, whole) == {"pass@1": 1.0}
    assert task.score(sample, problem["canonical_solution"]) == {"pass@1": 1.0}  # a bare body continuation
    wrong = f"```python\ndef {problem['entry_point']}(*args):\n    return None\n```"
    assert task.score(sample, wrong) == {"pass@1": 0.0}


def test_humaneval_trains_on_mbpp_rows(shared_data):
    task = TASKS.get("humaneval")(str(shared_data))
    mbpp = TASKS.get("mbpp")(str(shared_data))
    assert task.training_prompts(3) == mbpp.training_prompts(3)
    assert task.split_info()["training_source"]["task"] == "mbpp"


def test_generated_code_never_runs_in_the_harness_process():
    task = TASKS.get("humaneval")()
    sample = task.samples(1)[0]
    task.score(sample, "```python\nimport builtins\nbuiltins.HARNESS_TOUCHED = True\n```")
    import builtins

    assert not hasattr(builtins, "HARNESS_TOUCHED")


def test_mbpp_reference_code_passes_and_wrong_code_fails(shared_data):
    task = TASKS.get("mbpp")(str(shared_data))
    sample = task.samples(1)[0]
    assert sample.reference["test_list"][0] in sample.prompt
    assert task.score(sample, f"```python\n{sample.reference['code']}\n```") == {"pass@1": 1.0}
    assert task.score(sample, "```python\ndef nothing():\n    pass\n```") == {"pass@1": 0.0}


def test_extract_code_takes_the_first_fenced_block():
    assert extract_code("intro\n```python\nx = 1\n```\nmore\n```\ny = 2\n```") == "x = 1\n"
    assert extract_code("```python\nx = 1\n") == "x = 1\n"  # cut off before the closing fence
    assert extract_code("x = 1") == "x = 1"


def test_spec_bench_first_turns_cover_every_category(shared_data):
    task = TASKS.get("spec_bench")(str(shared_data))
    samples = task.samples()
    train = task.split_info()["training_question_ids"]
    assert len(samples) + len(train) == 480
    assert not {s.id for s in samples} & {f"spec_bench/{q}" for q in train}
    assert len({s.meta["category"] for s in task.samples(13)}) == 13
    assert task.score(samples[0], "anything") == {}


def test_missing_data_file_names_the_fix(tmp_path):
    with pytest.raises(HarnessError, match="--data"):
        TASKS.get("xsum")(str(tmp_path)).samples(1)


def test_unreachable_hub_fails_fast_naming_data(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match="--data"):
        TASKS.get("gsm8k")().samples(1)
    with pytest.raises(HarnessError, match="--data"):
        TASKS.get("spec_bench")().samples(1)


def test_a_spec_bench_category_runs_alone_with_its_own_name(shared_data):
    from harness.core.errors import HarnessError
    from tasks.base import build_task, parse_task_list

    task = build_task("spec_bench:summarization", str(shared_data))
    samples = task.samples()
    assert task.name == "spec_bench:summarization" and task.split_counts() == (16, 64)
    assert len(samples) == 64 and {s.meta["category"] for s in samples} == {"summarization"}
    assert {s.id for s in samples} <= {s.id for s in build_task("spec_bench", str(shared_data)).samples()}
    with pytest.raises(HarnessError, match="known categories: .*summarization"):
        build_task("spec_bench:summ", str(shared_data))
    with pytest.raises(HarnessError, match="has no subsets"):
        build_task("xsum:a", str(shared_data))
    with pytest.raises(HarnessError, match="unknown task 'nope'"):
        parse_task_list("xsum,nope:x")
