"""LayerSkip self-speculation (Elhoushi et al. 2024): draft with an early exit, verify with the remaining layers.

Drafting runs each token through layers [0, E) only and reads the next token from the exit hidden state with the
model's own final norm and lm head (LayerSkip's early exit). Verification pushes the drafted chunk through
layers [E, N) only: the shallow layers' keys/values and the exit hidden states computed while drafting are exactly
what the full model would compute for those positions, so they are reused as they are (LayerSkip's cache reuse).
Only the last drafted token, which nobody has run yet, goes through the shallow layers inside verification.
"""
from __future__ import annotations

import torch

from harness.core.decoding import DECODERS
from harness.core.errors import HarnessError
from harness.core.speculation import DraftVerifyDecoder


@DECODERS.register("layerskip")
class LayerSkip(DraftVerifyDecoder):
    def __init__(self, runner, task=None, exit_layer: int = 20, speculations: int = 4, **settings):
        super().__init__(runner, task, exit_layer=exit_layer, speculations=speculations, **settings)
        if not 0 < exit_layer < runner.n_layers:
            raise HarnessError(f"exit_layer must lie in 1..{runner.n_layers - 1}, got {exit_layer}")
        if speculations < 1:
            raise HarnessError(f"speculations must be 1 or more, got {speculations}")
        self.exit_layer = exit_layer
        self.speculations = speculations

    def _exit_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.runner.logits(hidden)

    def _speculate(self, pending, cache, committed, budget):
        runner, exit_layer = self.runner, self.exit_layer
        drafted: list[int] = []
        shallow: list[torch.Tensor] = []  # exit hidden states of pending, d1, ..., reused by verification
        token = pending
        for depth in range(min(self.speculations, budget)):
            shallow.append(runner.run_layers(runner.embed([token]), cache, 0, exit_layer))
            token = self._propose(self._exit_logits(shallow[-1]), committed + depth + 1, depth)
            drafted.append(token)
        chunk = [pending] + drafted
        missing = chunk[len(shallow):]  # the last draft (or pending when nothing was drafted)
        shallow.append(runner.run_layers(runner.embed(missing), cache, 0, exit_layer))
        deep = runner.run_layers(torch.cat(shallow, dim=1), cache, exit_layer, runner.n_layers)
        return drafted, runner.logits(deep)
