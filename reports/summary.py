"""The end-of-run summary printed on the terminal: per task and decoder the speed-up as the median of per-sample
ratios with its 95 % bootstrap interval, the ratio of totals (named as such), parity classes and errors; then the
verdict's warnings (parity mismatches, errors, too few samples, outlier samples to rerun)."""
from __future__ import annotations

import pandas as pd


from harness.schema import REFERENCE_DECODER
from reports.verdict import verdict, warnings


def format_summary(rows: pd.DataFrame, meta: dict | None = None, distribution: pd.DataFrame | None = None) -> str:
    table = verdict(rows, distribution)
    lines = []
    for (task, decoder), r in table.iterrows():
        speed = "n/a" if r["tok/s median"] != r["tok/s median"] else f"{r['tok/s median']:.2f}"
        parts = [f"{decoder} on {task}: {speed} tokens/s (median)"]
        if decoder == REFERENCE_DECODER and speed != "n/a" and r.get("batch size", 1) == 1:
            parts[0] += floor_note(r["tok/s median"], (meta or {}).get("bandwidth"))
        if decoder != REFERENCE_DECODER and r["paired"] > 0:
            interval = (f", 95% CI {r['speed-up low']:.2f}-{r['speed-up high']:.2f}"
                        if r["speed-up low"] == r["speed-up low"] else "")
            parts.append(f"speed-up {r['speed-up']:.2f}x (median of {int(r['paired'])} per-sample ratios{interval}), "
                         f"ratio of totals {r['ratio of totals']:.2f}x")
            if r.get("distribution passed") in (True, False):
                parts.append(f"distribution check {'passed' if r['distribution passed'] else 'FAILED'} "
                             f"(p = {r['distribution p']:.3g})")
            else:
                parts.append(f"parity {int(r['exact'])} exact / {int(r['near_tie'])} near-tie / "
                             f"{int(r['mismatch'])} mismatch")
        if r.get("batch size", 1) > 1:
            parts.append(batch_line(r))
        parts.append(f"{int(r['samples'])} samples, {int(r['errors'])} errors")
        lines.append("; ".join(parts))
    lines += [f"{w.level.upper()}: {w.text}" for w in warnings(rows, table, meta)]
    return "\n".join(lines)


def floor_note(tokens_per_s: float, bandwidth: dict | None) -> str:
    """How much of the machine a one-sequence decoder uses: its tokens/s over the bandwidth floor measured in the
    run (`meta.json` `bandwidth`; none in folders written before it was recorded)."""
    if not bandwidth:
        return ""
    floor = bandwidth["floor_tokens_per_s"]
    return (f" = {tokens_per_s / floor:.2f} of the bandwidth floor ({floor:.1f} tokens/s: "
            f"{bandwidth['weight_bytes'] / 1e6:.0f} MB of weights read at {bandwidth['read_gb_per_s']:.1f} GB/s, "
            f"measured in this run)")


def batch_line(r: pd.Series) -> str:
    """At batch > 1: the aggregate throughput and, beside vanilla, its speed-up at the same batch size."""
    line = f"batch {int(r['batch size'])}: {r['batch tok/s']:.2f} tokens/s aggregate over {int(r['batches'])} batches"
    if r.get("paired batches", 0) > 0:
        interval = (f", 95% CI {r['batch speed-up low']:.2f}-{r['batch speed-up high']:.2f}"
                    if r["batch speed-up low"] == r["batch speed-up low"] else "")
        line += (f", batch speed-up {r['batch speed-up']:.2f}x (median of {int(r['paired batches'])} per-batch "
                 f"ratios{interval})")
    return line
