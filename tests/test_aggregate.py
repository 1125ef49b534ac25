"""The aggregation math on hand-made result rows."""
import math

import pytest
from report_rows import result_row, write_run

from reports.aggregate import SPEEDUP_MEDIAN, SPEEDUP_TOTALS, paired_speedups, summarize
from reports.render import detail_tables
from reports.summary import format_summary
from reports.run_files import load_run

# (new tokens, vanilla seconds, candidate seconds): per-sample speedups 2, 1, 2 -> median 2;
# totals 130 tokens in 13 s vs 11.5 s -> 13 / 11.5. The long sample has no speedup, so the two disagree.
SAMPLES = [(10, 1.0, 0.5), (100, 10.0, 10.0), (20, 2.0, 1.0)]


def rows_for(samples=SAMPLES, **candidate):
    rows = []
    for i, (n, vanilla_s, fast_s) in enumerate(samples):
        rows.append(result_row("vanilla", "xsum", i, n, vanilla_s, quality={"rougeL": 0.5, "rouge1": 0.6}))
        rows.append(result_row("fast", "xsum", i, n, fast_s, quality={"rougeL": 0.4, "rouge1": 0.6}, **candidate))
    return rows


def summary(tmp_path, rows):
    return summarize(load_run(write_run(tmp_path / "run", rows)).rows)


def test_median_of_ratios_and_ratio_of_totals_differ_and_are_both_right(tmp_path):
    table = summary(tmp_path, rows_for())
    fast = table.loc[("xsum", "fast")]
    assert fast[SPEEDUP_MEDIAN] == pytest.approx(2.0)
    assert fast[SPEEDUP_TOTALS] == pytest.approx(13.0 / 11.5)
    assert (fast["speedup q25"], fast["speedup q75"]) == pytest.approx((1.5, 2.0))
    assert math.isnan(table.loc[("xsum", "vanilla"), SPEEDUP_MEDIAN])  # no speedup of the reference over itself


def test_tokens_per_s_median_and_iqr(tmp_path):
    fast = summary(tmp_path, rows_for()).loc[("xsum", "fast")]
    assert fast["tok/s median"] == pytest.approx(20.0)  # 20, 10, 20 tokens/s
    assert fast["tok/s IQR"] == pytest.approx(5.0)


def test_failed_and_unpaired_samples_stay_out_of_the_speedup(tmp_path):
    rows = rows_for()
    rows[1] = result_row("fast", "xsum", 0, 10, 0.5, error="RuntimeError: boom")
    rows.append(result_row("fast", "xsum", 7, 10, 0.1))  # vanilla never ran sample 7
    pairs = paired_speedups(load_run(write_run(tmp_path / "run", rows)).rows)
    assert sorted(pairs["sample_id"]) == ["xsum/1", "xsum/2"]
    fast = summary(tmp_path, rows).loc[("xsum", "fast")]
    assert fast["errors"] == 1 and fast["samples"] == 4
    assert fast[SPEEDUP_TOTALS] == pytest.approx((120 / 11.0) / (120 / 12.0))


def test_parity_quality_beside_vanilla_stats_and_memory(tmp_path):
    rows = rows_for(stats={"drafted": 10, "accepted": 6, "mean_acceptance_length": 2.5, "exit_layers": [10, 30]},
                    memory={"rss_peak_bytes": 3 * 2 ** 20})
    rows[1]["parity"] = {"match": False, "first_divergence": 4}
    rows[3]["memory"]["rss_peak_bytes"] = 5 * 2 ** 20
    fast = summary(tmp_path, rows).loc[("xsum", "fast")]
    assert fast["parity rate"] == pytest.approx(2 / 3)
    assert (fast["rougeL"], fast["rougeL (vanilla)"]) == pytest.approx((0.4, 0.5))
    assert "rouge1" not in fast  # only the headline metric when one is present
    assert fast["acceptance (pooled)"] == pytest.approx(0.6)
    assert fast["mean_acceptance_length (mean)"] == pytest.approx(2.5)
    assert fast["mean exit layer"] == pytest.approx(20.0)
    assert fast["RSS peak MiB"] == pytest.approx(5.0)


def test_columns_nothing_measured_are_dropped_per_task(tmp_path):
    rows = rows_for() + [result_row("vanilla", "humaneval", 0, 8, 1.0, quality={"pass@1": 1.0})]
    tables = detail_tables(summary(tmp_path, rows), ["rougeL", "pass@1"])
    assert "pass@1" not in tables["xsum: parity and quality"] and "rougeL" in tables["xsum: parity and quality"]
    assert "pass@1" in tables["humaneval: parity and quality"] and "rougeL" not in tables["humaneval: parity and quality"]
    assert "parity rate" in tables["xsum: parity and quality"] and "xsum: speed and latency" in tables
    assert "xsum: memory" not in tables and "humaneval: memory" not in tables  # nothing measured memory


def test_end_of_run_summary_names_the_median_its_interval_the_ratio_of_totals_and_an_outlier(tmp_path):
    """Nine samples at 1.25x and one at 10x: the median stays 1.25x, the ratio of totals does not, the fast one is
    named as an outlier."""
    rows = []
    for i in range(10):
        rows.append(result_row("vanilla", "xsum", i, 10, 1.0))
        rows.append(result_row("fast", "xsum", i, 10, 0.1 if i == 9 else 0.8))
    text = format_summary(load_run(write_run(tmp_path / "run", rows)).rows)
    assert "vanilla on xsum: 10.00 tokens/s (median)" in text
    assert "speed-up 1.25x (median of 10 per-sample ratios, 95% CI 1.25-1.25" in text
    assert "ratio of totals 1.37x" in text  # 100 tokens in 7.3 s against 100 in 10 s
    assert "parity 10 exact / 0 near-tie / 0 mismatch" in text
    assert "OUTLIERS: fast on xsum: xsum/9 (10.00x)" in text and "FEW SAMPLES" in text


def test_the_summary_puts_vanillas_speed_against_the_bandwidth_floor_of_the_run(tmp_path):
    rows = [result_row("vanilla", "xsum", i, 10, 1.0) for i in range(3)]
    bandwidth = {"weight_bytes": 270e6, "read_gb_per_s": 10.8, "floor_tokens_per_s": 40.0}
    run = load_run(write_run(tmp_path / "run", rows, {"model": "smollm2", "dtype": "float32", "bandwidth": bandwidth}))
    assert ("vanilla on xsum: 10.00 tokens/s (median) = 0.25 of the bandwidth floor (40.0 tokens/s: 270 MB of "
            "weights read at 10.8 GB/s, measured in this run)") in format_summary(run.rows, run.meta)
    assert "bandwidth floor" not in format_summary(run.rows)  # a folder written before the floor was recorded
