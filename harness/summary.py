"""Per-decoder summary of a run's rows: tokens/s, speedup over vanilla on the same samples, parity rate."""
from __future__ import annotations

from typing import Any, Iterable

from harness.parity import parity_rate
from harness.results import REFERENCE_DECODER


def _ok(row: dict) -> bool:
    return row.get("error") is None and row.get("total_s")


def _tokens_per_s(rows: list[dict]) -> float | None:
    seconds = sum(row["total_s"] for row in rows)
    return sum(row["new_tokens"] for row in rows) / seconds if seconds else None


def summarize(rows: Iterable[dict]) -> list[dict[str, Any]]:
    rows = list(rows)
    reference = {(r["task"], r["sample_id"]): r for r in rows if r["decoder"] == REFERENCE_DECODER and _ok(r)}
    out = []
    for name in dict.fromkeys(r["decoder"] for r in rows):
        mine = [r for r in rows if r["decoder"] == name]
        ok = [r for r in mine if _ok(r)]
        paired = [r for r in ok if (r["task"], r["sample_id"]) in reference]
        speedup = None
        if paired and name != REFERENCE_DECODER:
            base = _tokens_per_s([reference[(r["task"], r["sample_id"])] for r in paired])
            speedup = _tokens_per_s(paired) / base if base else None
        out.append({"decoder": name, "samples": len(mine), "errors": len(mine) - len(ok),
                    "tokens_per_s": _tokens_per_s(ok), "speedup": speedup, "parity_rate": parity_rate(mine),
                    "parity_matched": sum(bool(r["parity"]["match"]) for r in mine if r.get("parity")),
                    "parity_checked": sum(1 for r in mine if r.get("parity"))})
    return out


def format_summary(summary: list[dict[str, Any]]) -> str:
    lines = []
    for s in summary:
        parts = [f"{s['decoder']}: " + ("n/a" if s["tokens_per_s"] is None else f"{s['tokens_per_s']:.2f}") + " tokens/s"]
        if s["speedup"] is not None:
            parts.append(f"speedup {s['speedup']:.2f}x vs vanilla")
        if s["parity_checked"]:
            parts.append(f"parity {s['parity_matched']}/{s['parity_checked']}")
        parts.append(f"{s['samples']} samples, {s['errors']} errors")
        lines.append(", ".join(parts))
    return "\n".join(lines)
