"""`--batch-size` from the command line: its checks, its rows, its summary, the batch sweep and its curve."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.core.errors import HarnessError
from harness.run.meta import write_meta
from reports.batch_sweep import crossover_words, crossovers, same_as_batch_one
from reports.batches import batch_summary
from reports.run_files import Run
from reports.verdict import bootstrap_interval
from test_bench_cli import one_line_error, run_cli

NO_MODEL = ("--model", "/nonexistent/model.gguf")  # reached only if the check under test did not fire first
SMALL = ("--tasks", "humaneval", "--max-new-tokens", "6", "--device", "cpu", "--dtype", "float32", "--warmup", "0",
         "--no-report")


def test_a_batch_size_of_zero_or_not_a_whole_number_is_refused_in_one_line():
    one_line_error(run_cli("--batch-size", "0", *NO_MODEL), "--batch-size must be 1 or more")
    one_line_error(run_cli("--batch-size", "two", *NO_MODEL), "--batch-size: invalid int value: 'two'", "--help")
    one_line_error(run_cli("--refill", *NO_MODEL), "--refill needs a batch (--batch-size 2 or more)")


def _meta(**batch):
    return {"model": "m", "dtype": "float32", "device": "cpu", "max_new_tokens": None, "decoder_settings": {},
            "tasks": {}, "command_lines": ["run"], **batch}


def test_a_resume_at_another_batch_size_or_refill_is_refused(tmp_path):
    write_meta(tmp_path, _meta())  # a folder written before batches existed decoded one sequence at a time
    write_meta(tmp_path, _meta(batch_size=1, refill=False))
    with pytest.raises(HarnessError, match="batch_size=1, not 4"):
        write_meta(tmp_path, _meta(batch_size=4, refill=False))
    (tmp_path / "b").mkdir()
    write_meta(tmp_path / "b", _meta(batch_size=4, refill=False))
    with pytest.raises(HarnessError, match="refill=False, not True"):
        write_meta(tmp_path / "b", _meta(batch_size=4, refill=True))


def test_a_batched_run_keeps_one_row_per_sample_and_reports_throughput_at_its_batch_size(tmp_path):
    out = run_cli("--decoders", "pld", "--limit", "3", "--batch-size", "2", *SMALL, "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    by = {d: [r for r in rows if r["decoder"] == d] for d in ("vanilla", "pld")}
    for decoder, mine in by.items():
        assert [r["sample_id"] for r in mine] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
        assert [(r["batch"]["id"], r["batch"]["sequences"], r["batch"]["size"]) for r in mine] == \
            [(0, 2, 2), (0, 2, 2), (1, 1, 2)]
        assert mine[0]["batch"]["tokens"] == mine[0]["new_tokens"] + mine[1]["new_tokens"]
        assert all(r["error"] is None and 0 < r["total_s"] <= r["batch"]["wall_s"] for r in mine)
    assert all(r["parity"]["class"] in ("exact", "near_tie") for r in by["pld"])
    assert "vanilla on humaneval" in out.stdout and "batch 2: " in out.stdout
    assert "batch speed-up" in out.stdout.split("pld on humaneval")[1]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert (meta["batch_size"], meta["refill"]) == (2, False)


def _batch_rows(decoder, walls, sequences=2, tokens=10):
    return [{"task": "t", "decoder": decoder, "sample_id": f"{i}-{j}", "batch.id": i, "batch.size": 2,
             "batch.sequences": sequences, "batch.tokens": tokens, "batch.wall_s": wall}
            for i, wall in enumerate(walls) for j in range(sequences)]


def test_batch_throughput_pools_tokens_over_wall_time_and_pairs_each_batch_with_vanillas():
    rows = pd.DataFrame(_batch_rows("vanilla", [1.0, 2.0, 1.0]) + _batch_rows("pld", [0.5, 0.5, 2.0]))
    summary = batch_summary(rows, bootstrap_interval)
    assert summary["t", "vanilla"]["batch tok/s"] == pytest.approx(30 / 4.0)
    assert summary["t", "pld"]["batch tok/s"] == pytest.approx(30 / 3.0)
    assert summary["t", "pld"]["batch speed-up"] == pytest.approx(2.0)  # the median of 2, 4 and 0.5
    assert summary["t", "pld"]["paired batches"] == 3


def test_the_crossover_is_where_the_speed_up_stays_below_one():
    curve = pd.DataFrame({"task": "t", "decoder": ["a"] * 4 + ["b"] * 4, "batch_size": [1, 2, 4, 8] * 2,
                          "speedup": [1.5, 0.9, 1.1, 0.8, 1.4, 1.2, 1.1, 1.0]})
    assert crossovers(curve) == {("t", "a"): 8, ("t", "b"): None}
    assert crossover_words(8, [(4, 1.2), (8, 0.9)]) == "below 1x from batch 8"
    assert crossover_words(None, [(1, 1.5), (8, 1.1)]) == "pays at every batch size measured"
    assert crossover_words(None, [(1, 0.35), (2, 0.7), (8, 1.01)]) == ("no crossover: below 1x at batch 1, 2, above it "
                                                                      "at the largest size measured")


def _tokens_run(size, tokens_by_decoder):
    rows = [{"task": "t", "decoder": decoder, "sample_id": f"s{i}", "tokens": tokens, "tokens_per_s": 1.0,
             "error": None} for decoder, samples in tokens_by_decoder.items() for i, tokens in enumerate(samples)]
    return Run(path=Path(f"batch_size={size}"), meta={"batch_size": size}, rows=pd.DataFrame(rows))


def test_parity_across_batch_sizes_counts_the_samples_whose_tokens_are_vanillas_at_batch_one():
    one = _tokens_run(1, {"vanilla": [[1, 2], [3, 4]], "pld": [[1, 2], [3, 4]]})
    four = _tokens_run(4, {"vanilla": [[1, 2], [3, 5]], "pld": [[1, 2], [3, 4, 6]]})
    counts = same_as_batch_one([one, four]).set_index(["decoder", "batch_size"])
    assert counts.loc[("vanilla", 1), "same_as_batch_1"] == 2 and counts.loc[("pld", 1), "same_as_batch_1"] == 2
    assert counts.loc[("vanilla", 4), "same_as_batch_1"] == 1 and counts.loc[("pld", 4), "same_as_batch_1"] == 1
    assert counts["samples"].eq(2).all()
    assert same_as_batch_one([four]).empty  # no batch-1 run: nothing to compare with


def test_a_batch_sweep_writes_the_curve_with_every_decoder_at_every_size(tmp_path):
    out = run_cli("sweep", "--decoder", "pld", "--grid", "batch_size=1,2", "--limit", "2", *SMALL, "--out",
                  str(tmp_path))
    assert out.returncode == 0, out.stderr
    curve = pd.read_csv(tmp_path / "batch_sweep.csv")
    assert sorted(zip(curve["decoder"], curve["batch_size"])) == [("pld", 1), ("pld", 2), ("vanilla", 1),
                                                                   ("vanilla", 2)]
    assert curve["tokens_per_s"].gt(0).all() and curve.loc[curve["decoder"] == "pld", "speedup"].gt(0).all()
    assert (curve["same_as_batch_1"] == curve["samples"]).all() and curve["samples"].eq(2).all()
    assert (tmp_path / "batch_sweep.png").stat().st_size > 0
    assert "pld on humaneval, the tokens vanilla returns at batch 1: 2/2 at batch 1, 2/2 at batch 2" in out.stdout
    assert "pld on humaneval: " in out.stdout and "batch sweep: " in out.stdout
