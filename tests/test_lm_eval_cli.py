"""`python run.py lm-eval`: our model and local tasks handed to lm-eval's own command line."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_lm_eval(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "run.py", "lm-eval", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env)


def test_cli_run_writes_lm_eval_results_and_speed_log(shared_data, tmp_path):
    out = run_lm_eval("--data", str(shared_data), "--model_args", "pretrained=smollm2,decoder=vanilla,device=cpu",
                      "--tasks", "fastdecode_gsm8k", "--limit", "1", "--gen_kwargs", "max_gen_toks=4",
                      "--apply_chat_template", "--output_path", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    (results_file,) = tmp_path.glob("*/results_*.json")
    results = json.loads(results_file.read_text())
    assert "exact_match,last-number" in results["results"]["fastdecode_gsm8k"]
    (speed_log,) = tmp_path.glob("fastdecode_requests_*.jsonl")
    (row,) = [json.loads(line) for line in speed_log.read_text().splitlines()]
    assert row["task"] == "fastdecode_gsm8k" and 0 < row["new_tokens"] <= 4 and row["tokens_per_s"] > 0
    assert "fastdecode: 1 generation requests" in out.stdout


def test_cli_unknown_decoder_is_a_one_line_error(shared_data):
    out = run_lm_eval("--data", str(shared_data), "--model_args", "decoder=nope", "--tasks", "fastdecode_gsm8k")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: unknown decoder 'nope'")
    assert "vanilla" in out.stderr.strip().splitlines()[-1]


def test_lm_evals_own_cli_runs_a_local_task_with_the_fastdecode_model(shared_data, tmp_path):
    """The README's command for lm-eval's own command line: `python -m integrations.lm_eval` registers the backend."""
    from integrations.lm_eval.tasks import render_tasks

    include = render_tasks(shared_data, tmp_path / "tasks")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "integrations.lm_eval", "run", "--model", "fastdecode",
                          "--model_args", "pretrained=smollm2,decoder=pld,device=cpu", "--tasks", "fastdecode_gsm8k",
                          "--include_path", str(include), "--limit", "1", "--gen_kwargs", "max_gen_toks=4",
                          "--output_path", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    (results_file,) = (tmp_path / "out").glob("*/results_*.json")
    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == "fastdecode"
    assert "exact_match,last-number" in results["results"]["fastdecode_gsm8k"]


def test_the_backend_is_declared_as_an_lm_eval_models_entry_point():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["lm_eval.models"]
    module, _, name = declared["fastdecode"].partition(":")
    from importlib import import_module

    from lm_eval.api.registry import get_model

    assert getattr(import_module(module), name) is get_model("fastdecode")
