"""The verdict of a run: per task and decoder, how much faster than vanilla, how sure, and whether the output is
vanilla's; and the warnings a reader must not miss (parity mismatches, errors, too few samples, missing telemetry,
outlier samples).

The speed-up is the median of per-sample ratios (a typical prompt) with a 95 % bootstrap interval (resampling
samples, seeded), beside the ratio of totals (throughput over the whole task). Quality is compared sample by sample
with vanilla's: the mean difference with a bootstrap interval. Parity rows are classified by the runner
(`parity.class`: exact, near_tie, mismatch); rows written before it did are read as exact (match) or mismatch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.schema import PARITY_CLASSES, REFERENCE_DECODER
from reports.batches import batch_summary
from reports.aggregate import finished, paired_speedups, parity_classes, quality_metrics
from reports.conditions import mixed_conditions, resumed_pairs
from reports.run_files import column, display_order

MIN_SAMPLES = 20  # fewer paired samples than this never make a firm figure
MAX_HALF_WIDTH = 0.05  # nor does an interval wider than ±5 % of the median speed-up
RESAMPLES = 2000
SEED = 0
OUTLIER_IQRS = 3.0  # a per-sample ratio outside [q1 - 3 IQR, q3 + 3 IQR] is named
FAILURE, CAUTION, NOTE = "failure", "caution", "note"


@dataclass(frozen=True)
class Warning:
    level: str  # FAILURE (the figures are wrong or incomplete), CAUTION (not firm), NOTE (worth knowing)
    text: str


def bootstrap_interval(values, statistic=np.median, level: float = 0.95, resamples: int = RESAMPLES,
                       seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over `values` (resampled with replacement, seeded);
    NaN for fewer than two values."""
    values = np.asarray(pd.Series(values, dtype=float).dropna())
    if len(values) < 2:
        return math.nan, math.nan
    picks = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    stats = statistic(values[picks], axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))


def outliers(pairs: pd.DataFrame) -> pd.DataFrame:
    """The paired samples whose speed-up lies more than `OUTLIER_IQRS` interquartile ranges outside the quartiles
    of their (task, decoder); needs at least 4 samples."""
    def far(group: pd.DataFrame) -> pd.DataFrame:
        q1, q3 = group["speedup"].quantile([0.25, 0.75])
        spread = OUTLIER_IQRS * (q3 - q1)
        if len(group) < 4:
            return group.iloc[:0]
        return group[(group["speedup"] < q1 - spread) | (group["speedup"] > q3 + spread)]

    if pairs.empty:
        return pairs
    return pd.concat([far(g) for _, g in pairs.groupby(["task", "decoder"])])


def samples_needed(n: int, median: float, low: float, high: float) -> int | None:
    """Paired samples for a firm figure (≥ `MIN_SAMPLES`, interval within ±`MAX_HALF_WIDTH` of the median), from
    the interval's half-width shrinking as 1/√n; None when the figure is already firm."""
    half = (high - low) / 2 / median if median and not math.isnan(low) else math.inf
    if n >= MIN_SAMPLES and half <= MAX_HALF_WIDTH:
        return None
    if math.isinf(half):
        return MIN_SAMPLES
    return max(MIN_SAMPLES, math.ceil(n * (half / MAX_HALF_WIDTH) ** 2))


