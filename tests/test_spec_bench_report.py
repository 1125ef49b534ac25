"""The Spec-Bench table (decoders × categories) from hand-made rows, and its place in the report."""
import pandas as pd
import pytest
from report_rows import result_row, write_run

from reports.render import write_report
from reports.run_files import load_run
from reports.spec_bench import ACCEPTED, OVERALL, SPEEDUP, category_tables

# (category, pld's seconds for 20 tokens, pld's full-model passes); vanilla takes 2 s and 20 passes on every sample
SAMPLES = [("writing", 2.0, 20), ("roleplay", 1.0, 10), ("summarization", 1.0, 5), ("summarization", 0.5, 10),
           ("summarization", 0.8, 5), ("qa", 4.0, 20)]


def spec_bench_rows() -> list[dict]:
    rows = []
    for i, (category, pld_s, passes) in enumerate(SAMPLES):
        rows.append(result_row("vanilla", "spec_bench", i, 20, 2.0, stats={"steps": 20}) | {"category": category})
        rows.append(result_row("pld", "spec_bench", i, 20, pld_s, stats={"steps": passes}) | {"category": category})
    failed = result_row("pld", "spec_bench", 6, 0, 1.0, error="boom") | {"category": "qa"}
    reference = result_row("vanilla", "spec_bench", 6, 20, 2.0, stats={"steps": 20}) | {"category": "qa"}
    other_task = [result_row(d, "xsum", 0, 20, 1.0, stats={"steps": 20}) for d in ("vanilla", "pld")]
    return rows + [failed, reference] + other_task


def test_speedup_is_the_median_of_ratios_and_accepted_tokens_are_pooled_per_category(tmp_path):
    tables = category_tables(load_run(write_run(tmp_path / "run", spec_bench_rows())).rows)
    assert list(tables) == ["spec_bench by category"]  # xsum's rows carry no category
    table = tables["spec_bench by category"]
    assert list(table.columns) == ["mt_bench", "summarization", "qa", OVERALL]  # Spec-Bench's order
    speedup, accepted = table.loc[SPEEDUP], table.loc[ACCEPTED]
    assert speedup.loc["pld"].tolist() == pytest.approx([1.5, 2.5, 0.5, 2.0])  # ratios 1, 2 | 2, 4, 2.5 | 0.5
    assert speedup.loc["vanilla"].isna().all()  # the reference
    assert accepted.loc["pld"].tolist() == pytest.approx([40 / 30, 60 / 20, 20 / 20, 120 / 70])
    assert accepted.loc["vanilla"].tolist() == pytest.approx([1.0] * 4)
    assert list(table.index.get_level_values("decoder")) == ["vanilla", "pld", "vanilla", "pld"]


def test_rows_without_categories_give_no_table():
    assert category_tables(pd.DataFrame([result_row("vanilla", "xsum", 0, 20, 1.0)])) == {}


def test_the_report_shows_the_table(tmp_path):
    report = write_report(write_run(tmp_path / "run", spec_bench_rows()))
    text = report.markdown.read_text()
    assert "## spec_bench by category" in text
    line = next(line for line in text.splitlines() if line.startswith(f"| {SPEEDUP}") and "pld" in line)
    assert [cell.strip() for cell in line.strip("|").split("|")][2:] == ["1.5", "2.5", "0.5", "2"]
    assert "spec_bench by category" in report.html.read_text()
