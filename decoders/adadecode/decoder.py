"""AdaDecode (Wei et al., ICML 2025): early tokens from exit heads, deferred layers caught up as chunks, verification.

The current token runs upward. At each exit layer E a trained head (`ExitHead`: T → final norm → frozen lm head)
looks at its hidden state; if the head is confident (top probability ≥ γ) its token is emitted *tentatively* and the
next token starts at layer 0 at once. The early token's layers [E, n) are deferred: when a later token reaches a
layer whose cache is missing earlier positions (`cache.lengths[layer]` tells), those positions join it and go
through that layer together as one chunk — on a CPU, a chunk of a few positions costs about as much as one.
At most `max_pending` early tokens may wait unverified; then a token must go through all layers.

When a chunk reaches the last layer, the final logits at each position verify the early token that followed it.
At the first mismatch everything after it is discarded, every layer's cache is cropped and decoding continues from
the final layer's token; so the output is exactly greedy decoding's. Tokens reach the `TokenSink` only once verified,
so stops (end of sequence, stop strings, the token budget) fall exactly where vanilla's do. Under sampling the exit
test is the same, but the early token is drawn from the exit head's own target distribution q (end-of-sequence
tokens removed) and verified by speculative sampling against the final layer's p (`Sampler.accept_chain`: accepted
with probability min(1, p/q), else redrawn from max(0, p - q)), so the output keeps vanilla sampling's distribution.

The cheap exit test. Checking an exit with the full lm head costs a whole-vocabulary matmul (on SmolLM2, 49 152 × 576,
about a sixth of a decoding step), which would eat the gain. By default the head's softmax is taken over a small
candidate vocabulary instead: the tokens the model emitted most often on the task's training generations plus the
prompt's own tokens (a few thousand rows of the lm head, gathered once per prompt). That probability is an upper
bound of the full-vocabulary one, so the test is slightly optimistic; γ absorbs it (see the γ sweep in the README).
Correctness never depends on the confidence test: every early token is verified by the final layer, so a wrong or
over-confident exit costs time only. `vocabulary="full"` runs the paper's exact full-vocabulary test.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.core.decoding import DECODERS, Decoder, Generation, TokenSink
from decoders.adadecode.training import KIND, train_exit_heads
from harness.core.heads import ExitHead, HeadsNeed, exit_heads, heads_file, load_heads
from harness.core.errors import HarnessError
from harness.core.model_runner import ModelRunner
from harness.core.speculation import SpeculationStats, accept_chain

# The README's measured heads: exits at these layers of a 30-layer model (scaled to other depths), 150 training
# prompts with 64 generated tokens each, 800 steps.
RECIPE_EXITS_OF_30 = (16, 20, 22, 24, 26, 28)


@dataclass
class _Group:
    """Consecutive positions that exited together: their hidden states after layers [0, depth)."""
    depth: int
    hidden: torch.Tensor  # [1, k, d]


@dataclass
class _ExitStats(SpeculationStats):
    """The shared counts (`steps`: passes that reached the last layer, the prefill included; a round drafts the early
    tokens its verification checks), plus where tokens exited and what the deferred layers cost."""
    n_layers: int = 0
    exit_layers: list[int] = field(default_factory=list)
    passes: int = 0  # upward passes started at layer 0
    layer_runs: int = 0  # (pass, layer) pairs computed, whatever the chunk size
    rejected: int = 0
    discarded: int = 0

    def exit_dict(self, emitted: int) -> dict:
        early = [e for e in self.exit_layers[:emitted] if e < self.n_layers]
        return self.as_dict() | {
            "passes": self.passes, "rejected": self.rejected, "discarded": self.discarded,
            "rejection_rate": self.rejected / self.drafted if self.drafted else None,
            "early_rate": len(early) / emitted if emitted else None,
            "early_rate_by_layer": {str(e): n / emitted for e, n in sorted(Counter(early).items())},
            "mean_exit_layer": sum(self.exit_layers[:emitted]) / emitted if emitted else None,
            "layers_per_token": self.layer_runs / emitted if emitted else None,
            "exit_layers": self.exit_layers[:emitted],
        }


@DECODERS.register(KIND)
class AdaDecode(Decoder):
    """Settings: `gamma` (0.75), `max_pending` (5), `exit_layers` (a list, or text such as "24+28" for the command
    line; default: every layer the heads were trained for), `vocabulary` ("candidates" or "full"), `heads_path` (default: the heads trained for the model and task),
    or `heads` ({layer: ExitHead}, with a `candidates` tensor of token ids) to use heads held in memory."""

    samples = True
    trains_heads = True
    measured_settings = {
        "SmolLM2-135M-Instruct": {
            "settings": {"gamma": 0.85, "exit_layers": "24+28"},
            "source": "README's bf16 measurements (SmolLM2-135M, 2-core AVX512-BF16 CPU, packed bf16 runner): sweep of "
                      "gamma 0.7/0.85/0.95 x exits 16+24, 20+28, 24+28, 12+20+28, 4 samples x 96 tokens per task; "
                      "gamma 0.85 with exits 24 and 28 was fastest on humaneval and within 1 % of the fastest on xsum"},
        "Qwen2.5-Coder-0.5B-Instruct": {
            "settings": {"gamma": 0.8, "exit_layers": "18+21"},
            "source": "README's bf16 measurements (Qwen2.5-Coder-0.5B, 2-core AMX-BF16 Xeon, packed bf16 runner): "
                      "sweep of gamma 0.8/0.9/0.97 x exits 16+19+22, 18+21, 21+22, 6 samples x 96 tokens per task; "
                      "gamma 0.8 with exits 18 and 21 was fastest on both tasks"}}

    def __init__(self, runner: ModelRunner, task: str | None = None, gamma: float = 0.75, max_pending: int = 5,
                 exit_layers: list[int] | None = None, vocabulary: str = "candidates",
                 heads_path: str | Path | None = None, heads: dict[int, ExitHead] | None = None,
                 candidates: torch.Tensor | list[int] | None = None) -> None:
        super().__init__(runner, task)
        self.gamma = float(gamma)
        self.max_pending = int(max_pending)
        self.check_ranges({"vocabulary": vocabulary})
        self.vocabulary = vocabulary
        self.heads: dict[int, ExitHead] = dict(heads or {})
        self.candidates = torch.as_tensor([] if candidates is None else candidates, dtype=torch.long)
        self.metadata: dict = {}
        if not self.heads:
            if task is None and heads_path is None:
                raise HarnessError("adadecode needs a task (its exit heads are trained per task) or heads_path")
            self._load(heads_path or heads_file(runner.name, KIND, task))
        self.exit_layers = parse_layers(self.heads if exit_layers is None else exit_layers)
        missing = [e for e in self.exit_layers if e not in self.heads]
        if missing:
            raise HarnessError(f"no trained exit head for layers {missing}; trained: {sorted(self.heads)}")
        self._candidate_ids: torch.Tensor | None = None
        self._candidate_weight: torch.Tensor | None = None

    @classmethod
    def check_ranges(cls, settings: dict[str, Any]) -> None:
        """The exit layers' heads are checked once they load (`__init__`)."""
        if settings["vocabulary"] not in ("candidates", "full"):
            raise HarnessError(f"adadecode vocabulary must be 'candidates' or 'full', got {settings['vocabulary']!r}")

    @classmethod
    def heads_needed(cls, model_name: str, task: str | None, settings: dict) -> HeadsNeed | None:
        if task is None or "heads" in settings or "heads_path" in settings:
            return None
        layers = settings.get("exit_layers")
        return HeadsNeed(KIND, task, heads_file(model_name, KIND, task),
                         tuple(parse_layers(layers)) if layers is not None else ())

    @classmethod
    def default_recipe(cls, runner: ModelRunner) -> dict:
        """`train-heads` settings of the README's measured heads, the exits scaled to the model's depth."""
        exits = sorted({min(runner.n_layers - 1, round(runner.n_layers * e / 30)) for e in RECIPE_EXITS_OF_30})
        return {"prompts": 150, "max_new_tokens": 64, "steps": 800, "exit_layers": exits}

    def _load(self, path) -> None:
        tensors, self.metadata = load_heads(path)
        self.heads.update(exit_heads(tensors, self.runner))
        self.candidates = tensors.get("candidates", self.candidates)

    # --- the exit test -------------------------------------------------------------------------------------------
    def _prepare_vocabulary(self, prompt_ids: list[int]) -> None:
        """Gathers the candidate rows of the lm head once per prompt (training candidates ∪ prompt tokens)."""
        if self.vocabulary == "full":
            self._candidate_ids, self._candidate_weight = None, self.runner.lm_head.weight
            return
        ids = torch.unique(torch.cat([self.candidates, torch.tensor(prompt_ids, dtype=torch.long)]))
        self._candidate_ids = ids.to(self.runner.device)
        self._candidate_weight = self.runner.lm_head.weight.index_select(0, self._candidate_ids)

    def exit_token(self, layer: int, hidden: torch.Tensor, position: int) -> int | None:
        """The token to emit early at `layer` for the hidden state [1, 1, d] at `position`, or None to go on.

        A heuristic only: a wrong or over-confident answer costs time, never correctness (the final layer verifies).
        """
        probs = torch.softmax(self._head_logits(layer, hidden), dim=-1)
        top, index = probs.max(dim=-1)
        token = index if self._candidate_ids is None else self._candidate_ids[index]
        decision = int(torch.where(top >= self.gamma, token, -1))  # the one host sync of the test
        return None if decision < 0 else decision

    def _head_logits(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """The exit head's logits (float32) over the candidate vocabulary for the hidden state [1, 1, d]."""
        normed = self.runner.final_norm(self.heads[layer](hidden))[0, -1]
        return F.linear(normed, self._candidate_weight).float()

    def _sampled_draft(self, layer: int, hidden: torch.Tensor, eos: frozenset[int]) -> tuple[int, torch.Tensor] | None:
        """Under sampling, an early token drawn from the exit head's target distribution q with end-of-sequence tokens
        removed, and that q over the whole vocabulary; None when q holds nothing else."""
        q = self.sampler.probs(self._head_logits(layer, hidden))
        if self._candidate_ids is not None:
            q = torch.zeros(self.runner.lm_head.weight.shape[0], device=q.device).index_copy(0, self._candidate_ids, q)
        q[sorted(eos)] = 0.0
        mass = float(q.sum())
        return None if mass <= 0 else (self.sampler.draw(q), q / mass)

    # --- decoding ------------------------------------------------------------------------------------------------
    def _generate(self, prompt_ids, stop, on_first_token):
        runner, n = self.runner, self.runner.n_layers
        self._prepare_vocabulary(prompt_ids)
        cache = self.new_cache(prompt_ids, stop)
        sink = TokenSink(stop, on_first_token)
        stats = _ExitStats(steps=1, n_layers=n, layer_runs=n)
        token = self.pick(runner.forward(prompt_ids, cache, last_only=True))[0]
        stats.exit_layers.append(n)
        done = sink.add([token])
        groups: list[_Group] = []  # positions still missing deep layers, oldest (deepest) first
        early: list[tuple[int, int, torch.Tensor | None]] = []  # unverified early tokens: (token, exit layer, q)
        position = len(prompt_ids)  # where `token` goes
        while not done:
            stats.passes += 1
            hidden, layer = runner.embed([token]), 0
            exit_allowed = (len(early) < self.max_pending
                            and len(sink.tokens) + len(early) + 1 < stop.max_new_tokens)
            exits = [e for e in self.exit_layers if e < n] if exit_allowed else []
            exited, q = None, None
            while layer < n:
                while groups and groups[-1].depth == layer:  # earlier positions missing this layer join the chunk
                    hidden = torch.cat([groups.pop().hidden, hidden], dim=1)
                assert cache.lengths[layer] == position + 1 - hidden.shape[1], "chunk and cache disagree"
                stops = [e for e in exits if e > layer] + ([groups[-1].depth] if groups else []) + [n]
                end = min(stops)
                hidden = runner.run_layers(hidden, cache, layer, end)
                stats.layer_runs += end - layer
                layer = end
                if layer in exits:
                    exited = self.exit_token(layer, hidden[:, -1:], position)
                    if exited is not None and self.sampler is not None:
                        drawn = self._sampled_draft(layer, hidden[:, -1:], stop.eos_token_ids)
                        exited, q = drawn if drawn is not None else (None, None)
                    if exited is not None and exited not in stop.eos_token_ids:
                        break
                    exited = None
            if exited is not None:
                groups.append(_Group(layer, hidden))
                early.append((exited, layer, q))
                token, position = exited, position + 1
                continue
            # The chunk reached the last layer: its final logits verify the early tokens that followed each position.
            targets = accept_chain([t for t, _, _ in early], runner.logits(hidden), self.sampler,
                                   [q for _, _, q in early])
            accepted = len(targets) - 1
            stats.record(len(early), accepted)
            if accepted < len(early):
                stats.rejected += 1
                stats.discarded += len(early) - accepted - 1
                position = position - len(early) + accepted
                cache.crop(position + 1)
            stats.exit_layers += [e for _, e, _ in early[:accepted]] + [n]
            token, position = targets[-1], position + 1
            done = sink.add([t for t, _, _ in early[:accepted]] + [token])
            early = []
        return Generation(sink.tokens, stats.exit_dict(len(sink.tokens)))

    # --- training ------------------------------------------------------------------------------------------------
    @classmethod
    def train_heads(cls, runner: ModelRunner, task_name: str, prompt_ids_list: list[list[int]], **settings):
        """Distils exit heads (`decoders.adadecode.training`); returns the saved file's path."""
        return train_exit_heads(runner, task_name, prompt_ids_list, **settings)


def parse_layers(layers: Iterable[int] | str | int) -> list[int]:
    """Exit layers from a list, one number, or text ("24+28"; "," and spaces also separate)."""
    if isinstance(layers, int):
        return [layers]
    if isinstance(layers, str):
        layers = [part for part in re.split(r"[+, ]", layers) if part]
    return sorted(int(e) for e in layers)
