"""LayerSkip self-speculation (Elhoushi et al. 2024): draft with an early exit, verify with the remaining layers.

Drafting runs each token through layers [0, E) only and reads the next token from the exit hidden state with the
model's own final norm and lm head (LayerSkip's early exit). Verification pushes the drafted chunk through
layers [E, N) only: the shallow layers' keys/values and the exit hidden states computed while drafting are exactly
what the full model would compute for those positions, so they are reused as they are (LayerSkip's cache reuse).
Only the last drafted token, which nobody has run yet, goes through the shallow layers inside verification.

`exit_head` swaps the read-out of drafts for a trained exit head (`ExitHead`: T → final norm → lm head), the one
AdaDecode trains at `exit_layer` (`"adadecode"`: the heads file for this model and task; or a heads file's path;
or an `ExitHead` held in memory). It changes the drafts only: verification still uses the raw exit hidden states.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.core.decoding import DECODERS
from harness.core.errors import HarnessError, MissingHeads
from harness.core.heads import ExitHead, HeadsNeed, exit_heads, heads_file, load_heads
from harness.core.speculation import DraftVerifyDecoder

TRAINED_EXITS = "adadecode"  # the decoder whose `train-heads` writes exit heads
OWN_HEAD = "model"  # exit_head value for the model's own final norm and lm head (the default)
DEFAULT_EXIT_LAYER = 20


@DECODERS.register("layerskip")
class LayerSkip(DraftVerifyDecoder):
    """Settings: `exit_layer` (20), `speculations` (4), `exit_head` (None or `"model"`: the model's own head;
    `"adadecode"`, a heads file's path or an `ExitHead`: a trained exit head at `exit_layer`)."""

    def __init__(self, runner, task=None, exit_layer: int = DEFAULT_EXIT_LAYER, speculations: int = 4,
                 exit_head: ExitHead | str | None = None) -> None:
        super().__init__(runner, task)
        if not 0 < exit_layer < runner.n_layers:
            raise HarnessError(f"exit_layer must lie in 1..{runner.n_layers - 1}, got {exit_layer}")
        self.check_ranges({"speculations": speculations})
        self.exit_layer = exit_layer
        self.speculations = speculations
        self.exit_head = None if exit_head in (None, OWN_HEAD) else \
            exit_head if isinstance(exit_head, ExitHead) else self._load_exit_head(str(exit_head))

    @classmethod
    def check_ranges(cls, settings: dict[str, Any]) -> None:
        """`exit_layer`'s range depends on the model's depth: `__init__` checks it."""
        if settings["speculations"] < 1:
            raise HarnessError(f"speculations must be 1 or more, got {settings['speculations']}")

    @classmethod
    def heads_needed(cls, model_name: str, task: str | None, settings: dict) -> HeadsNeed | None:
        if settings.get("exit_head") != TRAINED_EXITS or task is None:
            return None
        return HeadsNeed(TRAINED_EXITS, task, heads_file(model_name, TRAINED_EXITS, task),
                         (int(settings.get("exit_layer", DEFAULT_EXIT_LAYER)),))

    def _load_exit_head(self, source: str) -> ExitHead:
        """The trained head at `exit_layer` from the heads file `source` names; a missing one names the command."""
        if source == TRAINED_EXITS and self.task is None:
            raise HarnessError(f"layerskip exit_head={TRAINED_EXITS!r} needs a task (heads are trained per task); "
                               "pass a task or a heads file's path")
        path = heads_file(self.runner.name, TRAINED_EXITS, self.task) if source == TRAINED_EXITS else Path(source)
        if not path.is_file():
            raise MissingHeads(f"no exit head file at {path}", TRAINED_EXITS, self.task, (self.exit_layer,))
        heads = exit_heads(load_heads(path)[0], self.runner)
        if self.exit_layer not in heads:
            raise MissingHeads(f"{path} has no exit head at layer {self.exit_layer} (it has {sorted(heads)})",
                               TRAINED_EXITS, self.task, (self.exit_layer,))
        return heads[self.exit_layer]

    def _exit_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.runner.logits(hidden if self.exit_head is None else self.exit_head(hidden))

    def _draft_and_verify(self, pending, cache, committed, budget):
        runner, exit_layer = self.runner, self.exit_layer
        drafted: list[int] = []
        shallow: list[torch.Tensor] = []  # exit hidden states of pending, d1, ..., reused by verification
        token = pending
        for depth in range(min(self.speculations, budget)):
            shallow.append(runner.run_layers(runner.embed([token]), cache, 0, exit_layer))
            token, _ = self._propose(self._exit_logits(shallow[-1]), committed + depth + 1, depth)
            drafted.append(token)
        chunk = [pending] + drafted
        missing = chunk[len(shallow):]  # the last draft (or pending when nothing was drafted)
        shallow.append(runner.run_layers(runner.embed(missing), cache, 0, exit_layer))
        deep = runner.run_layers(torch.cat(shallow, dim=1), cache, exit_layer, runner.n_layers)
        return drafted, runner.logits(deep)
