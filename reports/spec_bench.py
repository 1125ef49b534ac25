"""Spec-Bench's table: decoders × categories, speed-up over vanilla and mean accepted tokens, plus overall.

Spec-Bench (Xia et al. 2024) reports each method per category — MT-bench's eight conversation categories grouped as
one (`mt_bench`), translation, summarization, qa, math_reasoning, rag — so that a method's strengths show (prompt
lookup on summarization and RAG, where outputs copy the input). Speed-up is the median over samples of the
decoder's tokens/s over vanilla's on the same sample; mean accepted tokens is new tokens per full-model pass
(`stats.steps`, the prefill included), pooled over samples: 1.0 for vanilla, more for a speculative decoder.
"""
from __future__ import annotations

import pandas as pd

from reports.aggregate import finished, paired_speedups
from reports.run_files import column, display_order

MT_BENCH = frozenset({"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"})
CATEGORY_ORDER = ("mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag")
OVERALL = "overall"
SPEEDUP = "speed-up (median of ratios)"
ACCEPTED = "mean accepted tokens"


def spec_bench_category(category: str) -> str:
    """Spec-Bench's column for a question's category: MT-bench's eight categories are one."""
    return "mt_bench" if category in MT_BENCH else category


def category_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of one task that carry a `category` → index (metric, decoder), one column per category and `overall`.

    Vanilla's speed-up is left empty (it is the reference); a cell nothing measured is NaN."""
    rows = rows[rows["category"].notna()].assign(category=lambda r: r["category"].map(spec_bench_category))
    categories = [c for c in CATEGORY_ORDER if c in set(rows["category"])] + \
        sorted(set(rows["category"]) - set(CATEGORY_ORDER))
    sample_category = rows.drop_duplicates(["task", "sample_id"])[["task", "sample_id", "category"]]
    pairs = paired_speedups(rows).merge(sample_category, on=["task", "sample_id"])
    done = finished(rows).assign(new_tokens=lambda r: column(r, "new_tokens"), steps=lambda r: column(r, "stats.steps"))
    done = done[done["steps"] > 0]
    decoders = display_order(rows["decoder"])
    table = {}
    for decoder in decoders:
        speed = pairs[pairs["decoder"] == decoder]
        table[(SPEEDUP, decoder)] = {c: speed.loc[speed["category"] == c, "speedup"].median() for c in categories} \
            | {OVERALL: speed["speedup"].median()}
    for decoder in decoders:
        runs = done[done["decoder"] == decoder]
        table[(ACCEPTED, decoder)] = {c: _per_pass(runs[runs["category"] == c]) for c in categories} \
            | {OVERALL: _per_pass(runs)}
    frame = pd.DataFrame.from_dict(table, orient="index", columns=[*categories, OVERALL])
    frame.index.names = ["metric", "decoder"]
    return frame


def _per_pass(runs: pd.DataFrame) -> float:
    steps = runs["steps"].sum()
    return runs["new_tokens"].sum() / steps if steps else float("nan")


def category_tables(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`<task> by category` → its table, for every task whose rows carry a category (Spec-Bench's)."""
    if "category" not in rows:
        return {}
    with_category = rows[rows["category"].notna()]
    return {f"{task} by category": category_table(group) for task, group in with_category.groupby("task")}
