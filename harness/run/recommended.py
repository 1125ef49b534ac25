"""Recommended settings: for a decoder with trained heads, the setting measured fastest, and where it came from.

Unless `--set` says otherwise, such a decoder runs with the recommendation for its model and task: the one stored
in its heads file's metadata (`recommended`, written by `train-heads` from the measured table below, or by
`run.py sweep --recommend` from the sweep's fastest lossless point), else the measured table's. The run's
`meta.json` records, per task and decoder, the settings used and why (`settings_used`).
"""
from __future__ import annotations

import math
import time
from typing import Any

from harness.core.decoding import DECODERS
from harness.core.errors import HarnessError
from harness.core.heads import read_metadata, update_metadata
from harness.schema import base_decoder

def recommendation(model_name: str, decoder: str, task: str, explicit: dict[str, Any] | None = None
                   ) -> dict[str, Any] | None:
    """{"settings", "source"} for the registered `decoder` on `task`, when it loads its own trained heads with the
    `explicit` settings: its heads file's recommendation, else the decoder's measured settings for the model; None otherwise."""
    need = DECODERS.get(decoder).heads_needed(model_name, task, explicit or {})
    if need is None or need.kind != decoder:
        return None
    if need.path.is_file():
        stored = read_metadata(need.path).get("recommended")
        if stored:
            return {**stored, "source": f"{stored['source']} (stored with the heads in {need.path})"}
    return DECODERS.get(decoder).measured_settings.get(model_name)


def resolve_settings(model_name: str, settings: dict[str, dict], task_names: list[str]
                     ) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and decoder (keys of `settings`, sweep variants included): {"settings": what the decoder is built
    with, "source": why}. Explicit settings win over the recommendation, key by key."""
    used: dict[str, dict[str, dict[str, Any]]] = {}
    for task in task_names:
        for name, explicit in settings.items():
            advice = recommendation(model_name, base_decoder(name), task, explicit)
            adopted = {k: v for k, v in (advice or {}).get("settings", {}).items() if k not in explicit}
            if adopted:
                source = f"recommended: {advice['source']}" + (f"; --set: {', '.join(explicit)}" if explicit else "")
            elif explicit:
                source = "--set (the command line)"
            else:
                source = "the decoder's defaults" + (" (no measured recommendation)" if advice is None else "")
            used.setdefault(task, {})[name] = {"settings": {**adopted, **explicit}, "source": source}
    return used


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not math.isnan(value) else None


def best_lossless_point(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of a sweep's points on one task (dicts with `speedup`, `errors`, `parity_mismatches` or `parity_rate`), the
    fastest one without errors or parity mismatches; None when there is none."""
    def lossless(point: dict) -> bool:
        mismatches = _number(point.get("parity_mismatches"))
        clean = mismatches == 0 if mismatches is not None else point.get("parity_rate") == 1
        return clean and point.get("errors") == 0 and _number(point.get("speedup")) is not None

    candidates = [p for p in points if lossless(p)]
    return max(candidates, key=lambda p: p["speedup"]) if candidates else None


def store_recommendation(model_name: str, decoder: str, task: str, settings: dict[str, Any], source: str) -> str:
    """Writes `settings` as the recommendation into `decoder`'s heads file for `task`; returns the file's path."""
    need = DECODERS.get(decoder).heads_needed(model_name, task, {})
    if need is None or need.kind != decoder:
        raise HarnessError(f"{decoder} has no trained heads of its own to store a recommended setting with; "
                           "leave out --recommend")
    stamped = f"{source} ({time.strftime('%Y-%m-%d')})"
    return str(update_metadata(need.path, {"recommended": {"settings": settings, "source": stamped}}))
