"""Renders the lm-eval task templates of `templates/` for a local data folder.

The templates name their JSON-lines files relative to `${FASTDECODE_DATA}` (a folder holding `gsm8k/test.jsonl`,
`xsum/test.jsonl`, ...), so no data path is written into the repository; rendering fills it in and copies the
helper modules the templates load with `!function`. Pass the rendered folder to lm-eval as its include path.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from string import Template

from harness.core.errors import HarnessError

TEMPLATES = Path(__file__).resolve().parent / "templates"


def render_tasks(data_dir: str | Path, out_dir: str | Path) -> Path:
    """Writes the task YAMLs for `data_dir` into `out_dir` and returns it (lm-eval's `include_path`)."""
    data = Path(data_dir).expanduser().resolve()
    if not data.is_dir():
        raise HarnessError(f"data folder {data} not found; pass --data (or FASTDECODE_DATA) a folder holding "
                           f"gsm8k/test.jsonl and xsum/test.jsonl, e.g. ../shared/data")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for template in sorted(TEMPLATES.glob("*.yaml")):
        text = Template(template.read_text(encoding="utf-8")).safe_substitute(FASTDECODE_DATA=json.dumps(str(data)))
        (out / template.name).write_text(text, encoding="utf-8")
    for helper in sorted(TEMPLATES.glob("*.py")):
        shutil.copy(helper, out / helper.name)
    return out
