"""The result files' shared vocabulary: file names, the reference decoder, sweep variants' names, parity classes and
decoder order. The runner writes with it, the lm-eval backend records with it and the reports read with it."""
from __future__ import annotations

from typing import Any, Iterable

RESULTS_FILE = "results.jsonl"
RANK_FILE_PATTERN = "results.rank*.jsonl"
META_FILE = "meta.json"
DISTRIBUTION_FILE = "distribution.jsonl"  # a sampled run's distribution checks, one row per task and decoder
ROW_KEYS = ("decoder", "task", "sample_id")  # what identifies a result row
# A result row's `conditions`: what it was made under that a resume may change (meta.json keeps the latest launch's
# only); `launch` names the process run that wrote it, so a speed-up pair whose rows differ in it crosses a resume.
CONDITIONS = ("telemetry", "warmup", "commit", "launch")
CHECK_KEYS = ("task", "decoder")  # what identifies a distribution check
REFERENCE_DECODER = "vanilla"  # the parity reference every other decoder is compared with
PARITY_CLASSES = ("exact", "near_tie", "mismatch")  # a row's `parity.class`; near-ties are not failures
VARIANT_MARK = "@"  # `layerskip@exit_layer=12,speculations=2`: one decoder under one point of a sweep


def variant_name(decoder: str, point: dict[str, Any]) -> str:
    """The `decoder` of a sweep point's rows (its settings are in `meta.json` under `decoder_settings`)."""
    return decoder + VARIANT_MARK + ",".join(f"{key}={value}" for key, value in point.items())


def base_decoder(name: str) -> str:
    """The registered decoder a row's `decoder` names (a sweep variant's name without its settings)."""
    return name.partition(VARIANT_MARK)[0]


def decoder_order(names: Iterable[str]) -> list[str]:
    """The reference first, then the other decoders in the order given, each once."""
    return [REFERENCE_DECODER] + [n for n in dict.fromkeys(names) if n != REFERENCE_DECODER]
