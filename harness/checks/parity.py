"""Token-for-token parity of a decoder's output with vanilla greedy decoding on the same sample, and what a
divergence means.

At a sample's first divergence the reference's *logit margin* is measured: vanilla's top-1 logit minus the logit of
the token the decoder emitted, from a one-position forward on the reference prefix. A divergence is a numerical
**near-tie** when that margin is within the arithmetic's own noise, and a real **mismatch** otherwise:

- On the runner's batch-invariant path (`ModelRunner.exact_chunks`, packed bf16 on CPUs with bf16 hardware) a
  decoder built on the runner computes bit-for-bit what vanilla computes, so the noise is zero and every divergence
  is a mismatch.
- Elsewhere a chunk's rows differ from one-position forwards in the last bits. Measured on SmolLM2 (chunks of 8
  after a real prompt, 6 XSum prompts): the largest |Δlogit| was 1e-4 in float32 and 0.75 in bfloat16 (eager,
  `scaled_dot_product_attention`). `NEAR_TIE_MARGIN` allows ten times the float32 figure and twice the bfloat16 one;
  float16 has three more mantissa bits than bfloat16, so its bound is bfloat16's divided by 8 (not measured).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from harness.core.model_runner import ModelRunner
from harness.schema import PARITY_CLASSES

NEAR_TIE_MARGIN = {torch.float32: 1e-3, torch.bfloat16: 1.5, torch.float16: 0.2}


def compare(reference: list[int], tokens: list[int]) -> dict[str, Any]:
    """`match`, and `first_divergence`: the first index where the outputs differ (a shorter output diverges where
    it ends), None when they match."""
    for i, (a, b) in enumerate(zip(reference, tokens)):
        if a != b:
            return {"match": False, "first_divergence": i}
    if len(reference) != len(tokens):
        return {"match": False, "first_divergence": min(len(reference), len(tokens))}
    return {"match": True, "first_divergence": None}


def near_tie_margin(runner: ModelRunner, exact_on_runner: bool) -> float:
    """The reference logit margin below which a divergence counts as a numerical near-tie."""
    if runner.exact_chunks and exact_on_runner:
        return 0.0
    return NEAR_TIE_MARGIN.get(runner.dtype, NEAR_TIE_MARGIN[torch.bfloat16])


@torch.inference_mode()
def reference_margin(runner: ModelRunner, prompt_ids: list[int], reference: list[int], token: int,
                     index: int) -> float:
    """Vanilla's top-1 logit minus `token`'s logit at output `index`, from a one-position forward there."""
    prefix = prompt_ids + reference[:index]
    cache = runner.new_cache(len(prefix))
    if index:
        runner.forward(prefix[:-1], cache)
        logits = runner.forward(prefix[-1:], cache)[-1]
    else:
        logits = runner.forward(prefix, cache, last_only=True)[-1]
    return float(logits.max() - logits[token])


def check(runner: ModelRunner, exact_on_runner: bool, prompt_ids: list[int], reference: list[int],
          tokens: list[int]) -> dict[str, Any]:
    """`compare`, plus `class` (exact, near_tie or mismatch), the divergence's `margin` and the `threshold` used.

    An output that ends early or runs on past the reference's end has no competing token: it is a mismatch."""
    result = compare(reference, tokens)
    threshold = near_tie_margin(runner, exact_on_runner)
    if result["match"]:
        return result | {"class": "exact", "margin": None, "threshold": threshold}
    index = result["first_divergence"]
    if index >= len(tokens) or index >= len(reference):
        return result | {"class": "mismatch", "margin": None, "threshold": threshold}
    margin = reference_margin(runner, prompt_ids, reference, tokens[index], index)
    kind = "near_tie" if margin < threshold else "mismatch"  # strict: with a zero threshold even a tie is a bug
    return result | {"class": kind, "margin": margin, "threshold": threshold}


def parity_class(parity: dict[str, Any]) -> str:
    """A row's parity class; rows written before classification existed count a match as exact, else mismatch."""
    return parity.get("class") or ("exact" if parity["match"] else "mismatch")


def parity_counts(rows: Iterable[dict]) -> dict[str, int]:
    """How many checked rows are exact, near ties and mismatches."""
    counts = dict.fromkeys(PARITY_CLASSES, 0)
    for row in rows:
        if row.get("parity"):
            counts[parity_class(row["parity"])] += 1
    return counts
