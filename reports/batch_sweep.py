"""Where speculation stops paying: every decoder's speed-up over vanilla against the batch size.

A batch sweep (`run.py sweep --grid batch_size=1,2,4,...`) is one run folder per batch size, every decoder beside
vanilla at that size. At batch 1 a decoder's speed-up is the median of its per-sample ratios, at batch > 1 the
median of its per-batch throughput ratios (`reports/batches.py`), each with its 95 % bootstrap interval; a
decoder's crossover is the smallest batch size from which its speed-up stays below 1x. Where the sweep holds
batch 1, each point also counts the samples whose tokens are vanilla's at batch 1 (parity per sequence across
batch sizes; within a run, parity compares each decoder with vanilla at the same batch size).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from harness.schema import REFERENCE_DECODER
from reports.aggregate import finished
from reports.batches import batch_summary
from reports.plots import to_png
from reports.run_files import Run, column
from reports.verdict import bootstrap_interval, verdict

BATCH_SWEEP_FILE = "batch_sweep.csv"
BATCH_PLOT_FILE = "batch_sweep.png"


def batch_size(run: Run) -> int:
    """The batch size a run decoded at (runs written before it was recorded decoded one sequence at a time)."""
    return int(run.meta.get("batch_size") or 1)


def batch_curve(runs: list[Run]) -> pd.DataFrame:
    """One row per (task, decoder, batch size): aggregate tokens/s and the speed-up over vanilla with its interval."""
    records = []
    for run in runs:
        size = batch_size(run)
        if size > 1:
            measured = batch_summary(run.rows, bootstrap_interval)
            for (task, decoder), r in measured.items():
                records.append({"task": task, "decoder": decoder, "batch_size": size, "tokens_per_s": r["batch tok/s"],
                                **_speedup(decoder, r.get("batch speed-up"), r.get("batch speed-up low"),
                                           r.get("batch speed-up high"))})
            continue
        table = verdict(run.rows)
        for (task, decoder), r in table.iterrows():
            done = finished(run.rows[(run.rows["task"] == task) & (run.rows["decoder"] == decoder)])
            records.append({"task": task, "decoder": decoder, "batch_size": 1,
                            "tokens_per_s": column(done, "new_tokens").sum() / column(done, "total_s").sum(),
                            **_speedup(decoder, r.get("speed-up"), r.get("speed-up low"), r.get("speed-up high"))})
    curve = pd.DataFrame(records)
    return curve.merge(same_as_batch_one(runs), on=["task", "decoder", "batch_size"], how="left").sort_values(
        ["task", "decoder", "batch_size"], ignore_index=True)


def same_as_batch_one(runs: list[Run]) -> pd.DataFrame:
    """Per (task, decoder, batch size): how many finished samples (`samples`) returned exactly the tokens vanilla
    returned for them at batch 1 (`same_as_batch_1`); empty without a batch-1 run of vanilla."""
    columns = ["task", "decoder", "batch_size", "same_as_batch_1", "samples"]
    ones = [run for run in runs if batch_size(run) == 1]
    if not ones:
        return pd.DataFrame(columns=columns).astype({"batch_size": "int64"})
    reference = finished(ones[0].rows[ones[0].rows["decoder"] == REFERENCE_DECODER])
    tokens = {(task, sample): tuple(t) for task, sample, t in
              zip(reference["task"], reference["sample_id"], reference["tokens"])}
    records = []
    for run in runs:
        done = finished(run.rows)
        same = [tokens.get((task, sample)) == tuple(t) for task, sample, t in
                zip(done["task"], done["sample_id"], done["tokens"])]
        counted = done.assign(same=same).groupby(["task", "decoder"])["same"].agg(["sum", "count"])
        for (task, decoder), (total_same, count) in counted.iterrows():
            records.append({"task": task, "decoder": decoder, "batch_size": batch_size(run),
                            "same_as_batch_1": int(total_same), "samples": int(count)})
    return pd.DataFrame(records, columns=columns).astype({"batch_size": "int64"})


def _speedup(decoder: str, median, low, high) -> dict[str, float]:
    if decoder == REFERENCE_DECODER:
        return {"speedup": 1.0, "speedup_low": 1.0, "speedup_high": 1.0}
    return {"speedup": median, "speedup_low": low, "speedup_high": high}


def crossovers(curve: pd.DataFrame) -> dict[tuple[str, str], int | None]:
    """Per (task, decoder other than vanilla): the smallest batch size from which the speed-up stays below 1x
    (None: it pays at every batch size measured)."""
    out = {}
    for (task, decoder), group in curve[curve["decoder"] != REFERENCE_DECODER].groupby(["task", "decoder"]):
        below = None
        for size, speedup in zip(group["batch_size"], group["speedup"]):
            below = (below or size) if speedup < 1 else None
        out[(task, decoder)] = below
    return out


def batch_plot(curve: pd.DataFrame) -> bytes:
    """Speed-up against batch size, one line per decoder (bars: 95 % intervals), one panel per task."""
    tasks = sorted(curve["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = curve[(curve["task"] == task) & (curve["decoder"] != REFERENCE_DECODER)]
        for decoder, group in part.groupby("decoder"):
            low = (group["speedup"] - group["speedup_low"]).fillna(0).clip(lower=0)
            high = (group["speedup_high"] - group["speedup"]).fillna(0).clip(lower=0)
            ax.errorbar(group["batch_size"], group["speedup"], yerr=[low, high], marker="o", capsize=3, label=decoder)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("speed-up over vanilla at the same batch size")
        ax.set_title(task)
        ax.legend(fontsize=8)
    fig.suptitle("Speed-up against batch size")
    return to_png(fig)


def write_batch_sweep(folder: Path, runs: list[Run]) -> tuple[Path, list[str]]:
    """Writes the curve (`batch_sweep.csv`) and its plot (`batch_sweep.png`) into `folder`; returns the CSV's path and
    one line per decoder naming its crossover."""
    curve = batch_curve(runs)
    curve.to_csv(folder / BATCH_SWEEP_FILE, index=False)
    (folder / BATCH_PLOT_FILE).write_bytes(batch_plot(curve))
    lines = []
    for (task, decoder), size in crossovers(curve).items():
        points = [(b, s) for b, s in curve[(curve["task"] == task) & (curve["decoder"] == decoder)]
                  [["batch_size", "speedup"]].itertuples(index=False, name=None) if not math.isnan(s)]
        sizes = ", ".join(f"{b}: {s:.2f}x" for b, s in points)
        lines.append(f"{decoder} on {task}: {crossover_words(size, points)} ({sizes})")
    for (task, decoder), group in curve.dropna(subset=["same_as_batch_1"]).groupby(["task", "decoder"]):
        counts = ", ".join(f"{int(r.same_as_batch_1)}/{int(r.samples)} at batch {r.batch_size}"
                           for r in group.itertuples())
        lines.append(f"{decoder} on {task}, the tokens vanilla returns at batch 1: {counts}")
    return folder / BATCH_SWEEP_FILE, lines


def crossover_words(size: int | None, points: list[tuple[int, float]]) -> str:
    """What a decoder's crossover (`crossovers`) says, given its (batch size, speed-up) points."""
    if size is not None:
        return f"below 1x from batch {size}"
    below = [str(b) for b, s in points if s < 1]
    if not below:
        return "pays at every batch size measured"
    return f"no crossover: below 1x at batch {', '.join(below)}, above it at the largest size measured"
