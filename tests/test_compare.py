"""The regression gate on planted regressions in hand-made runs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from report_rows import result_row, write_run

from reports.compare import Thresholds, find_regressions, parse_fraction
from reports.run_files import load_run

ROOT = Path(__file__).resolve().parents[1]


def rows(slow_fast=1.0, slow_all=1.0, mismatch_at=None, rougeL=0.4, parity_class=None):
    """Two tasks, vanilla and a faster decoder; `slow_*` multiply the decoder's (or everyone's) time; the sample
    `mismatch_at` diverges, classified as `parity_class` (None: an old row, `match` only)."""
    out = []
    for task in ("xsum", "humaneval"):
        for i, (n, seconds) in enumerate([(10, 1.0), (30, 2.5), (20, 2.0)]):
            out.append(result_row("vanilla", task, i, n, seconds * slow_all, quality={"rougeL": 0.4}))
            out.append(result_row("fast", task, i, n, seconds / 1.5 * slow_fast * slow_all,
                                  match=(task, i) != mismatch_at, quality={"rougeL": rougeL},
                                  parity_class=parity_class and (parity_class if (task, i) == mismatch_at else "exact")))
    return out


def regressions(tmp_path, candidate_rows, limits=Thresholds()):
    baseline = load_run(write_run(tmp_path / "base", rows()))
    return find_regressions(baseline, load_run(write_run(tmp_path / "cand", candidate_rows)), limits)


def compare_cli(*args):
    return subprocess.run([sys.executable, "run.py", "compare", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_two_equal_runs_pass(tmp_path):
    assert regressions(tmp_path, rows()) == []


def test_planted_20_percent_slowdown_is_named(tmp_path):
    found = regressions(tmp_path, rows(slow_fast=1.25))
    assert {(r.decoder, r.task, r.metric) for r in found} == {
        ("fast", task, metric) for task in ("xsum", "humaneval")
        for metric in ("tok/s median", "speedup (median of ratios)")}
    assert all(r.candidate == pytest.approx(r.baseline * 0.8) for r in found)


def test_a_slowdown_within_the_limit_passes(tmp_path):
    assert regressions(tmp_path, rows(slow_fast=1.04)) == []


def test_a_slower_machine_fails_tokens_per_s_but_not_speedup(tmp_path):
    found = regressions(tmp_path, rows(slow_all=1.25))
    assert {r.metric for r in found} == {"tok/s median"}
    assert {r.decoder for r in found} == {"vanilla", "fast"}


def test_planted_parity_drop_is_named(tmp_path):
    found = regressions(tmp_path, rows(mismatch_at=("humaneval", 1)))
    assert [(r.decoder, r.task, r.metric) for r in found] == [("fast", "humaneval", "parity (exact + near-tie)")]
    assert (found[0].baseline, found[0].candidate) == pytest.approx((1.0, 2 / 3))
    classified = regressions(tmp_path, rows(mismatch_at=("humaneval", 1), parity_class="mismatch"))
    assert [(r.task, r.metric) for r in classified] == [("humaneval", "parity (exact + near-tie)")]


def test_a_near_tie_is_not_a_parity_failure(tmp_path):
    assert regressions(tmp_path, rows(mismatch_at=("humaneval", 1), parity_class="near_tie")) == []


def test_quality_drop_beyond_the_limit_is_named(tmp_path):
    assert regressions(tmp_path, rows(rougeL=0.39)) == []
    found = regressions(tmp_path, rows(rougeL=0.35))
    assert {(r.decoder, r.metric) for r in found} == {("fast", "rougeL")}


def test_missing_decoder_and_new_errors_are_regressions(tmp_path):
    candidate = [r for r in rows() if not (r["decoder"] == "fast" and r["task"] == "xsum")]
    candidate[0] = result_row("vanilla", "xsum", 0, 10, 1.0, error="OOM")
    found = {(r.decoder, r.task, r.metric) for r in regressions(tmp_path, candidate)}
    assert ("fast", "xsum", "samples") in found and ("vanilla", "xsum", "errors") in found


def test_thresholds_parse_percent_and_fraction():
    assert parse_fraction("5%") == pytest.approx(0.05) and parse_fraction("0.1") == pytest.approx(0.1)


def test_cli_exit_codes_and_messages(tmp_path):
    base = write_run(tmp_path / "base", rows())
    same = write_run(tmp_path / "same", rows())
    slow = write_run(tmp_path / "slow", rows(slow_fast=1.25, mismatch_at=("xsum", 0)))
    ok = compare_cli(base, same, "--max-slowdown", "5%", "--min-parity", "1.0", "--max-quality-drop", "0.02")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = compare_cli(base, slow, "--max-slowdown", "5%")
    assert bad.returncode == 1
    lines = [line for line in bad.stdout.splitlines() if line.startswith("REGRESSION")]
    assert len(lines) == 5
    assert "REGRESSION fast on xsum: parity (exact + near-tie) baseline 1 -> candidate 0.6667" in bad.stdout
    assert "REGRESSION fast on humaneval: tok/s median" in bad.stdout and "-20.0%" in bad.stdout
    assert compare_cli(base, tmp_path / "nowhere").returncode == 2


def test_cli_prints_a_verdict_table_with_the_thresholds(tmp_path):
    base = write_run(tmp_path / "base", rows())
    tie = write_run(tmp_path / "tie", rows(mismatch_at=("xsum", 0), parity_class="near_tie"))
    out = compare_cli(base, tie, "--max-slowdown", "10%")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "thresholds: tok/s median and speed-up may drop at most 10.0%" in out.stdout
    table = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in out.stdout.splitlines()
             if line.startswith("| ")}
    assert len(table) == 5  # the header and four (task, decoder) rows
    assert "3/0/0 → 2/1/0" in table[("xsum", "fast")] and table[("xsum", "fast")].rstrip(" |").endswith("ok")
    assert "1.5 → 1.5" in table[("humaneval", "fast")]
    bad = compare_cli(base, write_run(tmp_path / "bad", rows(mismatch_at=("xsum", 0), parity_class="mismatch")))
    assert bad.returncode == 1 and "REGRESSION: parity (exact + near-tie)" in bad.stdout
    assert "3/0/0 → 2/0/1" in bad.stdout


def test_a_failed_distribution_check_is_a_regression(tmp_path):
    def check(decoder, p):
        return {"task": "xsum", "decoder": decoder, "statistic": 1.0, "p_value": p, "cells": 4, "draws": 200,
                "alpha": 0.001, "passed": p >= 0.001}

    baseline = load_run(write_run(tmp_path / "base", rows()))
    (baseline.path / "distribution.jsonl").write_text(json.dumps(check("fast", 0.4)) + "\n")
    candidate = write_run(tmp_path / "cand", rows())
    (candidate / "distribution.jsonl").write_text(json.dumps(check("fast", 0.4)) + "\n")
    assert find_regressions(load_run(baseline.path), load_run(candidate), Thresholds()) == []
    (candidate / "distribution.jsonl").write_text(json.dumps(check("fast", 2e-5)) + "\n")
    found = find_regressions(load_run(baseline.path), load_run(candidate), Thresholds())
    assert [(r.task, r.decoder, r.metric, r.baseline, r.candidate) for r in found] == [
        ("xsum", "fast", "distribution check p", 0.4, 2e-5)]
    out = compare_cli(baseline.path, candidate)
    assert out.returncode == 1 and "distribution check p" in out.stdout + out.stderr
