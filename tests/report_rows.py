"""Hand-made result rows following the results.jsonl schema, for the report, aggregate and compare tests."""
from __future__ import annotations

import json
from pathlib import Path


def result_row(decoder: str, task: str, sample: int, new_tokens: int, total_s: float, *, ttft_s: float = 0.05,
               match: bool | None = True, quality: dict | None = None, stats: dict | None = None,
               memory: dict | None = None, error: str | None = None, parity_class: str | None = None) -> dict:
    """`parity_class` adds the runner's classification (exact, near_tie, mismatch); without it the row is an old
    one, with `match` only."""
    timed = error is None
    parity = None if decoder == "vanilla" else {"match": match, "first_divergence": None if match else 3}
    if parity is not None and parity_class is not None:
        parity.update({"class": parity_class, "margin": 1e-4 if parity_class == "near_tie" else None})
    return {"decoder": decoder, "task": task, "sample_id": f"{task}/{sample}", "sample_index": sample,
            "prompt_tokens": 20, "tokens": list(range(new_tokens)), "text": "x", "new_tokens": new_tokens,
            "ttft_s": ttft_s if timed else None, "decode_s": total_s - ttft_s if timed else None,
            "total_s": total_s if timed else None, "tokens_per_s": new_tokens / total_s if timed else None,
            "stats": stats or {}, "memory": memory or {},
            "parity": parity,
            "quality": quality or {}, "error": error}


def write_run(folder: Path, rows: list[dict], meta: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps(meta or {"model": "smollm2", "dtype": "float32"}))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
