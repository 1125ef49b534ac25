"""A decoder setting swept over several runs (e.g. AdaDecode's γ): each run's summary beside the setting's value
that its `meta.json` records under `decoder_settings`."""
from __future__ import annotations

import pandas as pd

from reports.aggregate import SPEEDUP_MEDIAN, SPEEDUP_TOTALS, quality_metrics, summarize
from reports.run_files import Run


def settings_sweep(runs: list[Run], key: str) -> pd.DataFrame:
    """One row per (run, task, decoder) whose settings hold `key`: its value, the speedups, parity and quality."""
    records = []
    for run in runs:
        settings = run.meta.get("decoder_settings") or {}
        table = summarize(run.rows)
        metrics = [SPEEDUP_MEDIAN, SPEEDUP_TOTALS, "parity rate", *quality_metrics(run.rows)]
        for (task, decoder), row in table.iterrows():
            if key in (settings.get(decoder) or {}):
                records.append({"run": run.path.name, "task": task, "decoder": decoder, key: settings[decoder][key],
                                **{m: row.get(m, float("nan")) for m in metrics}})
    return pd.DataFrame(records)
