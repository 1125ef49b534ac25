"""Token-for-token parity of a decoder's output with vanilla greedy decoding on the same sample."""
from __future__ import annotations

from typing import Any, Iterable


def compare(reference: list[int], tokens: list[int]) -> dict[str, Any]:
    """`match`, and `first_divergence`: the first index where the outputs differ (a shorter output diverges where
    it ends), None when they match."""
    for i, (a, b) in enumerate(zip(reference, tokens)):
        if a != b:
            return {"match": False, "first_divergence": i}
    if len(reference) != len(tokens):
        return {"match": False, "first_divergence": min(len(reference), len(tokens))}
    return {"match": True, "first_divergence": None}


def parity_rate(rows: Iterable[dict]) -> float | None:
    """Share of rows whose parity was checked that match (None when none was checked)."""
    checked = [row["parity"]["match"] for row in rows if row.get("parity")]
    return sum(checked) / len(checked) if checked else None
