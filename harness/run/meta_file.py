"""Reading a run folder's `meta.json` (kept free of torch, for the reports); `harness.run.meta` writes it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError

from harness.schema import META_FILE


def read_meta(out_dir: Path) -> dict[str, Any]:
    """The folder's meta.json ({} when it has none); a damaged one is refused in one line."""
    path = out_dir / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path} is damaged ({exc}); restore it, or use another --out") from None
    if not isinstance(meta, dict):
        raise HarnessError(f"{path} is not a JSON object; restore it, or use another --out")
    return meta
