"""Regression gate: compares a candidate run with a baseline run, (task, decoder) by (task, decoder).

Speed is checked twice: each decoder's median tokens/s (meaningful when both runs come from the same machine) and,
for non-reference decoders, the speedup over vanilla (a ratio measured inside each run, so machine drift between
the two runs cancels out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.core.errors import HarnessError
from reports.aggregate import SPEEDUP_MEDIAN, quality_metrics, summarize
from reports.run_files import REFERENCE, Run


@dataclass
class Thresholds:
    max_slowdown: float = 0.05  # fraction of the baseline's speed the candidate may lose
    min_parity: float = 1.0
    max_quality_drop: float = 0.02  # absolute drop of a quality metric's mean


@dataclass
class Regression:
    task: str
    decoder: str
    metric: str
    baseline: float
    candidate: float
    limit: str

    def __str__(self) -> str:
        return (f"REGRESSION {self.decoder} on {self.task}: {self.metric} baseline {self.baseline:.4g} -> "
                f"candidate {self.candidate:.4g} ({self.limit})")


def parse_fraction(text: str) -> float:
    """'5%' or '0.05' → 0.05."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise HarnessError(f"cannot read {text!r} as a fraction; write e.g. 5% or 0.05") from None
    if value < 0:
        raise HarnessError(f"threshold {text!r} is negative; give a value of 0 or more")
    return value


def find_regressions(baseline: Run, candidate: Run, limits: Thresholds) -> list[Regression]:
    before, after = summarize(baseline.rows), summarize(candidate.rows)
    quality = quality_metrics(baseline.rows)
    found = []
    for key in before.index:
        task, decoder = key
        if key not in after.index:
            found.append(Regression(task, decoder, "samples", before.at[key, "samples"], 0, "missing in candidate"))
            continue
        old, new = before.loc[key], after.loc[key]
        speeds = ["tok/s median"] + ([SPEEDUP_MEDIAN] if decoder != REFERENCE else [])
        for metric in speeds:
            if metric in old and metric in new and new[metric] < old[metric] * (1 - limits.max_slowdown):
                found.append(Regression(task, decoder, metric, old[metric], new[metric],
                                        f"{new[metric] / old[metric] - 1:+.1%}, limit -{limits.max_slowdown:.1%}"))
        measured = not (math.isnan(old["parity rate"]) and math.isnan(new["parity rate"]))
        if decoder != REFERENCE and measured and not new["parity rate"] >= limits.min_parity:
            found.append(Regression(task, decoder, "parity rate", old["parity rate"], new["parity rate"],
                                    f"minimum {limits.min_parity:g}"))
        for metric in quality:
            if metric in new and old[metric] - new[metric] > limits.max_quality_drop:
                found.append(Regression(task, decoder, metric, old[metric], new[metric],
                                        f"drop {old[metric] - new[metric]:.4g}, limit {limits.max_quality_drop:g}"))
        if new["errors"] > old["errors"]:
            found.append(Regression(task, decoder, "errors", old["errors"], new["errors"], "more failed samples"))
    return found
