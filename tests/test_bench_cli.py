"""`python run.py` bench: one-line errors for bad inputs, and a run interrupted by Ctrl-C that resumes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NO_MODEL = ("--model", "/nonexistent/model.gguf")  # reached only if the check under test did not fire first
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=ENV)


def one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr


def error_line(out: subprocess.CompletedProcess, *fragments: str) -> None:
    """An error found after the run's first notices (the split of each task): its own one line, last, no traceback."""
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and out.stderr.count("error: ") == 1 and "Traceback" not in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in line, line


def test_unknown_task_lists_the_known_ones():
    one_line_error(run_cli("--tasks", "xsum,nope"), "unknown task 'nope'", "gsm8k", "humaneval", "spec_bench")


def test_missing_data_file(tmp_path):
    one_line_error(run_cli("--tasks", "gsm8k", "--data", str(tmp_path)), f"{tmp_path}/gsm8k/test.jsonl not found", "--data")


def test_unreachable_hub_names_data():
    one_line_error(run_cli("--tasks", "xsum"), "--data")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda():
    one_line_error(run_cli("--device", "cuda"), "--device cuda was asked for", "use cpu")


def test_negative_limit():
    one_line_error(run_cli("--limit", "-1"), "--limit must be 0 or more")


def test_set_for_a_decoder_not_in_the_run():
    one_line_error(run_cli("--set", "medusa.heads=3"), "not in --decoders")


def rows_of(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


INTERRUPTED_LIMIT = 8  # the SIGINT comes after the first row: seven generations are left, so it lands mid-run


def test_ctrl_c_keeps_rows_and_the_rerun_resumes_without_duplicates(shared_data, tmp_path):
    args = ["--tasks", "gsm8k", "--limit", str(INTERRUPTED_LIMIT), "--max-new-tokens", "4", "--warmup", "0",
            "--device", "cpu", "--data", str(shared_data), "--out", str(tmp_path)]
    # SIGINT's default action, as at a terminal: a suite started as a background job (`pytest &`) ignores SIGINT,
    # and a child that inherits that ignores the Ctrl-C this test sends
    proc = subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while len(rows_of(tmp_path)) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    first = rows_of(tmp_path)
    assert proc.returncode == 130, err[-3000:]  # caught and reported, not a crash (nor a finished run)
    assert "rerun the same command to resume" in err and 1 <= len(first) < INTERRUPTED_LIMIT
    out = run_cli(*args)
    assert out.returncode == 0, out.stderr
    rows = rows_of(tmp_path)
    assert rows[: len(first)] == first  # nothing rewritten or lost
    assert [r["sample_index"] for r in rows] == list(range(INTERRUPTED_LIMIT))  # nothing duplicated
    assert "vanilla on gsm8k:" in out.stdout and "tokens/s" in out.stdout and str(tmp_path / "results.jsonl") in out.stdout
    assert f"report: {tmp_path / 'report' / 'report.html'}" in out.stdout  # the report is written at the end
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert len(meta["command_lines"]) == 2 and meta["tasks"]["gsm8k"]["training_rows"] == [0, 200]
