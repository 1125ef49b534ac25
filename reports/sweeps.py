"""Settings sweeps: a decoder's settings beside its speed and acceptance, one row per (run, task, decoder variant).

The settings come from each run's `meta.json` (`decoder_settings`, keyed by the rows' `decoder`). A sweep run
(`python run.py sweep`) names each grid point's rows `DECODER@KEY=VALUE,...`, all in one folder with vanilla once
per sample; runs made with different `--set` values give the same table across runs. The sweep CSV is this table:
ids, then the settings, then `INFO` and `METRICS` columns (a metric nothing measured is left out).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.schema import REFERENCE_DECODER
from reports.aggregate import SPEEDUP_MEDIAN, SPEEDUP_TOTALS, summarize
from reports.run_files import Run, load_run

VARIANT_MARK = "@"  # the runner's separator between a decoder and a sweep point's settings
SWEEP_FILE = "sweep.csv"
IDS = ("run", "task", "decoder", "variant")
INFO = ("samples", "errors")
METRICS = {"tok/s median": "tokens_per_s", SPEEDUP_MEDIAN: "speedup", SPEEDUP_TOTALS: "speedup_totals",
           "parity rate": "parity_rate", "parity mismatch": "parity_mismatches", "acceptance (pooled)": "acceptance_rate",
           "mean_acceptance_length (mean)": "mean_acceptance_length", "early_rate (mean)": "early_rate"}


def settings_sweep(runs: list[Run]) -> pd.DataFrame:
    """One row per (run, task, decoder other than vanilla): its settings (those it was built with on that task,
    recommended ones included, where `meta.json` records them), sample counts and `METRICS`."""
    records = []
    for run in runs:
        settings = run.meta.get("decoder_settings") or {}
        used = run.meta.get("settings_used") or {}
        for (task, variant), row in summarize(run.rows).iterrows():
            if variant == REFERENCE_DECODER:
                continue
            point = used.get(task, {}).get(variant, {}).get("settings", settings.get(variant) or {})
            records.append({"run": run.path.name, "task": task, "decoder": variant.partition(VARIANT_MARK)[0],
                            "variant": variant, **point, **{c: int(row[c]) for c in INFO},
                            **{name: row.get(column, float("nan")) for column, name in METRICS.items()}})
    return pd.DataFrame(records).dropna(axis=1, how="all")


def setting_columns(sweep: pd.DataFrame) -> list[str]:
    """The columns of a sweep table that are settings (everything but ids, counts and metrics)."""
    return [c for c in sweep.columns if c not in (*IDS, *INFO, *METRICS.values())]


def write_sweep_csv(run_dir: str | Path) -> Path:
    """Writes `<run>/sweep.csv` from the run folder's own rows and settings; returns its path."""
    run = load_run(run_dir)
    path = run.path / SWEEP_FILE
    settings_sweep([run]).drop(columns="run").to_csv(path, index=False)
    return path
