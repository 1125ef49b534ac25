"""Resume refuses other data or another split, accepts a device written as cuda:0 or cuda; parity is counted."""
import json

import pytest
import torch

import decoders  # noqa: F401  (registers the decoders)
import tasks  # noqa: F401  (registers the tasks)
from report_rows import result_row, write_run
from test_bench_cli import run_cli
from reports.run_files import load_run
from reports.summary import format_summary
from decoders.adadecode.decoder import AdaDecode
from harness.core.errors import HarnessError
from harness.run.meta import environment, write_meta
from harness.run.recommended import resolve_settings
from tasks.base import TASKS


def _meta(tasks_info, device="cpu"):
    return {"model": "m", "dtype": "float32", "device": device, "max_new_tokens": None, "decoder_settings": {},
            "tasks": tasks_info, "command_lines": ["run"]}


def _gsm8k_file(folder, questions):
    (folder / "gsm8k").mkdir(parents=True)
    rows = [{"question": q, "answer": "#### 1"} for q in questions]
    (folder / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def test_a_rerun_with_other_data_is_refused(tmp_path):
    first = TASKS.get("gsm8k")(_gsm8k_file(tmp_path / "a", ["q1", "q2"]), 0)
    other = TASKS.get("gsm8k")(_gsm8k_file(tmp_path / "b", ["other", "rows"]), 0)
    out = tmp_path / "run"
    out.mkdir()
    write_meta(out, _meta({"gsm8k": first.split_info()}))
    write_meta(out, _meta({"gsm8k": first.split_info()}))  # the same data resumes
    with pytest.raises(HarnessError, match="holds gsm8k rows from .*sha256.*use the same --data"):
        write_meta(out, _meta({"gsm8k": other.split_info()}))


def test_the_same_path_with_changed_content_is_refused(tmp_path):
    data = _gsm8k_file(tmp_path / "a", ["q1", "q2"])
    out = tmp_path / "run"
    out.mkdir()
    write_meta(out, _meta({"gsm8k": TASKS.get("gsm8k")(data, 0).split_info()}))
    (tmp_path / "a" / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "new", "answer": "#### 2"}) + "\n")
    with pytest.raises(HarnessError, match="sha256"):
        write_meta(out, _meta({"gsm8k": TASKS.get("gsm8k")(data, 0).split_info()}))


def test_another_split_is_refused(tmp_path):
    data = _gsm8k_file(tmp_path / "a", ["q1", "q2", "q3"])
    out = tmp_path / "run"
    out.mkdir()
    write_meta(out, _meta({"gsm8k": TASKS.get("gsm8k")(data, 0).split_info()}))
    with pytest.raises(HarnessError, match="--train-rows"):
        write_meta(out, _meta({"gsm8k": TASKS.get("gsm8k")(data, 1).split_info()}))


def test_one_process_on_cuda_0_and_a_torchrun_launch_share_a_folder(tmp_path):
    write_meta(tmp_path, _meta({}, device="cuda:0"))  # a folder written before the kind was recorded
    write_meta(tmp_path, _meta({}, device="cuda"))
    with pytest.raises(HarnessError, match="device"):
        write_meta(tmp_path, _meta({}, device="cpu"))


def test_a_folder_resumes_on_its_own_runner_only(tmp_path):
    write_meta(tmp_path, _meta({}))  # a folder written before the runner was recorded ran what is now `fast`
    write_meta(tmp_path, {**_meta({}), "runner": "fast"})
    with pytest.raises(HarnessError, match="runner='fast', not 'eager'"):
        write_meta(tmp_path, {**_meta({}), "runner": "eager"})


def test_the_meta_records_the_device_kind_and_its_facts():
    class Runner:
        name, dtype, device = "m", torch.float32, torch.device("cpu")
        kernel_path, exact_chunks, layers, lm_head = "cpu-eager", False, [], torch.nn.Linear(4, 4)
        runner_kind = "eager"

    env = environment(Runner())
    assert env["device"] == "cpu" and env["device_info"]["type"] == "cpu" and env["runner"] == "eager"
    assert env["device_name"] == env["device_info"]["name"] != "x86_64"


def test_the_summary_prints_parity_as_a_count(tmp_path):
    rows = [result_row("vanilla", "t", i, 10, 1.0) for i in range(200)]
    rows += [result_row("fast", "t", i, 10, 1.0, match=i != 7) for i in range(200)]
    run = load_run(write_run(tmp_path / "run", rows))
    assert "parity 199 exact / 0 near-tie / 1 mismatch" in format_summary(run.rows, run.meta)


def _settings_meta(model, explicit, task="gsm8k"):
    """A run's meta with the decoder settings as run.py records them: given (`--set`) and used per task."""
    return {**_meta({}), "model": model, "decoder_settings": explicit,
            "settings_used": resolve_settings(model, explicit, [task])}


@pytest.fixture
def no_heads(tmp_path, monkeypatch):
    """An empty cache: no heads file holds a recommendation, so the measured table's is used."""
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "run"


