"""The run folder's result files: one JSON line per (decoder, task, sample), appended and flushed as produced.

A single process writes `results.jsonl`; under torchrun each rank writes `results.rank<R>.jsonl`, which rank 0
merges into `results.jsonl` at the end (`harness/run/distributed.py`). Opening a store resumes: the finished rows of
every result file in the folder are loaded (a row counts as finished even when it records an error), so a rank
skips what any earlier run did, whatever its world size. A damaged line (cut short by a kill, not JSON, or not a
row of this harness) is set aside: moved from the store's own file into `<file>.damaged` before new rows are
appended, and its sample runs again, so a rerun neither duplicates nor loses rows.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from harness.schema import RANK_FILE_PATTERN, REFERENCE_DECODER, RESULTS_FILE, ROW_KEYS

Key = tuple[str, str, str]


def row_key(row: dict[str, Any]) -> Key:
    return row["decoder"], row["task"], str(row["sample_id"])


def result_files(out_dir: Path) -> list[Path]:
    """The merged file (when there is one), then the rank files in rank order."""
    ranks = sorted(out_dir.glob(RANK_FILE_PATTERN), key=lambda p: int(p.name.split(".")[1].removeprefix("rank")))
    return [p for p in [out_dir / RESULTS_FILE] if p.exists()] + ranks


DAMAGED_SUFFIX = ".damaged"


def read_rows(path: Path, keys: tuple[str, ...] = ROW_KEYS) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a JSON-lines file (objects with `keys`), and its damaged lines: a cut-off last line (a kill
    mid-write, or a write in progress), a line that is not JSON, or a row without those keys."""
    rows, damaged = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        try:
            row = json.loads(line) if line.endswith("\n") else None
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and all(key in row for key in keys):
            rows.append(row)
        elif line.strip():
            damaged.append(line.rstrip("\n"))
    return rows, damaged


def set_aside(path: Path, rows: list[dict[str, Any]], damaged: list[str]) -> str:
    """Keeps `damaged` lines in `<path>.damaged`, leaves `rows` alone in `path`, and says so in one line."""
    kept = path.with_name(path.name + DAMAGED_SUFFIX)
    with open(kept, "a", encoding="utf-8") as out:
        out.write("".join(line + "\n" for line in damaged))
    write_rows(path, rows)
    return f"{path}: {len(damaged)} damaged line(s) set aside in {kept}; their work is done again"


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
            rows, damaged = read_rows(path)
            self.rows.update((row_key(row), row) for row in rows)
            if damaged and path == self.path:
                print(f"warning: {set_aside(path, rows, damaged)}", file=sys.stderr)
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
