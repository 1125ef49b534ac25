"""One writer per run folder: an exclusive `flock` on RUN/.lock, which names the holder's PID.

The kernel drops the lock when its holder ends (also on a kill), so a stale lock never blocks a rerun.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from harness.core.errors import HarnessError

LOCK_FILE = ".lock"
_held: dict[Path, IO[str]] = {}


def claim(out_dir: Path) -> None:
    """Holds the folder's lock until `release`; refused at once while another process holds it."""
    out_dir = out_dir.resolve()
    if out_dir in _held:
        return
    handle = open(out_dir / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise HarnessError(f"{out_dir} is being written by process {holder} (it holds {out_dir / LOCK_FILE}); "
                           f"wait for it to end or use another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[out_dir] = handle


def release(out_dir: Path | None) -> None:
    """Drops the lock `claim` took (nothing when this process holds none)."""
    handle = _held.pop(out_dir.resolve(), None) if out_dir is not None else None
    if handle is not None:
        handle.close()
