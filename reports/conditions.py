"""What a resumed run's rows mix: conditions a resume may change (telemetry, warm-up, the code's commit), and
speed-up pairs whose row and vanilla's were timed in different launches (`harness.schema.CONDITIONS`). Rows
written before rows recorded their conditions read as "unrecorded"."""
from __future__ import annotations

import pandas as pd

from harness.schema import CONDITIONS

LAUNCH = "conditions.launch"
UNRECORDED = "unrecorded"


def _value(value) -> str:
    if value is None or value != value:
        return UNRECORDED
    return {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def mixed_conditions(rows: pd.DataFrame) -> str | None:
    """One line naming each condition the rows differ in, with how many rows hold each value; None when alike."""
    mixes = []
    for name in (c for c in CONDITIONS if c != "launch"):
        column = f"conditions.{name}"
        counts = (rows[column].map(_value) if column in rows else pd.Series(UNRECORDED, index=rows.index)).value_counts()
        if len(counts) > 1:
            mixes.append(f"{name}: " + ", ".join(f"{value} in {n} rows" if i == 0 else f"{value} in {n}"
                                                  for i, (value, n) in enumerate(counts.items())))
    return "; ".join(mixes) or None


def crossing_resume(pairs: pd.DataFrame) -> pd.Series:
    """Per speed-up pair (`reports.aggregate.paired_speedups`): whether its two rows come from different launches
    (a row without a launch is from one before launches were recorded)."""
    if LAUNCH not in pairs:
        return pd.Series(False, index=pairs.index)
    mine, reference = pairs[LAUNCH].map(_value), pairs[LAUNCH + "_ref"].map(_value)
    return (mine != reference) & ~((mine == UNRECORDED) & (reference == UNRECORDED))


def resumed_pairs(pairs: pd.DataFrame) -> str | None:
    """One line: how many speed-up pairs cross a resume, per task and decoder; None when none does."""
    crossing = crossing_resume(pairs)
    if not crossing.any():
        return None
    per = [f"{decoder} on {task}: {int(group.sum())} of {len(group)}"
           for (task, decoder), group in crossing.groupby([pairs["task"], pairs["decoder"]]) if group.any()]
    return f"{int(crossing.sum())} of {len(pairs)} speed-up pairs cross a resume ({'; '.join(per)})"
