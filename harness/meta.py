"""The run's `meta.json`: the environment and settings every row in the folder was produced under.

A rerun into the same folder must use the same model, dtype, device, token budget and decoder settings (else rows
would mix conditions); it may add tasks, decoders or a higher limit, which are merged in.
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

from harness.core.errors import HarnessError
from harness.core.model_runner import ModelRunner

META_FILE = "meta.json"
FIXED_KEYS = ("model", "dtype", "device", "max_new_tokens")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment(runner: ModelRunner) -> dict[str, Any]:
    return {"model": runner.name, "dtype": str(runner.dtype).removeprefix("torch."), "device": str(runner.device),
            "device_name": device_name(runner.device), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), "git_commit": git_commit()}


def write_meta(out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Writes meta.json, merging with (and checking against) the one already in the folder."""
    path = out_dir / META_FILE
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        for key in FIXED_KEYS:
            if old.get(key) != meta.get(key):
                raise HarnessError(f"{out_dir} holds a run with {key}={old.get(key)!r}, not {meta.get(key)!r}; "
                                   f"use another --out")
        for name, settings in meta["decoder_settings"].items():
            if name in old["decoder_settings"] and old["decoder_settings"][name] != settings:
                raise HarnessError(f"{out_dir} holds {name} rows made with settings {old['decoder_settings'][name]}, "
                                   f"not {settings}; use another --out")
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
