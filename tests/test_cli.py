import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_list_names_decoders_and_tasks():
    out = run_cli("--list")
    assert out.returncode == 0
    assert "vanilla" in out.stdout and "humaneval" in out.stdout


def test_unknown_decoder_is_a_one_line_error_listing_the_known_ones():
    out = run_cli("--decoders", "nope", "--tasks", "humaneval")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "unknown decoder 'nope'" in out.stderr and "vanilla" in out.stderr


def test_minimal_run_writes_one_row_per_decoder_and_sample(tmp_path):
    out = run_cli("--decoders", "vanilla", "--tasks", "humaneval", "--limit", "2", "--max-new-tokens", "8",
                  "--device", "cpu", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "vanilla on humaneval:" in out.stdout and "tokens/s" in out.stdout
    rows = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2
