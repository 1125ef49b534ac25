"""The numbers of a report: per (task, decoder) summaries and per-sample speedups over the reference decoder.

Two speedups are reported because they answer different questions: the median of per-sample ratios (a typical
prompt's speedup, robust to one slow sample) and the ratio of totals (throughput over the whole task, weighted by
each sample's length). They differ whenever sample lengths or speedups vary.
"""
from __future__ import annotations

import pandas as pd

from harness.schema import PARITY_CLASSES, REFERENCE_DECODER
from reports.conditions import LAUNCH
from reports.run_files import column, display_order, list_column

SPEEDUP_MEDIAN = "speedup (median of ratios)"
SPEEDUP_TOTALS = "speedup (ratio of totals)"
HEADLINE_QUALITY = ("rougeL", "pass@1", "exact_match")
STAT_COUNTERS = ("steps", "drafted", "accepted")  # shown pooled as acceptance, not averaged
MIB = 2 ** 20


def finished(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows without an error that have a timing."""
    ok = column(rows, "tokens_per_s").notna()
    if "error" in rows:
        ok &= rows["error"].isna()
    return rows[ok]


def parity_classes(rows: pd.DataFrame) -> pd.Series:
    """Each row's parity class; rows without one read `parity.match` (True: exact, False: mismatch); None where
    parity was not checked (vanilla, errors)."""
    match = rows["parity.match"] if "parity.match" in rows else pd.Series(None, index=rows.index, dtype=object)
    fallback = match.map(lambda m: None if m is None or m != m else ("exact" if m else "mismatch"))
    if "parity.class" not in rows:
        return fallback
    return rows["parity.class"].where(rows["parity.class"].notna(), fallback)


def paired_speedups(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per non-reference (decoder, task, sample) that the reference also finished: tokens/s ratio, the
    sums the ratio of totals needs and, where rows record it, each row's launch (`reports.conditions`)."""
    done = finished(rows).assign(tokens_per_s=lambda r: column(r, "tokens_per_s"),
                                 new_tokens=lambda r: column(r, "new_tokens"),
                                 total_s=lambda r: column(r, "total_s"))
    keep = ["task", "sample_id", "tokens_per_s", "new_tokens", "total_s"] + [LAUNCH] * (LAUNCH in rows)
    reference = done[done["decoder"] == REFERENCE_DECODER][keep]
    others = done[done["decoder"] != REFERENCE_DECODER][["decoder", *keep]]
    pairs = others.merge(reference, on=["task", "sample_id"], suffixes=("", "_ref"))
    return pairs.assign(speedup=pairs["tokens_per_s"] / pairs["tokens_per_s_ref"])


def speedup_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, decoder): median, quartiles and ratio of totals of the paired speedups."""
    def one(group: pd.DataFrame) -> pd.Series:
        ratio = group["speedup"]
        timed = group.dropna(subset=["new_tokens", "total_s", "new_tokens_ref", "total_s_ref"]).sum(numeric_only=True)
        totals = ((timed["new_tokens"] / timed["total_s"]) / (timed["new_tokens_ref"] / timed["total_s_ref"])
                  if timed["total_s"] > 0 else float("nan"))
        return pd.Series({SPEEDUP_MEDIAN: ratio.median(), "speedup q25": ratio.quantile(0.25),
                          "speedup q75": ratio.quantile(0.75), SPEEDUP_TOTALS: totals, "paired samples": len(group)})

    if pairs.empty:
        return pd.DataFrame()
    return pairs.groupby(["task", "decoder"])[list(pairs.columns.drop(["task", "decoder"]))].apply(one)


def quality_metrics(rows: pd.DataFrame) -> list[str]:
    """Headline quality metrics present in the rows, or every quality metric when none of those is."""
    present = [c.removeprefix("quality.") for c in rows.columns if c.startswith("quality.")]
    return [m for m in HEADLINE_QUALITY if m in present] or present


def scalar_stats(rows: pd.DataFrame) -> list[str]:
    """Decoder statistics that are one number per sample (lists such as exit_layers are summarised separately)."""
    names = []
    for c in rows.columns:
        if c.startswith("stats.") and c.removeprefix("stats.") not in STAT_COUNTERS:
            if pd.to_numeric(rows[c], errors="coerce").notna().any():
                names.append(c.removeprefix("stats."))
    return names


def group_summary(group: pd.DataFrame, quality: list[str], stats: list[str]) -> dict[str, float]:
    """Speed, latency, parity, quality, decoder statistics and memory of one (task, decoder)."""
    done = finished(group)
    tps = column(done, "tokens_per_s")
    errors = int(group["error"].notna().sum()) if "error" in group else 0
    out = {"samples": len(group), "errors": errors, "tok/s median": tps.median(),
           "tok/s IQR": tps.quantile(0.75) - tps.quantile(0.25),
           "TTFT median ms": column(done, "ttft_s").median() * 1e3, "parity rate": column(group, "parity.match").mean()}
    classes = parity_classes(group).dropna()
    if len(classes):  # counts, and the share without a mismatch (near-ties pass), which `compare` gates on
        out.update({f"parity {c.replace('_', '-')}": int((classes == c).sum()) for c in PARITY_CLASSES})
        out["parity ok rate"] = (classes != "mismatch").mean()
    out.update({m: column(done, f"quality.{m}").mean() for m in quality})
    drafted, accepted = column(done, "stats.drafted").sum(min_count=1), column(done, "stats.accepted").sum(min_count=1)
    out["acceptance (pooled)"] = accepted / drafted if drafted else float("nan")
    out.update({f"{s} (mean)": column(done, f"stats.{s}").mean() for s in stats})
    exits = [layer for layers in list_column(done, "stats.exit_layers") for layer in layers]
    out["mean exit layer"] = pd.Series(exits, dtype=float).mean()
    for name, label in (("torch_peak_bytes", "torch peak MiB"), ("rss_peak_bytes", "RSS peak MiB"),
                        ("nvml_peak_bytes", "NVML peak MiB")):
        out[label] = column(group, f"memory.{name}").max() / MIB
    return out


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """The report table: one row per (task, decoder), reference first; a column is NaN where nothing measured it."""
    quality, stats = quality_metrics(rows), scalar_stats(rows)
    table = pd.DataFrame.from_dict(
        {key: group_summary(group, quality, stats) for key, group in rows.groupby(["task", "decoder"], sort=True)},
        orient="index")
    table.index.names = ["task", "decoder"]
    speed = speedup_summary(paired_speedups(rows))
    if not speed.empty:  # the speedups right after the speed they are ratios of
        speedups = speed[[SPEEDUP_MEDIAN, "speedup q25", "speedup q75", SPEEDUP_TOTALS]]
        at = table.columns.get_loc("tok/s IQR") + 1
        table = pd.concat([table.iloc[:, :at], table.join(speedups)[speedups.columns], table.iloc[:, at:]], axis=1)
    for m in quality:  # each metric beside the reference's on the same task
        reference = table[m].xs(REFERENCE_DECODER, level="decoder") if REFERENCE_DECODER in table.index.get_level_values(1) else None
        position = table.columns.get_loc(m) + 1
        values = table.index.get_level_values("task").map(reference) if reference is not None else float("nan")
        table.insert(position, f"{m} ({REFERENCE_DECODER})", values)
    order = [(task, d) for task in sorted(table.index.unique("task"))
             for d in display_order(table.xs(task, level="task").index)]
    return table.loc[order]