def _quality_differences(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (task, decoder other than vanilla, sample): the decoder's quality minus vanilla's on the same sample."""
    done = finished(rows).assign(value=lambda r: column(r, f"quality.{metric}"))[["task", "decoder", "sample_id",
                                                                                   "value"]]
    reference = done[done["decoder"] == REFERENCE_DECODER].drop(columns="decoder")
    pairs = done[done["decoder"] != REFERENCE_DECODER].merge(reference, on=["task", "sample_id"], suffixes=("", "_ref"))
    return pairs.assign(difference=pairs["value"] - pairs["value_ref"]).dropna(subset=["difference"])


def verdict(rows: pd.DataFrame, distribution: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (task, decoder), reference first: samples, errors, median tokens/s, the speed-ups with their
    interval, parity class counts, the quality difference with vanilla's and its interval, and the decoder's
    headline statistic (early rate where it has one, else mean accepted tokens per step). A sampled run's
    `distribution` checks add `distribution p` and `distribution passed` (they replace parity there)."""
    rows = rows.assign(parity_class=parity_classes(rows))
    pairs = paired_speedups(rows)
    metrics = {task: next(iter(quality_metrics(part.dropna(axis=1, how="all"))), None)
               for task, part in rows.groupby("task")}
    differences = {task: _quality_differences(rows[rows["task"] == task], metric)
                   for task, metric in metrics.items() if metric}
    records = {}
    for (task, decoder), group in rows.groupby(["task", "decoder"], sort=True):
        metric = metrics[task]
        done = finished(group)
        ratios = pairs.loc[(pairs["task"] == task) & (pairs["decoder"] == decoder)]
        record = {"samples": len(group), "errors": len(group) - len(done),
                  "tok/s median": column(done, "tokens_per_s").median(), "paired": len(ratios)}
        if decoder != REFERENCE_DECODER:
            median = ratios["speedup"].median()
            low, high = bootstrap_interval(ratios["speedup"])
            timed = ratios.sum(numeric_only=True)
            totals = ((timed["new_tokens"] / timed["total_s"]) / (timed["new_tokens_ref"] / timed["total_s_ref"])
                      if len(ratios) and timed["total_s"] > 0 else math.nan)
            record.update({"speed-up": median, "speed-up low": low, "speed-up high": high, "ratio of totals": totals,
                           "samples needed": samples_needed(len(ratios), median, low, high) if len(ratios) else None})
            record.update({c: int((group["parity_class"] == c).sum()) for c in PARITY_CLASSES})
            record["first divergences"] = [int(d) for d in column(group[group["parity_class"] == "mismatch"],
                                                                  "parity.first_divergence").dropna()]
        if metric:
            record.update({"quality metric": metric, "quality": column(done, f"quality.{metric}").mean()})
            mine = differences[task][differences[task]["decoder"] == decoder]
            if decoder != REFERENCE_DECODER and len(mine):
                low, high = bootstrap_interval(mine["difference"], np.mean)
                record.update({"quality difference": mine["difference"].mean(), "quality difference low": low,
                               "quality difference high": high})
        early, accepted = column(done, "stats.early_rate"), column(done, "stats.mean_acceptance_length")
        if early.notna().any():
            record["early rate"] = early.mean()
        elif accepted.notna().any():
            record["mean accepted tokens"] = accepted.mean()
        records[(task, decoder)] = record
    for key, record in batch_summary(rows, bootstrap_interval).items():
        records[key].update(record)
    for check in ([] if distribution is None or distribution.empty else distribution.to_dict("records")):
        if (check["task"], check["decoder"]) in records:
            records[check["task"], check["decoder"]].update({
                "distribution p": check["p_value"], "distribution chi-square": check["statistic"],
                "distribution draws": check["draws"], "distribution passed": bool(check["passed"])})
    table = pd.DataFrame.from_dict(records, orient="index")
    table.index.names = ["task", "decoder"]
    order = [(task, d) for task in sorted(table.index.unique("task"))
             for d in display_order(table.xs(task, level="task").index)]
    return table.loc[order]


def invalid(table: pd.DataFrame) -> set[tuple[str, str]]:
    """(task, decoder) pairs whose speed-ups compare different outputs: at least one parity mismatch, or (under
    sampling) a failed distribution check."""
    bad = {key for key, n in table["mismatch"].items() if n == n and n > 0} if "mismatch" in table else set()
    if "distribution passed" in table:
        bad |= {key for key, passed in table["distribution passed"].items() if passed in (True, False) and not passed}
    return bad


def _telemetry_warnings(rows: pd.DataFrame, meta: dict) -> list[Warning]:
    found = []
    done = finished(rows)
    memory = [c for c in done.columns if c.startswith("memory.") and c != "memory.nvml_samples"]
    if meta.get("telemetry") is False:
        found.append(Warning(CAUTION, "no memory telemetry: the run was made with --no-telemetry"))
    elif len(done) and (not memory or done[memory].isna().all().all()):
        found.append(Warning(CAUTION, "no memory telemetry in the rows (every memory field is empty)"))
    elif str(meta.get("device", "")).startswith("cuda") and column(done, "memory.nvml_peak_bytes").isna().all():
        found.append(Warning(CAUTION, "no NVML readings on a CUDA run (is nvidia-ml-py installed?): device memory "
                                      "over time is missing"))
    if len(done) and column(done, "ttft_s").isna().all():
        found.append(Warning(CAUTION, "no time-to-first-token in the rows"))
    return found


def _isolation_warnings(meta: dict) -> list[Warning]:
    """Generated code scored under weaker isolation than bubblewrap's (`tasks.sandbox`)."""
    isolation = meta.get("code_isolation") or {}
    if not isolation.get("weaker"):
        return []
    return [Warning(CAUTION, f"WEAKER CODE ISOLATION: the generated code was scored without bubblewrap "
                             f"({isolation.get('detail')}): it could see the network and the user's files")]


def _resume_warnings(rows: pd.DataFrame) -> list[Warning]:
    """A resume that changed the rows' conditions, and speed-up pairs timed in different launches."""
    found = []
    mixed = mixed_conditions(rows)
    if mixed:
        found.append(Warning(CAUTION, f"MIXED CONDITIONS: the rows were made under different conditions ({mixed}): a "
                                      f"resume changed them; rerun into a fresh --out for rows made alike"))
    crossing = resumed_pairs(paired_speedups(rows))
    if crossing:
        found.append(Warning(NOTE, f"resumed: {crossing}: each such ratio divides timings taken in two launches, "
                                   f"whose machine state may differ"))
    return found


def _distribution_warnings(task: str, decoder: str, r: pd.Series) -> list[Warning]:
    """Under sampling: the distribution check's verdict, which replaces token parity."""
    passed = r.get("distribution passed")
    if passed is None or passed != passed:
        return [Warning(CAUTION, f"NO DISTRIBUTION CHECK: {decoder} on {task}: the run samples, so token parity does "
                                 f"not apply, and no distribution check was recorded (--distribution-draws 0?)")]
    figures = (f"chi-square {r['distribution chi-square']:.2f}, p = {r['distribution p']:.3g} over "
               f"{int(r['distribution draws'])} draws")
    if not passed:
        return [Warning(FAILURE, f"DISTRIBUTION MISMATCH: {decoder} on {task}: its first tokens are not distributed "
                                 f"as the model's ({figures}); its speed-ups and quality are invalid")]
    return [Warning(NOTE, f"sampling: {decoder} on {task}: distribution check passed ({figures}); token parity does "
                          f"not apply under sampling")]


def warnings(rows: pd.DataFrame, table: pd.DataFrame, meta: dict | None = None) -> list[Warning]:
    """Everything a reader must see before the numbers, failures first."""
    found: list[Warning] = []
    sampled = (meta or {}).get("sampling", {}).get("greedy") is False
    for (task, decoder), r in table.iterrows():
        if sampled:
            found += _distribution_warnings(task, decoder, r)
        if decoder != REFERENCE_DECODER and r.get("mismatch", 0) > 0:
            at = ", ".join(map(str, r["first divergences"][:5]))
            found.append(Warning(FAILURE, f"PARITY MISMATCH: {decoder} on {task}: {int(r['mismatch'])} of "
                                          f"{int(r['exact'] + r['near_tie'] + r['mismatch'])} samples differ from "
                                          f"vanilla (first divergence at token {at}); its speed-ups compare different "
                                          f"outputs and are invalid"))
        if r["errors"] > 0:
            first = rows.loc[(rows["task"] == task) & (rows["decoder"] == decoder), "error"].dropna()
            found.append(Warning(FAILURE, f"ERRORS: {decoder} on {task}: {int(r['errors'])} of {int(r['samples'])} "
                                          f"samples failed (first: {first.iloc[0] if len(first) else '?'})"))
    few = []
    for (task, decoder), r in table.iterrows():
        if decoder != REFERENCE_DECODER and r.get("near_tie", 0) > 0:
            found.append(Warning(NOTE, f"near-tie: {decoder} on {task}: {int(r['near_tie'])} samples diverge from "
                                       f"vanilla only where vanilla's top two tokens were a near-tie (numerical "
                                       f"noise, not a decoder bug)"))
        needed = r.get("samples needed")
        if decoder != REFERENCE_DECODER and needed == needed and needed is not None:
            interval = (f"95 % CI {r['speed-up low']:.3f}–{r['speed-up high']:.3f}"
                        if r["speed-up low"] == r["speed-up low"] else "no interval")
            few.append(f"{decoder} on {task}: {r['speed-up']:.3f} from {int(r['paired'])} samples ({interval}), "
                       f"needs about {int(needed)}")
    if few:
        found.append(Warning(CAUTION, f"FEW SAMPLES for a firm speed-up (n ≥ {MIN_SAMPLES} and a 95 % interval "
                                      f"within ±{MAX_HALF_WIDTH:.0%}): " + "; ".join(few)))
    far = outliers(paired_speedups(rows))
    for (task, decoder), group in (far.groupby(["task", "decoder"]) if len(far) else []):
        named = ", ".join(f"{s} ({x:.2f}x)" for s, x in zip(group["sample_id"], group["speedup"]))
        found.append(Warning(CAUTION, f"OUTLIERS: {decoder} on {task}: {named} lie far outside the other samples' "
                                      f"ratios (beyond {OUTLIER_IQRS:g} IQR); rerun those samples to settle them"))
    found += _telemetry_warnings(rows, meta or {}) + _isolation_warnings(meta or {}) + _resume_warnings(rows)
    order = {FAILURE: 0, CAUTION: 1, NOTE: 2}
    return sorted(found, key=lambda w: order[w.level])
