"""`run.py sweep`: grid parsing, variants, the sweep table from hand-made rows, its plot, and one tiny real sweep."""
import json

import pandas as pd
import pytest
from report_rows import result_row, write_run

from harness.core.errors import HarnessError
from harness.run.sweep import grid_points, sweep_variants
from reports.plots import sweep_plot
from reports.run_files import load_run
from reports.sweeps import settings_sweep, write_sweep_csv
from run import main, parse_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_grid_parsing_reads_numbers_and_text():
    grid = parse_grid(["exit_layer=12,16, 20", "gamma=0.5,0.9", "vocabulary=full"])
    assert grid == {"exit_layer": [12, 16, 20], "gamma": [0.5, 0.9], "vocabulary": ["full"]}


@pytest.mark.parametrize("item, message", [("exit_layer", "not KEY=VALUE"), ("=1,2", "not KEY=VALUE"),
                                           ("exit_layer=12,,16", "not KEY=VALUE"), ("k=1,1", "repeats a value")])
def test_bad_grid_items_are_refused(item, message):
    with pytest.raises(HarnessError, match=message):
        parse_grid([item])


def test_a_key_given_twice_is_refused():
    with pytest.raises(HarnessError, match="twice"):
        parse_grid(["k=1", "k=2"])


def test_variants_cover_every_point_with_the_fixed_settings():
    assert grid_points({"a": [1, 2], "b": [3, 4, 5]}) == [
        {"a": 1, "b": 3}, {"a": 1, "b": 4}, {"a": 1, "b": 5}, {"a": 2, "b": 3}, {"a": 2, "b": 4}, {"a": 2, "b": 5}]
    variants = sweep_variants("layerskip", {"exit_layer": [12, 16], "speculations": [2]}, {"exit_head": "adadecode"})
    assert variants == {
        "layerskip@exit_layer=12,speculations=2": {"exit_head": "adadecode", "exit_layer": 12, "speculations": 2},
        "layerskip@exit_layer=16,speculations=2": {"exit_head": "adadecode", "exit_layer": 16, "speculations": 2}}
    with pytest.raises(HarnessError, match="both swept"):
        sweep_variants("layerskip", {"exit_layer": [12]}, {"exit_layer": 16})


def hand_made_sweep(folder):
    """Vanilla at 10 tok/s on two samples; each grid point at (exit_layer + speculations) / 2 tok/s."""
    rows, settings = [], {"vanilla": {}}
    for i in range(2):
        rows.append(result_row("vanilla", "xsum", i, 10, 1.0))
    for exit_layer in (12, 16, 20):
        for k in (2, 4):
            name = f"layerskip@exit_layer={exit_layer},speculations={k}"
            settings[name] = {"exit_layer": exit_layer, "speculations": k}
            rows += [result_row(name, "xsum", i, 10, 20 / (exit_layer + k), match=i == 0,
                                stats={"drafted": 4 * k, "accepted": k, "mean_acceptance_length": 1 + k / 4})
                     for i in range(2)]
    return write_run(folder, rows, {"model": "smollm2", "decoder_settings": settings})


def test_sweep_table_from_hand_made_rows(tmp_path):
    table = settings_sweep([load_run(hand_made_sweep(tmp_path / "run"))]).set_index("variant")
    assert len(table) == 6 and set(table["decoder"]) == {"layerskip"}
    point = table.loc["layerskip@exit_layer=16,speculations=4"]
    assert (point["exit_layer"], point["speculations"], point["samples"]) == (16, 4, 2)
    assert point["tokens_per_s"] == pytest.approx(10.0)
    assert point["speedup"] == pytest.approx(1.0) and point["parity_rate"] == pytest.approx(0.5)
    assert point["acceptance_rate"] == pytest.approx(0.25) and point["mean_acceptance_length"] == pytest.approx(2.0)
    assert table.loc["layerskip@exit_layer=12,speculations=2", "speedup"] == pytest.approx(0.7)
    assert "early_rate" not in table  # nothing measured it


def test_sweep_plot_needs_a_swept_number(tmp_path):
    table = settings_sweep([load_run(hand_made_sweep(tmp_path / "run"))])
    assert sweep_plot(table, "t").startswith(PNG_MAGIC)
    assert sweep_plot(table[table["exit_layer"] == 12].assign(speculations=2), "t") is None
    assert sweep_plot(table.drop(columns=["tokens_per_s", "speedup", "speedup_totals", "parity_rate",
                                          "parity_mismatches", "acceptance_rate", "mean_acceptance_length"]),
                      "t") is None


def test_sweep_csv_is_written_into_the_run_folder(tmp_path):
    path = write_sweep_csv(hand_made_sweep(tmp_path / "run"))
    csv = pd.read_csv(path)
    assert path.name == "sweep.csv" and len(csv) == 6 and "run" not in csv


def test_bad_grid_on_the_command_line_is_a_one_line_error(capsys):
    assert main(["sweep", "--decoder", "layerskip", "--grid", "exit_layer"]) == 2
    assert "not KEY=VALUE" in capsys.readouterr().err


def test_tiny_real_sweep_writes_the_csv_and_the_plot(shared_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--decoder", "layerskip", "--grid", "exit_layer=20,24", "--grid", "speculations=3",
                 "--tasks", "xsum", "--limit", "1", "--max-new-tokens", "8", "--warmup", "0", "--no-telemetry",
                 "--device", "cpu", "--data", str(shared_data), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    csv = pd.read_csv(out / "sweep.csv")
    assert list(csv.columns) == ["task", "decoder", "variant", "exit_layer", "speculations", "samples", "errors",
                                 "tokens_per_s", "speedup", "speedup_totals", "parity_rate", "parity_mismatches",
                                 "acceptance_rate", "mean_acceptance_length"]
    assert csv["exit_layer"].tolist() == [20, 24] and (csv["parity_rate"] == 1.0).all()
    assert (csv["parity_mismatches"] == 0).all()
    assert (csv["samples"] == 1).all() and (csv["errors"] == 0).all() and (csv["tokens_per_s"] > 0).all()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["decoder"] for r in rows] == ["vanilla", "layerskip@exit_layer=20,speculations=3",
                                            "layerskip@exit_layer=24,speculations=3"]  # vanilla once, interleaved
    assert all(r["tokens"] == rows[0]["tokens"] and len(r["tokens"]) == 8 for r in rows)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sweep"]["grid"] == {"exit_layer": [20, 24], "speculations": [3]}
    assert (out / "report" / "figures" / "sweep-sweep.png").read_bytes().startswith(PNG_MAGIC)
