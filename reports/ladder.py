"""The model ladder: runs of several models side by side, per task and decoder, with each method's own statistics.

A method's gain depends on the model (how early its layers agree with the last one, how predictable its outputs
are), so one model's figures cannot tell the method from the model. For each run (one model each, named by its
`meta.json` `model`), per (task, decoder): the speed-up over that run's vanilla (median of per-sample ratios, 95 %
bootstrap interval, from `reports.verdict`), parity counts, the task's quality metric, and the statistic that
explains the method's speed-up:

- an early-exit decoder (rows with `stats.exit_layers`, e.g. AdaDecode): its exit trace (share of emitted tokens
  per exit layer, the last layer as `full`) and the **ideal speed-up** the trace allows, n_layers / mean exit layer
  per sample (median over samples): what it would gain if the deferred layers and exit tests were free;
- a speculative decoder (rows with `stats.acceptance_lengths`, chains and trees): mean accepted tokens per step and
  **acceptance by depth**, the share of drafting rounds that accepted a d-th drafted token, d = 1, 2, ...
"""
from __future__ import annotations

from collections import Counter

import pandas as pd

from reports.aggregate import finished
from harness.schema import REFERENCE_DECODER
from reports.run_files import Run, list_column
from reports.verdict import verdict


def exit_trace(rows: pd.DataFrame) -> str:
    """Pooled share of emitted tokens per exit layer (`full`: the last layer) and the ideal speed-up; '' without
    exit layers. Each sample's first token always runs every layer, so its deepest exit is the model's depth."""
    samples = [layers for layers in list_column(finished(rows), "stats.exit_layers") if layers]
    if not samples:
        return ""
    depth = max(max(layers) for layers in samples)
    counts = Counter(layer for layers in samples for layer in layers)
    total = sum(counts.values())
    shares = ", ".join(f"{'full' if layer == depth else layer} {n / total:.0%}" for layer, n in sorted(counts.items()))
    ideal = pd.Series([max(layers) / (sum(layers) / len(layers)) for layers in samples]).median()
    return f"exits {shares}; ideal {ideal:.3f}x"


def acceptance_by_depth(rows: pd.DataFrame) -> str:
    """Mean accepted tokens per step and the pooled share of rounds accepting a d-th draft; '' without rounds."""
    rounds = [n for lengths in list_column(finished(rows), "stats.acceptance_lengths") for n in lengths]
    if not rounds:
        return ""
    deepest = max(rounds) - 1  # a round's length counts the bonus token
    by_depth = " / ".join(f"{sum(n > d for n in rounds) / len(rounds):.2f}" for d in range(1, deepest + 1))
    return f"{sum(rounds) / len(rounds):.2f} tokens per step" + (f"; by depth {by_depth}" if deepest else "")


def _speedup(r: pd.Series) -> str:
    if r.name[1] == REFERENCE_DECODER:
        return "reference"
    low, high = r["speed-up low"], r["speed-up high"]
    interval = f" ({low:.3f}–{high:.3f})" if low == low else ""
    return f"{r['speed-up']:.3f}{interval}" if r["speed-up"] == r["speed-up"] else ""


def run_labels(runs: list[Run]) -> list[str]:
    """Each run's model (`meta.json`), with its runner where the runs ran on more than one (`--runner eager` beside
    `fast`: each decoder's speed-up under both), and the run folder's name where two would still read the same."""
    runner = [str(run.meta.get("runner") or "fast") for run in runs]  # older runs ran what is now `fast`
    labels: list[str] = []
    for run, kind in zip(runs, runner):
        label = str(run.meta.get("model") or run.path.name) + (f", --runner {kind}" if len(set(runner)) > 1 else "")
        labels.append(f"{label} ({run.path.name})" if label in labels else label)
    return labels


def model_ladder(runs: list[Run]) -> pd.DataFrame:
    """One row per (task, decoder) any run has; per statistic, one column per model side by side: the speed-up
    (95 % CI), tok/s, parity exact / near-tie / mismatch, quality and the method's statistic (exit trace or
    acceptance by depth); empty cells where a run lacks that task or decoder."""
    columns: dict[tuple[str, str], dict[tuple[str, str], str]] = {}  # (statistic, model) -> cells
    taken = run_labels(runs)
    for run, model in zip(runs, taken):
        table = verdict(run.rows)
        for key, r in table.iterrows():
            group = run.rows[(run.rows["task"] == key[0]) & (run.rows["decoder"] == key[1])]
            parity = "" if key[1] == REFERENCE_DECODER else f"{int(r['exact'])} / {int(r['near_tie'])} / {int(r['mismatch'])}"
            quality = f"{r['quality metric']} {r['quality']:.3f}" if isinstance(r.get("quality metric"), str) else ""
            cells = {"speed-up (95 % CI)": _speedup(r), "tok/s": f"{r['tok/s median']:.1f}",
                     "parity exact / near-tie / mismatch": parity, "quality": quality,
                     "method statistic": exit_trace(group) or acceptance_by_depth(group)}
            for name, text in cells.items():
                columns.setdefault((name, model), {})[key] = text
    names = list(dict.fromkeys(name for name, _ in columns))  # each statistic with the models side by side
    ladder = pd.DataFrame({f"{name}: {model}": columns[name, model] for name in names for model in taken
                           if (name, model) in columns}).fillna("")
    ladder.index.names = ["task", "decoder"]
    order = sorted(ladder.index, key=lambda key: (key[0], key[1] != REFERENCE_DECODER, key[1]))
    return ladder.loc[order]
