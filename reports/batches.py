"""Throughput at batch > 1: what a serving stack gets from a decoder with several requests in flight.

A row's own timing is its sequence's latency (from its admission to its last token); the batch's throughput is
every token the batch produced over the batch's wall time (`batch.tokens / batch.wall_s`, the same for each of its
rows). Speed-ups at a batch size pair each decoder's batch with vanilla's batch of the same samples (same task,
same batch id, as many sequences) and take the median of those per-batch ratios, with its bootstrap interval.
"""
from __future__ import annotations

import math

import pandas as pd

from harness.schema import REFERENCE_DECODER
from reports.run_files import column

BATCH_KEYS = ["task", "decoder", "batch.id"]


def batches(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, decoder, batch) of rows decoded at batch > 1: size, sequences, tokens, wall time and
    throughput (empty when the run decoded one sequence at a time)."""
    if "batch.size" not in rows or not (column(rows, "batch.size") > 1).any():
        return pd.DataFrame(columns=[*BATCH_KEYS, "batch.size", "batch.sequences", "batch.tokens", "batch.wall_s",
                                     "throughput"])
    batched = rows[column(rows, "batch.size") > 1]
    table = batched.groupby(BATCH_KEYS, as_index=False)[["batch.size", "batch.sequences", "batch.tokens",
                                                          "batch.wall_s"]].first()
    return table.assign(throughput=table["batch.tokens"] / table["batch.wall_s"])


def batch_summary(rows: pd.DataFrame, interval) -> dict[tuple[str, str], dict[str, float]]:
    """Per (task, decoder) at batch > 1: batch size, batches, aggregate tokens/s (all tokens over all batches'
    wall time) and, beside vanilla, the median per-batch throughput ratio with its `interval(values)`."""
    table = batches(rows)
    if table.empty:
        return {}
    reference = table[table["decoder"] == REFERENCE_DECODER][["task", "batch.id", "batch.sequences", "throughput"]]
    pairs = table.merge(reference, on=["task", "batch.id", "batch.sequences"], suffixes=("", "_ref"))
    pairs = pairs.assign(ratio=pairs["throughput"] / pairs["throughput_ref"])
    out = {}
    for (task, decoder), group in table.groupby(["task", "decoder"]):
        record = {"batch size": int(group["batch.size"].max()), "batches": len(group),
                  "batch tok/s": group["batch.tokens"].sum() / group["batch.wall_s"].sum()}
        if decoder != REFERENCE_DECODER:
            ratios = pairs[(pairs["task"] == task) & (pairs["decoder"] == decoder)]["ratio"]
            low, high = interval(ratios) if len(ratios) else (math.nan, math.nan)
            record.update({"batch speed-up": ratios.median(), "batch speed-up low": low,
                           "batch speed-up high": high, "paired batches": len(ratios)})
        out[(task, decoder)] = record
    return out