def test_a_resume_with_other_given_settings_is_refused(no_heads):
    out, model = no_heads, "SmolLM2-135M-Instruct"
    out.mkdir()
    write_meta(out, _settings_meta(model, {"layerskip": {"exit_layer": 12}, "vanilla": {}}))
    write_meta(out, _settings_meta(model, {"layerskip": {"exit_layer": 12}, "vanilla": {}}))  # the same resumes
    for changed in ({"exit_layer": 16}, {}, {"exit_layer": 12, "speculations": 2}):
        with pytest.raises(HarnessError, match="holds layerskip rows made with"):
            write_meta(out, _settings_meta(model, {"layerskip": changed, "vanilla": {}}))


def test_a_resume_under_another_recommendation_is_refused(no_heads, monkeypatch):
    """The recommendation changed between the runs (a re-measured table, or `sweep --recommend` stored another)."""
    out, model = no_heads, "SmolLM2-135M-Instruct"
    out.mkdir()
    write_meta(out, _settings_meta(model, {"adadecode": {}}))
    write_meta(out, _settings_meta(model, {"adadecode": {}}))
    monkeypatch.setitem(AdaDecode.measured_settings, model, {"settings": {"gamma": 0.95, "exit_layers": "24+28"},
                                                             "source": "a later measurement"})
    with pytest.raises(HarnessError, match="holds adadecode rows on gsm8k made with .*'gamma': 0.85.*recommended"):
        write_meta(out, _settings_meta(model, {"adadecode": {}}))
    assert json.loads((out / "meta.json").read_text())["settings_used"]["gsm8k"]["adadecode"]["settings"]["gamma"] \
        == 0.85  # the refused run changed nothing


def test_a_resume_with_other_data_is_blamed_on_data_also_where_only_the_training_source_moved(tmp_path):
    """HumanEval's own rows come with its package; --data moves only the MBPP rows its heads train on."""
    for folder in ("a", "b"):
        (tmp_path / folder / "mbpp").mkdir(parents=True)
        (tmp_path / folder / "mbpp" / "test.jsonl").write_text(json.dumps({"task_id": 1, "text": folder}) + "\n")
    out = tmp_path / "run"
    out.mkdir()
    write_meta(out, _meta({"humaneval": TASKS.get("humaneval")(str(tmp_path / "a")).split_info()}))
    with pytest.raises(HarnessError, match="holds humaneval rows .*mbpp.*; use the same --data") as refused:
        write_meta(out, _meta({"humaneval": TASKS.get("humaneval")(str(tmp_path / "b")).split_info()}))
    assert "--train-rows" not in str(refused.value)


def _launched(row, launch, telemetry=True, warmup=1, commit="abc"):
    return {**row, "conditions": {"telemetry": telemetry, "warmup": warmup, "commit": commit, "launch": launch}}


def test_rows_made_under_other_conditions_are_noted_in_one_line_in_the_summary(tmp_path):
    rows = [_launched(result_row(d, "t", i, 10, 1.0), "first") for d in ("vanilla", "pld") for i in range(3)]
    rows += [_launched(result_row(d, "t", 3, 10, 1.0), "second", telemetry=False, warmup=0, commit="def")
             for d in ("vanilla", "pld")]
    run = load_run(write_run(tmp_path / "run", rows))
    (line,) = [x for x in format_summary(run.rows, run.meta).splitlines() if "MIXED CONDITIONS" in x]
    assert "telemetry: on in 6 rows, off in 2" in line and "warmup: 1 in 6 rows, 0 in 2" in line
    assert "commit: abc in 6 rows, def in 2" in line
    alike = load_run(write_run(tmp_path / "alike", rows[:6]))
    assert "MIXED CONDITIONS" not in format_summary(alike.rows, alike.meta)


def test_the_summary_counts_the_speed_up_pairs_that_cross_a_resume(tmp_path):
    rows = [_launched(result_row("vanilla", "t", i, 10, 1.0), "first") for i in range(4)]
    rows += [_launched(result_row("pld", "t", i, 10, 1.0), "first" if i == 0 else "second") for i in range(4)]
    run = load_run(write_run(tmp_path / "run", rows))
    (line,) = [x for x in format_summary(run.rows, run.meta).splitlines() if "cross a resume" in x]
    assert "3 of 4 speed-up pairs cross a resume" in line and "pld on t: 3 of 4" in line
    alike = load_run(write_run(tmp_path / "alike", rows[:5]))
    assert "cross a resume" not in format_summary(alike.rows, alike.meta)


def test_a_resumed_run_records_each_rows_conditions_and_launch(shared_data, tmp_path):
    common = ("--tasks", "gsm8k", "--data", str(shared_data), "--limit", "1", "--max-new-tokens", "4", "--device",
              "cpu", "--dtype", "float32", "--no-report", "--out", str(tmp_path))
    assert run_cli("--decoders", "vanilla", *common).returncode == 0
    resumed = run_cli("--decoders", "pld", "--no-telemetry", "--warmup", "0", *common)
    assert resumed.returncode == 0, resumed.stderr
    vanilla, pld = [json.loads(line)["conditions"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert (vanilla["telemetry"], vanilla["warmup"], pld["telemetry"], pld["warmup"]) == (True, 1, False, 0)
    assert vanilla["commit"] == pld["commit"] == json.loads((tmp_path / "meta.json").read_text())["git_commit"]
    assert vanilla["launch"] != pld["launch"]
    assert "MIXED CONDITIONS" in resumed.stdout and "1 of 1 speed-up pairs cross a resume" in resumed.stdout
