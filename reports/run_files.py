"""Reads a run folder (`meta.json` + `results.jsonl`) into a metadata dict and a flat table of result rows, with the
distribution checks of a sampled run (`distribution.jsonl`, one row per task and decoder) when it has them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.core.errors import HarnessError
from harness.run.meta_file import read_meta
from harness.run.results import read_rows
from harness.schema import CHECK_KEYS, DISTRIBUTION_FILE, RESULTS_FILE, ROW_KEYS, decoder_order



@dataclass
class Run:
    path: Path
    meta: dict
    rows: pd.DataFrame  # one row per (decoder, task, sample); nested fields as "stats.x", "memory.x", "quality.x"
    distribution: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (task, decoder) under sampling


def load_run(path: str | Path) -> Run:
    """Loads a run folder; refused when it holds damaged lines (other than a cut-off last line: a run in progress
    or a kill) or a (decoder, task, sample) twice (two writers at once)."""
    path = Path(path)
    results = path / RESULTS_FILE
    if not results.is_file():
        raise HarnessError(f"{results} not found; pass a run folder written by `python run.py --out DIR ...`")
    meta = read_meta(path)
    records = checked_rows(results, ROW_KEYS)
    if not records:
        raise HarnessError(f"{results} holds no result rows; run the benchmark first")
    rows = pd.json_normalize(records, max_level=1)
    twice = rows.duplicated(list(ROW_KEYS), keep=False)
    if twice.any():
        first = rows.loc[twice, list(ROW_KEYS)].iloc[0]
        raise HarnessError(f"{results} holds {int(twice.sum())} rows of samples written more than once (first: "
                           f"{'/'.join(map(str, first))}): two runs wrote into this folder at once; rerun into a "
                           f"fresh --out")
    checks = path / DISTRIBUTION_FILE
    distribution = pd.DataFrame(checked_rows(checks, CHECK_KEYS)) if checks.is_file() else pd.DataFrame()
    return Run(path, meta, rows, distribution)


def checked_rows(file: Path, keys: tuple[str, ...]) -> list[dict]:
    """The rows of a JSON-lines file; damaged lines are refused, except a cut-off last line (a run in progress)."""
    rows, damaged = read_rows(file, keys)
    in_progress = len(damaged) == 1 and not file.read_bytes().endswith(b"\n")
    if damaged and not in_progress:
        raise HarnessError(f"{file} holds {len(damaged)} damaged line(s) (first: {damaged[0][:60]!r}); rerun the "
                           f"run's command to set them aside and redo their work")
    return rows


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
