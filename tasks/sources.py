"""Where task rows come from: a local JSON-lines copy (`--data`) or the public source, reached fast or not at all.

Without network the Hugging Face libraries retry for tens of seconds; here one short probe decides, and an
unreachable hub becomes a one-line error that names `--data`.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import urllib.request
from pathlib import Path

from harness.core.errors import HarnessError

PROBE_TIMEOUT_S = 3.0


def read_jsonl(path: str | Path) -> tuple[list[dict], list[int]]:
    """The rows of a JSON-lines file and the line number of each; a bad line is a one-line error naming it."""
    rows, lines = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HarnessError(f"{path} line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                                   f"{exc.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HarnessError(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                   "fix or remove that line") from None
            if not isinstance(row, dict):
                raise HarnessError(f"{path} line {number}: a JSON object {{...}} is expected, got "
                                   f"{type(row).__name__}; fix or remove that line")
            rows.append(row)
            lines.append(number)
    return rows, lines


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows_sha256(rows: list[dict]) -> str:
    """A content hash of rows read from a public source (no file to hash)."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def data_file(data: str, folder: str, file: str = "test.jsonl") -> Path:
    """`data` is a JSON-lines file, or a data folder holding `<folder>/<file>`."""
    path = Path(data).expanduser()
    if path.is_dir():
        path = path / folder / file
    if not path.is_file():
        raise HarnessError(f"data file {path} not found; pass --data a JSON-lines file or a folder holding {folder}/{file}")
    return path


def _offline_error(what: str, folder: str) -> HarnessError:
    return HarnessError(f"cannot reach {what} (offline); pass --data PATH, a folder holding {folder}/test.jsonl "
                        f"(e.g. --data ../shared/data)")


def _reachable(host: str) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def hub_rows(path: str, config: str | None, split: str, folder: str) -> list[dict]:
    """Rows of a Hugging Face dataset split (a cached copy works offline)."""
    if not _reachable("huggingface.co"):
        os.environ["HF_HUB_OFFLINE"] = "1"  # use a cached copy if there is one, without retries
    import datasets

    try:
        return list(datasets.load_dataset(path, config, split=split))
    except (ConnectionError, OSError) as exc:
        raise _offline_error(f"{path} on the Hugging Face hub", folder) from exc


def url_rows(url: str, folder: str) -> list[dict]:
    """Rows of a JSON-lines file published at a URL."""
    host = url.split("/")[2]
    if not _reachable(host):
        raise _offline_error(url, folder)
    with urllib.request.urlopen(url, timeout=30) as response:
        return [json.loads(line) for line in response.read().decode("utf-8").splitlines() if line.strip()]
