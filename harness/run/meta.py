"""The run's `meta.json`: the environment and settings every row in the folder was produced under.

A rerun into the same folder must use the same model, dtype, kind of device, token budget, sampling settings
(`sampling`: `{"greedy": true}`, or temperature, top_p, top_k and seed), decoder settings and,
for every task it shares, the same data (source and content hash) and split (else rows would mix conditions); it
may add tasks, decoders or a higher limit, which are merged in. `device` is the kind (`cpu`, `cuda`): a single
process on `cuda:0` and a torchrun launch on `cuda:LOCAL_RANK` write into one folder alike.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import transformers

from harness.measure.bandwidth import bandwidth_floor
from harness.core.errors import HarnessError
from harness.core.model_runner import ModelRunner
from harness.measure.device_info import describe_device
from harness.run.meta_file import META_FILE, read_meta

BATCH_DEFAULTS = {"batch_size": 1, "refill": False}
FIXED_KEYS = ("model", "dtype", "device", "runner", "max_new_tokens", "sampling", "batch_size", "refill")
GREEDY = {"greedy": True}


def device_name(device: torch.device) -> str:
    """The GPU's or the CPU's model name (e.g. "NVIDIA H100 80GB HBM3", "AMD EPYC"), not just `x86_64`."""
    return describe_device(device)["name"]


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment(runner: ModelRunner) -> dict[str, Any]:
    info = describe_device(runner.device)
    return {"model": runner.name, "dtype": str(runner.dtype).removeprefix("torch."), "device": runner.device.type,
            "device_name": info["name"], "device_info": info, "runner": runner.runner_kind,
            "kernel_path": runner.kernel_path, "exact_chunks": runner.exact_chunks, "bandwidth": bandwidth_floor(runner),
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "git_commit": git_commit()}


def _fixed(key: str, value: Any) -> Any:
    """The value a rerun must match (folders written before the device kind was recorded hold `cuda:0`; folders
    written before sampling existed are greedy, those written before batches existed ran one sequence at a time,
    those written before the runner was recorded ran what is now `fast`)."""
    if key == "runner":
        return value or "fast"
    if key == "sampling":
        return value or GREEDY
    if key in BATCH_DEFAULTS:
        return BATCH_DEFAULTS[key] if value is None else value
    return str(value).partition(":")[0] if key == "device" and value is not None else value


SOURCE_KEYS = ("source", "source_sha256")


def _data(info: dict[str, Any]) -> tuple:
    """Where a task's rows come from: its source, content hash and (HumanEval) the source its heads train on."""
    return info.get("source"), info.get("source_sha256"), (info.get("training_source") or {}).get("source")


def _where(data: tuple) -> str:
    source, sha256, training = data
    return f"{source} (sha256 {str(sha256)[:12]}" + (f", heads trained on {training})" if training else ")")


def _split(info: dict[str, Any]) -> dict[str, Any]:
    """How a task's rows are split, without where they come from."""
    return {k: {key: v[key] for key in v if key not in SOURCE_KEYS} if k == "training_source" and v else v
            for k, v in info.items() if k not in SOURCE_KEYS}


def check_task_data(out_dir: Path, old_tasks: dict[str, Any], new_tasks: dict[str, Any]) -> None:
    """A task already in the folder must come from the same data, split the same way: sample ids are positional
    for some tasks, so other data would mix rows of different questions under one id."""
    for name, new in new_tasks.items():
        old = old_tasks.get(name)
        if old is None:
            continue
        before, after = _data({"source_sha256": new.get("source_sha256"), **old}), _data(new)  # older: no hash
        if before != after:
            raise HarnessError(f"{out_dir} holds {name} rows from {_where(before)}, not {_where(after)}; use the same "
                               f"--data or another --out")
        split = _split(new)
        if {k: _split(old).get(k) for k in split} != split:
            raise HarnessError(f"{out_dir} holds {name} rows split {dict((k, _split(old).get(k)) for k in split)}, "
                               f"not {split}; use the same --train-rows or another --out")


def write_meta(out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Writes meta.json, merging with (and checking against) the one already in the folder."""
    path = out_dir / META_FILE
    if path.exists():
        old = read_meta(out_dir)
        for key in FIXED_KEYS:
            if _fixed(key, old.get(key)) != _fixed(key, meta.get(key)):
                raise HarnessError(f"{out_dir} holds a run with {key}={old.get(key)!r}, not {meta.get(key)!r}; "
                                   f"use another --out")
        for name, settings in meta["decoder_settings"].items():
            if name in old["decoder_settings"] and old["decoder_settings"][name] != settings:
                raise HarnessError(f"{out_dir} holds {name} rows made with settings {old['decoder_settings'][name]}, "
                                   f"not {settings}; use another --out")
        check_task_data(out_dir, old["tasks"], meta["tasks"])
        old_used = old.get("settings_used", {})
        for task, by_name in meta.get("settings_used", {}).items():
            for name, used in by_name.items():
                before = old_used.get(task, {}).get(name)
                if before is not None and before["settings"] != used["settings"]:
                    raise HarnessError(f"{out_dir} holds {name} rows on {task} made with {before['settings']}, not "
                                       f"{used['settings']} ({used['source']}); pass the old settings with --set or "
                                       f"use another --out")
        meta = {**old, **meta, "decoder_settings": {**old["decoder_settings"], **meta["decoder_settings"]},
                "settings_used": {task: {**old_used.get(task, {}), **meta.get("settings_used", {}).get(task, {})}
                                  for task in {**old_used, **meta.get("settings_used", {})}},
                "tasks": {**old["tasks"], **meta["tasks"]},
                "command_lines": old.get("command_lines", []) + meta["command_lines"]}
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])
