"""The report's figures as PNG bytes. Each function returns None when the run holds no data for its figure:
a missing figure is skipped, never drawn from invented numbers."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from reports.aggregate import (SPEEDUP_MEDIAN, SPEEDUP_TOTALS, finished, paired_speedups, parity_classes,  # noqa: E402
                               speedup_summary)
from reports.run_files import column, display_order, list_column  # noqa: E402
from reports.sweeps import METRICS, setting_columns  # noqa: E402

MIB = 2 ** 20


def to_png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def per_task_axes(tasks: list[str], width: float = 4.5, height: float = 3.6) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, len(tasks), figsize=(width * len(tasks), height), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ax.set_title(task)
    return fig, list(axes[0])


def mismatched(rows: pd.DataFrame) -> set[tuple[str, str]]:
    """(task, decoder) pairs with at least one parity mismatch (near-ties are not mismatches)."""
    bad = rows[parity_classes(rows) == "mismatch"]
    return set(zip(bad["task"], bad["decoder"]))


def speedup_bars(rows: pd.DataFrame) -> bytes | None:
    """Median per-sample speedup per task and decoder, whiskers at the quartiles, dots at the ratio of totals.
    A bar whose decoder has a parity mismatch on that task is drawn grey and hatched, labelled invalid: its
    speed-up compares different outputs."""
    summary = speedup_summary(paired_speedups(rows))
    if summary.empty:
        return None
    invalid = mismatched(rows)
    tasks = sorted(summary.index.get_level_values("task").unique())
    decoders = sorted(summary.index.get_level_values("decoder").unique())
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(tasks) * len(decoders)), 4))
    width = 0.8 / len(decoders)
    for d, decoder in enumerate(decoders):
        part = summary.xs(decoder, level="decoder").reindex(tasks)
        x = [t + (d - (len(decoders) - 1) / 2) * width for t in range(len(tasks))]
        median = part[SPEEDUP_MEDIAN]
        spread = [median - part["speedup q25"], part["speedup q75"] - median]
        bars = ax.bar(x, median, width, yerr=spread, capsize=4, label=f"{decoder} (median, IQR)")
        for bar, task, value in zip(bars, tasks, median):
            if (task, decoder) in invalid:
                bar.set(facecolor="lightgrey", edgecolor="black", hatch="///")
                ax.annotate("INVALID:\nparity\nmismatch", (bar.get_x() + bar.get_width() / 2, value),
                            ha="center", va="bottom", fontsize=8, color="darkred", xytext=(0, 4),
                            textcoords="offset points")
        if part[SPEEDUP_TOTALS].notna().any():
            ax.plot(x, part[SPEEDUP_TOTALS], "kD", markersize=5, label=f"{decoder} (ratio of totals)")
    ax.axhline(1.0, color="grey", linewidth=1, linestyle="--")
    if invalid:
        ax.set_ylim(top=ax.get_ylim()[1] * 1.2)  # room for the INVALID labels
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("tokens/s over vanilla")
    ax.set_title("Speedup over vanilla greedy")
    ax.legend(fontsize=8)
    return to_png(fig)


def per_task_boxes(rows: pd.DataFrame, values: pd.Series, ylabel: str, title: str) -> bytes | None:
    """Box plot with the samples overlaid, one panel per task, one box per decoder."""
    data = rows.assign(value=values).dropna(subset=["value"])
    if data.empty:
        return None
    tasks = sorted(data["task"].unique())
    fig, axes = per_task_axes(tasks)
    for ax, task in zip(axes, tasks):
        part = data[data["task"] == task]
        decoders = display_order(part["decoder"])
        samples = [part.loc[part["decoder"] == d, "value"] for d in decoders]
        ax.boxplot(samples, tick_labels=[d.replace("@", "\n@").replace(",", ",\n") for d in decoders])
        for i, s in enumerate(samples, 1):
            ax.plot([i] * len(s), s, "o", alpha=0.5, markersize=4)
        ax.set_ylabel(ylabel)
    fig.suptitle(title)
    return to_png(fig)


def tokens_per_s(rows: pd.DataFrame) -> bytes | None:
    done = finished(rows)
    return per_task_boxes(done, column(done, "tokens_per_s"), "tokens/s", "Tokens/s per sample")


def per_token_latency(rows: pd.DataFrame) -> bytes | None:
    """Decode time per token after the first (the first token's time is the TTFT)."""
    done = finished(rows)
    after_first = column(done, "new_tokens") - 1
    latency = column(done, "decode_s") / after_first.where(after_first > 0) * 1e3
    return per_task_boxes(done, latency, "ms per token", "Per-token decode latency (after the first token)")


def per_decoder_histograms(rows: pd.DataFrame, stat: str, xlabel: str, title: str) -> bytes | None:
    """One panel per decoder that reports the list statistic `stat`, one histogram per task, integer bins."""
    values = rows.assign(values=list_column(rows, f"stats.{stat}"))
    values = values[values["values"].map(len) > 0]
    if values.empty:
        return None
    decoders = display_order(values["decoder"])
    fig, axes = plt.subplots(1, len(decoders), figsize=(5.0 * len(decoders), 3.6), squeeze=False)
    for ax, decoder in zip(axes[0], decoders):
        part = values[values["decoder"] == decoder]
        tasks = sorted(part["task"].unique())
        pooled = [[v for vs in part.loc[part["task"] == t, "values"] for v in vs] for t in tasks]
        low, high = int(min(map(min, pooled))), int(max(map(max, pooled)))
        labels = [f"{task} ({len(p)})" for task, p in zip(tasks, pooled)]
        ax.hist(pooled, bins=[b - 0.5 for b in range(low, high + 2)], label=labels)
        ax.set_title(decoder)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return to_png(fig)


def exit_layers(rows: pd.DataFrame) -> bytes | None:
    return per_decoder_histograms(rows, "exit_layers", "layer the token was emitted at", "Exit layers per token")


def acceptance_lengths(rows: pd.DataFrame) -> bytes | None:
    return per_decoder_histograms(rows, "acceptance_lengths", "tokens accepted per verification (bonus included)",
                                  "Acceptance lengths")


def memory_over_time(rows: pd.DataFrame) -> bytes | None:
    """Device memory used during each generation, from the NVML samples; one panel per decoder."""
    samples = rows.assign(samples=list_column(rows, "memory.nvml_samples"))
    samples = samples[samples["samples"].map(len) > 0]
    if samples.empty:
        return None
    decoders = display_order(samples["decoder"])
    fig, axes = plt.subplots(1, len(decoders), figsize=(5.0 * len(decoders), 3.6), squeeze=False, sharey=True)
    for ax, decoder in zip(axes[0], decoders):
        for _, row in samples[samples["decoder"] == decoder].iterrows():
            points = [(s[0], s[1] / MIB) for s in row["samples"] if s[1] is not None]  # null: NVML refused
            if points:
                ax.plot(*zip(*points), linewidth=1, alpha=0.7)
        ax.set_title(decoder)
        ax.set_xlabel("seconds into the generation")
        ax.set_ylabel("device memory used, MiB")
    fig.suptitle("Device memory over time (NVML), one line per sample")
    return to_png(fig)


def sweep_plot(sweep: pd.DataFrame, title: str) -> bytes | None:
    """Each metric of a sweep table against the numeric setting with the most values; one line per task, decoder
    and value of the other settings where they vary, named in a legend panel. None without a numeric setting
    taking two values or a metric."""
    settings = setting_columns(sweep)
    varying = [c for c in settings if sweep[c].astype(str).nunique() > 1]
    numeric = [c for c in varying if pd.api.types.is_numeric_dtype(sweep[c])]
    if not numeric:
        return None
    x = max(numeric, key=lambda c: sweep[c].nunique())
    sweep = sweep.dropna(subset=[x])  # decoders without this setting
    metrics = [m for m in METRICS.values() if m in sweep and sweep[m].notna().any()]
    if not metrics:
        return None
    ids = [c for c in ("task", "decoder") if c in sweep]
    series = [c for c in ids if sweep[c].nunique() > 1] + [c for c in varying if c != x]
    constant = ", ".join(str(sweep[c].iloc[0]) for c in ids if sweep[c].nunique() == 1)
    groups = list(sweep.groupby(series, dropna=False)) if series else [((), sweep)]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = len(metrics) + bool(series)
    columns = min(4, panels)
    fig, axes = plt.subplots(-(-panels // columns), columns, figsize=(4.0 * columns, 3.4 * -(-panels // columns)),
                             squeeze=False)
    lines = {}
    for ax, metric in zip(axes.flat, metrics):
        for i, (key, group) in enumerate(groups):
            group = group.dropna(subset=[metric]).sort_values(x)
            label = ", ".join(f"{c}={v}" if c in settings else str(v) for c, v in zip(series, key))
            if not group.empty:
                lines[label], = ax.plot(group[x], group[metric], "o-", color=colors[i % len(colors)])
        ax.set_xlabel(x)
        ax.set_title(metric)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    if series:
        axes.flat[len(metrics)].legend(lines.values(), lines.keys(), loc="center", fontsize=8)
    fig.suptitle(f"{title}: {constant}" if constant else title)
    return to_png(fig)


def sweeps(folder: Path, across_runs: pd.DataFrame) -> dict[str, bytes | None]:
    """Settings trade-off curves: from each sweep CSV in the run folder (`run.py sweep` writes `sweep.csv`), and
    from the summaries of several runs made with different settings."""
    figures = {f"sweep: {path.stem}": sweep_plot(pd.read_csv(path), f"Settings sweep ({path.name})")
               for path in sorted(folder.glob("*.csv"))}
    figures["sweep across runs"] = sweep_plot(across_runs, "Settings across runs")
    return figures


def all_figures(rows: pd.DataFrame, folder: Path, across_runs: pd.DataFrame) -> dict[str, bytes]:
    """Every figure the run has data for, by title, in report order."""
    figures = {"Speedup over vanilla": speedup_bars(rows), "Tokens/s distributions": tokens_per_s(rows),
               "Per-token latency": per_token_latency(rows), "Exit layers": exit_layers(rows),
               "Acceptance lengths": acceptance_lengths(rows), "Memory over time": memory_over_time(rows)}
    figures.update(sweeps(folder, across_runs))
    return {title: png for title, png in figures.items() if png is not None}
