"""Reads a run folder (`meta.json` + `results.jsonl`) into a metadata dict and a flat table of result rows, with the
distribution checks of a sampled run (`distribution.jsonl`, one row per task and decoder) when it has them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.core.errors import HarnessError
from harness.schema import DISTRIBUTION_FILE, META_FILE, RESULTS_FILE, decoder_order



@dataclass
class Run:
    path: Path
    meta: dict
    rows: pd.DataFrame  # one row per (decoder, task, sample); nested fields as "stats.x", "memory.x", "quality.x"
    distribution: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (task, decoder) under sampling


def load_run(path: str | Path) -> Run:
    """Loads a run folder; the last row wins when a resumed run wrote a (decoder, task, sample) twice."""
    path = Path(path)
    results = path / RESULTS_FILE
    if not results.is_file():
        raise HarnessError(f"{results} not found; pass a run folder written by `python run.py --out DIR ...`")
    meta_file = path / META_FILE
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    lines = [line for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # only a cut-off last line (a killed run) is tolerated
                raise HarnessError(f"{results}:{number} is not JSON; fix or delete that line") from None
    if not records:
        raise HarnessError(f"{results} holds no result rows; run the benchmark first")
    rows = pd.json_normalize(records, max_level=1)
    for key in ("decoder", "task", "sample_id"):
        if key not in rows:
            raise HarnessError(f"{results} rows lack '{key}'; it is not a results file of this harness")
    rows = rows.drop_duplicates(["decoder", "task", "sample_id"], keep="last").reset_index(drop=True)
    checks = path / DISTRIBUTION_FILE
    distribution = pd.DataFrame([json.loads(line) for line in checks.read_text(encoding="utf-8").splitlines()
                                 if line.strip()]) if checks.is_file() else pd.DataFrame()
    return Run(path, meta, rows, distribution)


def column(rows: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, all-NaN when the rows do not have it (missing data stays missing)."""
    if name not in rows:
        return pd.Series(float("nan"), index=rows.index)
    return pd.to_numeric(rows[name], errors="coerce")


def list_column(rows: pd.DataFrame, name: str) -> pd.Series:
    """A column of lists (e.g. `stats.exit_layers`), with [] where a row has none."""
    if name not in rows:
        return pd.Series([[] for _ in range(len(rows))], index=rows.index, dtype=object)
    return rows[name].map(lambda v: list(v) if isinstance(v, (list, tuple)) else [])


def display_order(names) -> list[str]:
    """The decoders present, as reports list them: the reference first, then alphabetical."""
    present = set(names)
    return [name for name in decoder_order(sorted(present)) if name in present]
