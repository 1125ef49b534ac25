"""The model ladder (`run.py report RUN --model-runs RUN...`): per task and decoder, each model's speed-up side by
side with its interval, parity, quality and the method's own statistic, on small hand-made runs."""
import subprocess
import sys
from pathlib import Path

from report_rows import result_row, write_run
from reports.ladder import acceptance_by_depth, exit_trace, model_ladder
from reports.run_files import load_run

ROOT = Path(__file__).resolve().parents[1]
EXITS = [30, 24, 30, 28]  # a 30-layer model: half the tokens at full depth; ideal 30 / 28 = 1.071
ROUNDS = [1, 2, 4, 3]  # tokens per round, the bonus included: 2.5 per step; depth d accepted in 3, 2, 1 of 4


def model_run(folder: Path, model: str, speedup: float, n: int = 3) -> Path:
    return write_run(folder, model_rows(speedup, n), {"model": model, "dtype": "bfloat16"})


def model_rows(speedup: float, n: int = 3) -> list[dict]:
    rows = []
    for i in range(n):
        vanilla_s = 1.0 + 0.1 * i
        rows.append(result_row("vanilla", "humaneval", i, 40, vanilla_s, quality={"pass@1": 0.0}))
        rows.append(result_row("adadecode", "humaneval", i, 40, vanilla_s / speedup, quality={"pass@1": 0.0},
                               stats={"exit_layers": EXITS}, parity_class="exact"))
        rows.append(result_row("medusa", "humaneval", i, 40, vanilla_s / (speedup + 0.5), quality={"pass@1": 1.0},
                               stats={"acceptance_lengths": ROUNDS}, parity_class="near_tie", match=False))
    return rows


def test_each_method_statistic_is_read_from_its_rows(tmp_path):
    rows = load_run(model_run(tmp_path / "a", "smollm2", 1.5)).rows
    assert exit_trace(rows[rows["decoder"] == "adadecode"]) == "exits 24 25%, 28 25%, full 50%; ideal 1.071x"
    medusa = rows[rows["decoder"] == "medusa"]
    assert acceptance_by_depth(medusa) == "2.50 tokens per step; by depth 0.75 / 0.50 / 0.25"
    assert exit_trace(rows[rows["decoder"] == "medusa"]) == acceptance_by_depth(rows[rows["decoder"] == "vanilla"]) == ""


def test_the_ladder_puts_each_models_speedup_side_by_side(tmp_path):
    runs = [load_run(model_run(tmp_path / "a", "smollm2", 1.5)), load_run(model_run(tmp_path / "b", "qwen", 2.0))]
    ladder = model_ladder(runs)
    assert list(ladder.index) == [("humaneval", "vanilla"), ("humaneval", "adadecode"), ("humaneval", "medusa")]
    assert list(ladder.columns[:2]) == ["speed-up (95 % CI): smollm2", "speed-up (95 % CI): qwen"]
    assert ladder.loc[("humaneval", "adadecode"), "speed-up (95 % CI): smollm2"] == "1.500 (1.500–1.500)"
    assert ladder.loc[("humaneval", "adadecode"), "speed-up (95 % CI): qwen"] == "2.000 (2.000–2.000)"
    assert ladder.loc[("humaneval", "medusa"), "speed-up (95 % CI): qwen"].startswith("2.500")
    assert ladder.loc[("humaneval", "vanilla"), "speed-up (95 % CI): qwen"] == "reference"
    assert ladder.loc[("humaneval", "medusa"), "parity exact / near-tie / mismatch: qwen"] == "0 / 3 / 0"
    assert ladder.loc[("humaneval", "medusa"), "quality: smollm2"] == "pass@1 1.000"
    assert ladder.loc[("humaneval", "adadecode"), "method statistic: qwen"].endswith("ideal 1.071x")


def test_a_run_without_a_decoder_leaves_its_cells_empty_and_same_models_are_told_apart(tmp_path):
    full = load_run(model_run(tmp_path / "a", "smollm2", 1.5))
    vanilla_only = load_run(write_run(tmp_path / "b", [result_row("vanilla", "humaneval", 0, 40, 1.0)],
                                      {"model": "smollm2"}))
    ladder = model_ladder([full, vanilla_only])
    assert ladder.loc[("humaneval", "adadecode"), "speed-up (95 % CI): smollm2 (b)"] == ""


def test_runs_on_two_runners_are_labelled_by_runner(tmp_path):
    fast = load_run(write_run(tmp_path / "a", model_rows(1.5), {"model": "smollm2"}))  # older runs: no runner
    eager = load_run(write_run(tmp_path / "b", model_rows(1.1), {"model": "smollm2", "runner": "eager"}))
    ladder = model_ladder([fast, eager])
    assert ladder.loc[("humaneval", "adadecode"), "speed-up (95 % CI): smollm2, --runner fast"].startswith("1.500")
    assert ladder.loc[("humaneval", "adadecode"), "speed-up (95 % CI): smollm2, --runner eager"].startswith("1.100")


def test_report_with_model_runs_writes_the_ladder(tmp_path):
    a, b = model_run(tmp_path / "a", "smollm2", 1.5), model_run(tmp_path / "b", "qwen", 2.0)
    out = subprocess.run([sys.executable, "run.py", "report", str(a), "--model-runs", str(b), "--out",
                          str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "### model ladder" in markdown and "speed-up (95 % CI): qwen" in markdown
