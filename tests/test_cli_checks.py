"""Bad settings, budgets and data files are refused in one line before the model loads; the split is announced."""
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from test_bench_cli import ENV, NO_MODEL, ROOT, error_line, one_line_error, run_cli

import decoders  # noqa: F401  (registers the decoders)
from harness.core.decoding import CACHE_HEADROOM
from harness.core.errors import HarnessError
from harness.run.training import prepare_heads


def test_a_mistyped_setting_names_the_decoders_settings_before_the_model_loads():
    out = run_cli("--decoders", "layerskip", "--set", "layerskip.speculatio=1", *NO_MODEL)
    one_line_error(out, "layerskip has no setting 'speculatio'", "exit_layer (int)", "speculations (int)")


def test_a_setting_of_the_wrong_type_is_refused():
    out = run_cli("--decoders", "layerskip", "--set", "layerskip.speculations=abc", *NO_MODEL)
    one_line_error(out, "speculations='abc' is not int")


def test_the_help_example_setting_is_a_real_one():
    one_line_error(run_cli("--decoders", "adadecode", "--set", "adadecode.threshold=0.9", *NO_MODEL),
                   "adadecode has no setting 'threshold'", "gamma (float)")
    out = run_cli("--decoders", "adadecode", "--set", "adadecode.gamma=0.9", *NO_MODEL)
    assert out.returncode == 2 and "GGUF file" in out.stderr and "setting" not in out.stderr


def test_a_per_decoder_sampling_setting_is_refused_with_the_run_wide_flag():
    out = run_cli("--decoders", "pld", "--set", "pld.temperature=0.5", *NO_MODEL)
    one_line_error(out, "--temperature is run-wide, not a setting of pld")


def test_sweep_grid_keys_are_checked_too():
    out = run_cli("sweep", "--decoder", "layerskip", "--grid", "speculatio=2,4", *NO_MODEL)
    one_line_error(out, "layerskip@speculatio=2 has no setting 'speculatio'")


def test_an_unknown_runner_is_refused_from_the_flag_and_from_the_environment():
    out = run_cli("--runner", "turbo", *NO_MODEL)
    assert out.returncode == 2 and "invalid choice: 'turbo'" in out.stderr and "compiled" in out.stderr
    out = subprocess.run([sys.executable, "run.py", *NO_MODEL], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**ENV, "FASTDECODE_RUNNER": "turbo"})
    one_line_error(out, "FASTDECODE_RUNNER=turbo names no runner", "eager, fast, compiled, captured")


def test_zero_new_tokens_is_refused():
    one_line_error(run_cli("--max-new-tokens", "0"), "--max-new-tokens must be 1 or more")


def _gsm8k(tmp_path, lines):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(line + "\n" for line in lines))
    return str(tmp_path)


ROW = json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"})


def test_a_malformed_line_names_file_and_line(tmp_path):
    data = _gsm8k(tmp_path, [ROW, '{"question": "oops",'])
    one_line_error(run_cli("--tasks", "gsm8k", "--data", data, "--train-rows", "0", *NO_MODEL),
                   "gsm8k/test.jsonl line 2: not valid JSON")


def test_a_missing_field_names_file_line_and_field(tmp_path):
    data = _gsm8k(tmp_path, [ROW, json.dumps({"question": "What is 2 + 2?"})])
    one_line_error(run_cli("--tasks", "gsm8k", "--data", data, "--train-rows", "0", *NO_MODEL),
                   "gsm8k/test.jsonl line 2: no field 'answer'")


def test_a_file_of_training_rows_only_is_refused_naming_train_rows(tmp_path):
    data = _gsm8k(tmp_path, [ROW] * 5)
    one_line_error(run_cli("--tasks", "gsm8k", "--data", data, *NO_MODEL),
                   "all 5 rows", "reserved for training heads", "--train-rows")


