"""Reports of a sampled run: the distribution check's verdict replaces token parity (summary, warnings, report)."""
import json

from report_rows import result_row, write_run
from reports.render import write_report
from reports.run_files import load_run
from reports.summary import format_summary

SAMPLED = {"model": "smollm2", "dtype": "float32",
           "sampling": {"greedy": False, "temperature": 0.7, "top_p": 0.95, "top_k": 0, "seed": 0}}


def sampled_run(tmp_path, checks):
    rows = [result_row(d, "xsum", i, 20, 1.0 if d == "vanilla" else 0.5, match=None, quality={"rougeL": 0.3})
            for i in range(3) for d in ("vanilla", "pld", "layerskip")]
    for row in rows:
        row["parity"] = None  # not checked under sampling
    folder = write_run(tmp_path / "run", rows, SAMPLED)
    (folder / "distribution.jsonl").write_text("".join(json.dumps(
        {"task": "xsum", "decoder": d, "sample_id": "xsum/0", "tokens": 2, "statistic": s, "p_value": p, "cells": 9,
         "draws": 200, "alpha": 0.001, "passed": p >= 0.001}) + "\n" for d, s, p in checks))
    return load_run(folder)


def test_the_summary_gives_the_distribution_verdict_instead_of_parity(tmp_path):
    run = sampled_run(tmp_path, [("vanilla", 8.1, 0.42), ("pld", 6.0, 0.65), ("layerskip", 60.2, 1e-9)])
    summary = format_summary(run.rows, run.meta, run.distribution)
    assert "pld on xsum" in summary and "distribution check passed (p = 0.65)" in summary
    assert "distribution check FAILED (p = 1e-09)" in summary and "parity" not in summary.split("FAILURE")[0]
    assert "DISTRIBUTION MISMATCH: layerskip on xsum" in summary
    report = write_report(run.path).markdown.read_text()
    assert "pass (0.65)" in report and "FAIL (1e-09)" in report and "INVALID" in report


def test_a_sampled_run_without_checks_says_so(tmp_path):
    run = sampled_run(tmp_path, [("vanilla", 8.1, 0.42)])
    summary = format_summary(run.rows, run.meta, run.distribution)
    assert "NO DISTRIBUTION CHECK: pld on xsum" in summary and "NO DISTRIBUTION CHECK: layerskip on xsum" in summary
