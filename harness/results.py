"""The run folder's `results.jsonl`: one JSON line per (decoder, task, sample), appended and flushed as produced.

Opening an existing file resumes it: finished rows are loaded (a row counts as finished even when it records an
error), and a last line cut short by a kill is dropped before new rows are appended, so a rerun of the same
command neither duplicates nor loses rows.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
REFERENCE_DECODER = "vanilla"
VARIANT_MARK = "@"  # `layerskip@exit_layer=12,speculations=2`: one decoder under one point of a sweep

Key = tuple[str, str, str]


def variant_name(decoder: str, point: dict[str, Any]) -> str:
    """The `decoder` of a sweep point's rows (its settings are in `meta.json` under `decoder_settings`)."""
    return decoder + VARIANT_MARK + ",".join(f"{key}={value}" for key, value in point.items())


def base_decoder(name: str) -> str:
    """The registered decoder a row's `decoder` names (a sweep variant's name without its settings)."""
    return name.partition(VARIANT_MARK)[0]


def row_key(row: dict[str, Any]) -> Key:
    return row["decoder"], row["task"], str(row["sample_id"])


class ResultStore:
    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / RESULTS_FILE
        self.rows: dict[Key, dict[str, Any]] = {}
        if self.path.exists():
            self._load()
        self._file = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines()
        complete = lines if text.endswith("\n") else lines[:-1]  # a kill mid-write leaves a partial last line
        for line in complete:
            if line.strip():
                row = json.loads(line)
                self.rows[row_key(row)] = row
        if len(complete) != len(lines):
            self.path.write_text("".join(line + "\n" for line in complete), encoding="utf-8")

    def has(self, decoder: str, task: str, sample_id: str) -> bool:
        return (decoder, task, str(sample_id)) in self.rows

    def reference_tokens(self, task: str, sample_id: str) -> list[int] | None:
        row = self.rows.get((REFERENCE_DECODER, task, str(sample_id)))
        return row["tokens"] if row and row.get("error") is None else None

    def append(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows[row_key(row)] = row

    def close(self) -> None:
        self._file.close()
