"""Trained heads on top of a frozen model: where they live, how they are stored, and the exit head itself.

Heads are per (model, method, task) and small (a few d×d matrices), so they are kept as one safetensors file in
the cache folder with their metadata (model, layers, training data rows, steps, ...) stored as JSON inside it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from harness.core.errors import MissingHeads
from harness.core.loading import cache_dir
from harness.core.model_runner import ModelRunner

METADATA_KEY = "fastdecode"


def heads_file(model_name: str, kind: str, task: str) -> Path:
    """`cache_dir()/heads/<model>/<kind>-<task>.safetensors` (`kind` is the decoder that trained them)."""
    safe_model = model_name.replace("/", "--") or "model"
    return cache_dir() / "heads" / safe_model / f"{kind}-{task}.safetensors"


def save_heads(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Writes the tensors (made contiguous, on the CPU) with JSON metadata; the folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    partial = path.with_name(path.name + ".partial")
    save_file(cpu, str(partial), metadata={METADATA_KEY: json.dumps(metadata)})
    partial.replace(path)
    return path


def heads_file_parts(path: Path) -> tuple[str, str, str]:
    """(model folder, kind, task) of a path `heads_file` made."""
    kind, _, task = Path(path).stem.partition("-")
    return Path(path).parent.name, kind, task


@dataclass(frozen=True)
class HeadsNeed:
    """Trained heads a decoder needs before it can be built: the file, and the exit layers it must hold.

    `kind` is the decoder whose `train_heads` (and default recipe) makes the file; it may differ from the decoder
    that needs it (LayerSkip reads AdaDecode's exit heads)."""
    kind: str
    task: str
    path: Path
    exit_layers: tuple[int, ...] = ()

    def missing(self) -> str | None:
        """Why the file cannot serve (absent, or without some exit layer), or None when it can."""
        if not self.path.is_file():
            return f"no trained heads at {self.path}"
        with safe_open(str(self.path), framework="pt") as f:
            held = {int(name.split(".")[1]) for name in f.keys() if name.startswith("exit.")}
        absent = [layer for layer in self.exit_layers if layer not in held]
        return f"{self.path} has no exit head at layers {absent} (it has {sorted(held)})" if absent else None

    def error(self, why: str, model: str | None = None, data: str | None = None) -> MissingHeads:
        """The error that says these heads are missing (`why`: what `missing` found) for the runner named `model`,
        on a run reading `data`."""
        return MissingHeads(why, self.kind, self.task, self.exit_layers, model, data)


def read_metadata(path: Path) -> dict[str, Any]:
    """A heads file's JSON metadata, without loading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))


def load_heads(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a heads file: (tensors on the CPU, metadata). A missing file is a `MissingHeads` error."""
    path = Path(path)
    if not path.is_file():
        _, kind, task = heads_file_parts(path)
        raise MissingHeads(f"no trained {kind} heads for {task} at {path}", kind, task)
    return load_file(str(path)), read_metadata(path)


def update_metadata(path: Path, changes: dict[str, Any]) -> Path:
    """Rewrites a heads file with `changes` merged into its metadata (the tensors unchanged)."""
    tensors, metadata = load_heads(path)
    return save_heads(path, tensors, {**metadata, **changes})


class ExitHead(torch.nn.Module):
    """A learned d×d transform T (identity-initialised) in front of the model's own final norm and frozen lm head.

    Untrained, it is the "logit lens". Only T is a parameter; the norm and the lm head are passed in at call time,
    so the module's state is just T (about d² numbers).
    """

    def __init__(self, hidden_size: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.transform = torch.nn.Linear(hidden_size, hidden_size, bias=False, dtype=dtype)
        with torch.no_grad():
            self.transform.weight.copy_(torch.eye(hidden_size, dtype=dtype))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., d] → transformed hidden states [..., d], ready for the final norm and lm head."""
        return self.transform(hidden)


def exit_heads(tensors: dict[str, torch.Tensor], runner: ModelRunner) -> dict[int, ExitHead]:
    """The exit heads stored in a heads file's tensors (`exit.<layer>` → T), by layer, on the runner's device."""
    heads = {}
    for name, weight in tensors.items():
        if name.startswith("exit."):
            head = ExitHead(runner.hidden_size, runner.dtype).to(runner.device)
            head.transform.weight.data.copy_(weight)
            heads[int(name.split(".")[1])] = head
    return heads