def test_the_split_is_announced_and_train_rows_moves_it(tmp_path):
    data = _gsm8k(tmp_path, [ROW] * 5)
    out = run_cli("--tasks", "gsm8k", "--data", data, "--train-rows", "3", "--limit", "1", "--max-new-tokens", "2",
                  "--warmup", "0", "--device", "cpu", "--no-report", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "gsm8k: 5 rows from" in out.stderr and "3 reserved for training heads (never scored), 2 scored" in out.stderr
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["tasks"]["gsm8k"]["training_rows"] == [0, 3]


def test_a_text_file_named_gguf_is_refused_as_not_a_gguf_file(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("not a model\n")
    error_line(run_cli("--tasks", "gsm8k", "--data", _gsm8k(tmp_path, [ROW] * 2), "--train-rows", "0",
                       "--limit", "1", "--model", str(fake)),
                   f"--model {fake} is not a GGUF file", "a checkpoint folder")


def test_an_empty_data_file_is_refused_as_empty_not_with_train_rows_advice(tmp_path):
    out = run_cli("--tasks", "gsm8k", "--data", _gsm8k(tmp_path, []), "--train-rows", "0", *NO_MODEL)
    one_line_error(out, "gsm8k/test.jsonl holds no rows", "--data")
    assert "--train-rows" not in out.stderr


@pytest.mark.parametrize("model, flag", [("SmolLM2-135M-Instruct", ""),  # the default --model says nothing
                                         ("Qwen2.5-Coder-0.5B-Instruct", " --model qwen2.5-coder-0.5b"),
                                         ("/models/other.gguf", " --model /models/other.gguf")])
def test_the_train_heads_command_for_missing_heads_carries_the_runs_model_and_data(tmp_path, monkeypatch, model, flag):
    """The command a refused run prints must train the heads it lacks from the same data (offline: --data)."""
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))  # no heads
    with pytest.raises(HarnessError) as refused:
        prepare_heads(SimpleNamespace(name=model), {"adadecode": {}}, ["gsm8k"], "../shared/data", refuse="--no-train")
    assert str(refused.value).endswith(f"train them with: python run.py train-heads --decoder adadecode --task gsm8k"
                                       f"{flag} --data ../shared/data (--no-train)")


def _run_on(tmp_path, question, *flags):
    data = _gsm8k(tmp_path, [json.dumps({"question": question, "answer": "#### 2"})])
    return run_cli("--tasks", "gsm8k", "--data", data, "--train-rows", "0", "--warmup", "0", "--device", "cpu",
                   "--dtype", "float32", "--no-report", "--out", str(tmp_path / "run"), *flags)


def test_a_budget_beyond_the_models_context_is_refused_before_any_generation_naming_the_largest_that_fits(tmp_path):
    out = _run_on(tmp_path, "What is 1 + 1?", "--max-new-tokens", "100000")
    error_line(out, "more than SmolLM2-135M-Instruct's context of 8192 positions (max_position_embeddings)")
    fits = int(re.search(r"pass --max-new-tokens (\d+) or less", out.stderr).group(1))
    assert 8192 - CACHE_HEADROOM - 100 < fits < 8192 - CACHE_HEADROOM  # less the prompt's few tokens
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_a_prompt_longer_than_the_models_context_is_refused_naming_the_sample(tmp_path):
    out = _run_on(tmp_path, "one two three " * 3000, "--max-new-tokens", "1")
    error_line(out, "the prompt of gsm8k/0 alone takes", "of the 8192 positions", "--limit")
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_an_unknown_lm_eval_task_is_one_line_naming_how_to_list_the_task_names():
    out = subprocess.run([sys.executable, "-m", "integrations.lm_eval", "run", "--model", "fastdecode", "--tasks",
                          "nosuchtask", "--limit", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    error_line(out, "lm-eval has no task nosuchtask", "python -m integrations.lm_eval ls tasks")
    error_line(run_cli("lm-eval", "--tasks", "nosuchtask", "--limit", "1"), "lm-eval has no task nosuchtask",
               "python run.py lm-eval ls tasks")
