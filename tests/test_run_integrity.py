"""One writer per run folder, damaged lines set aside, comparable runs only, and exit codes CI can read."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from report_rows import result_row, write_run
from test_bench_cli import NO_MODEL, ROOT, error_line, one_line_error, run_cli

from harness.core.errors import HarnessError
from harness.checks.distribution import checked_decoders
from harness.run.results import ResultStore
from harness.run.run_lock import claim, release
from reports.run_files import load_run
from harness.run.pipeline import failed_decoders

HOLD = "import sys, time\nfrom pathlib import Path\nfrom harness.run.run_lock import claim\nclaim(Path(sys.argv[1]))\n" \
       "print('held', flush=True)\ntime.sleep(60)\n"


def _holder(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_at_once_naming_the_holders_pid(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(HarnessError, match=f"being written by process {holder.pid}"):
            claim(tmp_path)
        out = run_cli("--tasks", "humaneval", "--limit", "1", "--out", str(tmp_path))
        one_line_error(out, f"being written by process {holder.pid}", "another --out")
    finally:
        holder.kill()
        holder.wait()
    claim(tmp_path)  # the kernel dropped the killed holder's lock
    release(tmp_path)


def test_report_and_compare_refuse_a_folder_holding_duplicate_rows(tmp_path):
    row = result_row("vanilla", "xsum", 0, 10, 1.0)
    write_run(tmp_path / "twice", [row, result_row("vanilla", "xsum", 1, 10, 1.0), row])
    with pytest.raises(HarnessError, match="written more than once .*vanilla/xsum/xsum/0.*fresh --out"):
        load_run(tmp_path / "twice")
    one_line_error(run_cli("report", str(tmp_path / "twice")), "two runs wrote into this folder at once")


def test_a_damaged_line_anywhere_is_set_aside_counted_and_its_sample_redone(tmp_path, capsys):
    good = [result_row("vanilla", "xsum", i, 10, 1.0) for i in range(3)]
    lines = [json.dumps(good[0]), json.dumps(good[1])[:40], json.dumps({"foreign": "row"}), json.dumps(good[2])]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    store = ResultStore(tmp_path)
    store.close()
    assert [store.has("vanilla", "xsum", f"xsum/{i}") for i in range(3)] == [True, False, True]  # 1 is redone
    assert (tmp_path / "results.jsonl.damaged").read_text().splitlines() == lines[1:3]
    assert [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()] == [good[0], good[2]]
    assert "2 damaged line(s) set aside" in capsys.readouterr().err


def test_a_damaged_distribution_line_is_set_aside_and_its_check_redone(tmp_path):
    lines = [json.dumps({"task": "xsum", "decoder": "vanilla"}), '{"task": "xsum", "decoder": "pl',
             json.dumps({"task": "xsum", "decoder": "eagle"})]
    (tmp_path / "distribution.jsonl").write_text("\n".join(lines) + "\n")
    assert checked_decoders(tmp_path, "xsum") == {"vanilla", "eagle"}
    assert (tmp_path / "distribution.jsonl.damaged").read_text() == lines[1] + "\n"


def test_report_refuses_damaged_lines_but_not_a_cut_off_last_line(tmp_path):
    good = [json.dumps(result_row("vanilla", "xsum", i, 10, 1.0)) for i in range(2)]
    (tmp_path / "results.jsonl").write_text(good[0] + "\n" + good[1] + "\n" + good[0][:30])
    assert len(load_run(tmp_path).rows) == 2  # a run in progress
    (tmp_path / "results.jsonl").write_text(good[0] + "\n" + good[1][:30] + "\n" + good[1] + "\n")
    with pytest.raises(HarnessError, match="1 damaged line.*rerun the run's command"):
        load_run(tmp_path)


def test_a_damaged_meta_json_is_one_line_on_resume_and_in_report(tmp_path):
    write_run(tmp_path, [result_row("vanilla", "xsum", 0, 10, 1.0)])
    (tmp_path / "meta.json").write_text('{"model": "smo')
    one_line_error(run_cli("--tasks", "humaneval", "--limit", "1", "--out", str(tmp_path)), "meta.json is damaged")
    one_line_error(run_cli("report", str(tmp_path)), "meta.json is damaged")


def test_out_naming_a_file_is_refused_before_the_model_loads(tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(run_cli("--tasks", "humaneval", "--limit", "1", "--out", str(tmp_path / "file")),
                   "is a file, not a run folder")


def test_limit_zero_is_refused_before_the_model_loads():
    one_line_error(run_cli("--tasks", "humaneval", "--limit", "0"), "--limit 0 scores no sample", "--limit 1")


def test_a_setting_out_of_range_for_the_model_is_refused_before_meta_json_is_written(tmp_path):
    out = run_cli("--decoders", "layerskip", "--set", "layerskip.exit_layer=30", "--tasks", "humaneval", "--limit", "1",
                  "--max-new-tokens", "2", "--device", "cpu", "--dtype", "float32", "--out", str(tmp_path))
    error_line(out, "exit_layer must lie in 1..29, got 30")  # the model's 30 layers: known once it loads
    assert not (tmp_path / "meta.json").exists()


@pytest.mark.parametrize("setting, problem", [
    ("pld.k=-1", "pld k (tokens drafted per round) must be 1 or more, got -1"),
    ("pld.k=0", "pld k (tokens drafted per round) must be 1 or more, got 0"),
    ("pld.max_ngram=0", "pld needs 1 <= min_ngram <= max_ngram, got min_ngram=1, max_ngram=0"),
    ("eagle.depth=0", "eagle needs depth, top_k and total_tokens of 1 or more, got 0, 3, 4"),
    ("eagle.top_k=64", "eagle's tree needs more than the 128 spare cache slots"),
    ("hf_generate.cache=paged", "hf_generate cache must be dynamic or static, got 'paged'"),
    ("layerskip.speculations=0", "speculations must be 1 or more, got 0"),
    ("adadecode.vocabulary=some", "adadecode vocabulary must be 'candidates' or 'full', got 'some'")])
def test_a_setting_out_of_range_whatever_the_model_is_refused_before_the_model_loads(setting, problem):
    one_line_error(run_cli("--decoders", setting.partition(".")[0], "--set", setting, *NO_MODEL), problem)


def test_compare_refuses_runs_made_under_different_conditions_with_exit_2(tmp_path):
    rows = [result_row(d, "xsum", i, 10, 1.0) for d in ("vanilla", "fast") for i in range(3)]
    base = write_run(tmp_path / "base", rows, {"model": "smollm2", "dtype": "float32", "max_new_tokens": 64})
    other = write_run(tmp_path / "other", rows, {"model": "qwen", "dtype": "float32", "max_new_tokens": 128})
    compare = [sys.executable, "run.py", "compare", str(base), str(other)]
    refused = subprocess.run(compare, cwd=ROOT, capture_output=True, text=True, timeout=120)
    one_line_error(refused, "different conditions", "model 'smollm2' vs 'qwen'", "max_new_tokens 64 vs 128",
                   "--allow-different")
    warned = subprocess.run(compare + ["--allow-different"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert warned.returncode == 0 and "WARNING: DIFFERENT CONDITIONS" in warned.stdout


def test_a_damaged_meta_json_in_compare_exits_2_not_the_regression_code(tmp_path):
    rows = [result_row(d, "xsum", i, 10, 1.0) for d in ("vanilla", "fast") for i in range(3)]
    base, cand = write_run(tmp_path / "base", rows), write_run(tmp_path / "cand", rows)
    (cand / "meta.json").write_text("{")
    one_line_error(run_cli("compare", str(base), str(cand)), "meta.json is damaged")


@pytest.mark.parametrize("flags", [("--min-parity", "7"), ("--max-slowdown", "150%"), ("--max-quality-drop", "-1")])
def test_compare_thresholds_outside_zero_to_one_are_refused(tmp_path, flags):
    rows = [result_row("vanilla", "xsum", i, 10, 1.0) for i in range(3)]
    base = write_run(tmp_path / "base", rows)
    one_line_error(run_cli("compare", str(base), str(base), *flags), "outside 0..")


def test_a_decoder_without_one_successful_sample_makes_the_run_exit_1(capsys):
    rows = pd.DataFrame([result_row("vanilla", "xsum", 0, 10, 1.0), result_row("pld", "xsum", 0, 10, 1.0, error="boom"),
                         result_row("pld", "xsum", 1, 10, 1.0, error="boom")])
    assert failed_decoders(rows) == 1
    assert "every one of pld's 2 samples on xsum failed (first: boom)" in capsys.readouterr().err
    assert failed_decoders(rows[rows["decoder"] == "vanilla"]) == 0
