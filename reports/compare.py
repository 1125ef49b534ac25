"""Regression gate: compares a candidate run with a baseline run, (task, decoder) by (task, decoder).

Speed is checked twice: each decoder's median tokens/s (meaningful when both runs come from the same machine) and,
for non-reference decoders, the speedup over vanilla (a ratio measured inside each run, so machine drift between
the two runs cancels out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.core.errors import HarnessError
import pandas as pd

from harness.schema import REFERENCE_DECODER
from reports.aggregate import SPEEDUP_MEDIAN, quality_metrics, summarize
from reports.run_files import Run


PARITY_OK = "parity ok rate"  # share of checked samples without a mismatch: exact and near-tie both pass
PARITY_OK_LABEL = "parity (exact + near-tie)"


@dataclass
class Thresholds:
    max_slowdown: float = 0.05  # fraction of the baseline's speed the candidate may lose
    min_parity: float = 1.0  # lowest share of samples without a parity mismatch (near-ties are not mismatches)
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
    if not 0 <= value <= 1:
        raise HarnessError(f"threshold {text!r} lies outside 0..100%; give a share between 0 and 1 (or 0% and 100%)")
    return value


CONDITIONS = ("model", "dtype", "device", "device_name", "max_new_tokens", "limit", "sampling")


def different_conditions(baseline: Run, candidate: Run) -> list[str]:
    """The run conditions (meta.json) in which the two runs differ, one phrase each; their figures are not alike."""
    return [f"{key} {baseline.meta.get(key)!r} vs {candidate.meta.get(key)!r}" for key in CONDITIONS
            if baseline.meta.get(key) != candidate.meta.get(key)]


def find_regressions(baseline: Run, candidate: Run, limits: Thresholds) -> list[Regression]:
    return regressions_of(summarize(baseline.rows), summarize(candidate.rows), quality_metrics(baseline.rows),
                          limits) + distribution_failures(baseline, candidate)


def distribution_failures(baseline: Run, candidate: Run) -> list[Regression]:
    """Under sampling, token parity is replaced by each decoder's distribution check: a failed check in the
    candidate is a regression whatever the baseline said."""
    if candidate.distribution.empty:
        return []
    before = {} if baseline.distribution.empty else {
        (r["task"], r["decoder"]): r["p_value"] for r in baseline.distribution.to_dict("records")}
    return [Regression(r["task"], r["decoder"], "distribution check p", before.get((r["task"], r["decoder"]), math.nan),
                       r["p_value"], f"p below alpha {r['alpha']:g}: the output distribution is not vanilla's")
            for r in candidate.distribution.to_dict("records") if not r["passed"]]


def regressions_of(before: pd.DataFrame, after: pd.DataFrame, quality: list[str], limits: Thresholds
                   ) -> list[Regression]:
    """The regressions between two runs' summary tables (`reports.aggregate.summarize`)."""
    found = []
    for key in before.index:
        task, decoder = key
        if key not in after.index:
            found.append(Regression(task, decoder, "samples", before.at[key, "samples"], 0, "missing in candidate"))
            continue
        old, new = before.loc[key], after.loc[key]
        speeds = ["tok/s median"] + ([SPEEDUP_MEDIAN] if decoder != REFERENCE_DECODER else [])
        for metric in speeds:
            if metric in old and metric in new and new[metric] < old[metric] * (1 - limits.max_slowdown):
                found.append(Regression(task, decoder, metric, old[metric], new[metric],
                                        f"{new[metric] / old[metric] - 1:+.1%}, limit -{limits.max_slowdown:.1%}"))
        old_ok, new_ok = old.get(PARITY_OK, math.nan), new.get(PARITY_OK, math.nan)
        if decoder != REFERENCE_DECODER and not (math.isnan(old_ok) and math.isnan(new_ok)) and not new_ok >= limits.min_parity:
            found.append(Regression(task, decoder, PARITY_OK_LABEL, old_ok, new_ok, f"minimum {limits.min_parity:g}; "
                                    f"{int(new.get('parity mismatch', 0))} mismatch(es)"))
        for metric in quality:
            if metric in new and old[metric] - new[metric] > limits.max_quality_drop:
                found.append(Regression(task, decoder, metric, old[metric], new[metric],
                                        f"drop {old[metric] - new[metric]:.4g}, limit {limits.max_quality_drop:g}"))
        if new["errors"] > old["errors"]:
            found.append(Regression(task, decoder, "errors", old["errors"], new["errors"], "more failed samples"))
    return found


def _pair(old, new, digits: str = ".3g") -> str:
    text = [("—" if v is None or v != v else format(v, digits)) for v in (old, new)]
    return f"{text[0]} → {text[1]}"


def _parity(row) -> str:
    if row is None or math.isnan(row.get("parity exact", math.nan)):
        return "—"
    return "/".join(str(int(row.get(f"parity {c}", 0))) for c in ("exact", "near-tie", "mismatch"))


def verdict_table(baseline: Run, candidate: Run, limits: Thresholds) -> tuple[str, list[Regression]]:
    """A Markdown table, baseline → candidate per task and decoder (median tokens/s, speed-up, parity
    exact/near-tie/mismatch, quality, errors, the verdict), headed by the thresholds; and the regressions."""
    before, after = summarize(baseline.rows), summarize(candidate.rows)
    quality = quality_metrics(baseline.rows)
    found = regressions_of(before, after, quality, limits) + distribution_failures(baseline, candidate)
    failed: dict[tuple[str, str], list[str]] = {}
    for r in found:
        failed.setdefault((r.task, r.decoder), []).append(r.metric)
    records = []
    for key in before.index.union(after.index, sort=False):
        old = before.loc[key] if key in before.index else None
        new = after.loc[key] if key in after.index else None
        get = (lambda row, c: row.get(c, math.nan) if row is not None else math.nan)
        record = {"task": key[0], "decoder": key[1], "tok/s median": _pair(get(old, "tok/s median"),
                                                                             get(new, "tok/s median")),
                  "speed-up (median of ratios)": _pair(get(old, SPEEDUP_MEDIAN), get(new, SPEEDUP_MEDIAN)),
                  "parity exact/near-tie/mismatch": f"{_parity(old)} → {_parity(new)}"}
        record.update({m: _pair(get(old, m), get(new, m)) for m in quality})
        record["errors"] = _pair(get(old, "errors"), get(new, "errors"), ".0f")
        record["verdict"] = ("REGRESSION: " + ", ".join(failed[key])) if key in failed else \
            ("new in candidate" if old is None else "ok")
        records.append(record)
    thresholds = (f"thresholds: tok/s median and speed-up may drop at most {limits.max_slowdown:.1%}; "
                  f"{PARITY_OK_LABEL} at least {limits.min_parity:g} (near-ties pass, a mismatch fails); "
                  f"quality mean may drop at most {limits.max_quality_drop:g}; no new errors; nothing missing; "
                  f"under sampling, every distribution check passes")
    table = pd.DataFrame(records).to_markdown(index=False, disable_numparse=True)
    return f"baseline {baseline.path} → candidate {candidate.path}\n{thresholds}\n\n{table}", found
