"""The run folder's result files: one JSON line per (decoder, task, sample), appended and flushed as produced.

A single process writes `results.jsonl`; under torchrun each rank writes `results.rank<R>.jsonl`, which rank 0
merges into `results.jsonl` at the end (`harness/run/distributed.py`). Opening a store resumes: the finished rows of
every result file in the folder are loaded (a row counts as finished even when it records an error), so a rank
skips what any earlier run did, whatever its world size. A last line cut short by a kill is dropped (and cut
from the store's own file) before new rows are appended, so a rerun neither duplicates nor loses rows.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.schema import RANK_FILE_PATTERN, REFERENCE_DECODER, RESULTS_FILE

Key = tuple[str, str, str]


def row_key(row: dict[str, Any]) -> Key:
    return row["decoder"], row["task"], str(row["sample_id"])


def result_files(out_dir: Path) -> list[Path]:
    """The merged file (when there is one), then the rank files in rank order."""
    ranks = sorted(out_dir.glob(RANK_FILE_PATTERN), key=lambda p: int(p.name.split(".")[1].removeprefix("rank")))
    return [p for p in [out_dir / RESULTS_FILE] if p.exists()] + ranks


def read_rows(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a result file's complete lines, and whether a partial last line (a kill mid-write, or a write in
    progress) was left out."""
    text = path.read_text(encoding="utf-8")
    partial = bool(text) and not text.endswith("\n")
    lines = text.splitlines()[:-1] if partial else text.splitlines()
    return [json.loads(line) for line in lines if line.strip()], partial


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replaces a result file atomically: a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)


class ResultStore:
    def __init__(self, out_dir: Path, file_name: str = RESULTS_FILE) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / file_name
        self.rows: dict[Key, dict[str, Any]] = {}
        for path in result_files(out_dir):
            rows, partial = read_rows(path)
            self.rows.update((row_key(row), row) for row in rows)
            if partial and path == self.path:
                write_rows(path, rows)
        self._file = open(self.path, "a", encoding="utf-8")

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
