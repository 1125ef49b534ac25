"""Which attention and MLP sub-layers a model can skip and still predict its own greedy tokens.

The draft model of layer-skipping self-speculation is the model itself with a set of sub-layers skipped. The
search scores a skip set on the model's own greedy continuations of a few prompts, teacher-forced in one chunk:
`agreement` = how often the skipping model's argmax equals the next generated token. It then estimates the
speed-up a drafter with that agreement would give, and climbs greedily: sub-layers are ranked by the agreement
lost when each is skipped alone, skipped cumulatively in that order, and the best set along the way is kept.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.core.loading import cache_dir
from harness.core.model_runner import ModelRunner

# The model's own prompts for the search: varied registers, so no task's scored samples are seen.
SEARCH_PROMPTS = (
    "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    "Summarise in one sentence: the city council voted on Tuesday to extend the tram line to the airport, "
    "a project expected to cost 40 million pounds and open in 2027.",
    "A shop sells pens at 3 dollars each. Tom buys 7 pens and pays with a 50 dollar note. How much change does he get?",
    "Explain why the sky is blue to a ten-year-old.",
)


@dataclass(frozen=True)
class SkipSet:
    attention: frozenset[int] = frozenset()
    mlp: frozenset[int] = frozenset()

    def with_sublayer(self, kind: str, layer: int) -> "SkipSet":
        if kind == "attention":
            return SkipSet(self.attention | {layer}, self.mlp)
        return SkipSet(self.attention, self.mlp | {layer})


def sublayer_costs(runner: ModelRunner) -> tuple[float, float, float]:
    """Relative per-token costs (parameter counts) of one attention block, one MLP block and the lm head."""
    layer = runner.layers[0]
    attention = sum(p.numel() for p in layer.self_attn.parameters())
    mlp = sum(p.numel() for p in layer.mlp.parameters())
    return attention, mlp, runner.lm_head.weight.numel()


def draft_cost(runner: ModelRunner, skip: SkipSet) -> float:
    """A draft step's cost as a fraction of a full decoding step."""
    attention, mlp, head = sublayer_costs(runner)
    full = runner.n_layers * (attention + mlp) + head
    return (full - len(skip.attention) * attention - len(skip.mlp) * mlp) / full


def estimated_speedup(agreement: float, cost: float, draft_length: int) -> float:
    """Tokens per round over the round's cost in full steps, for i.i.d. acceptance at rate `agreement`."""
    a = min(agreement, 1 - 1e-9)
    tokens = (1 - a ** (draft_length + 1)) / (1 - a)
    return tokens / (draft_length * cost + 1)


class SkipSearch:
    def __init__(self, runner: ModelRunner, sequences: list[list[int]], prompt_lengths: list[int],
                 draft_length: int = 4) -> None:
        """`sequences`: prompt + the model's own greedy continuation; `prompt_lengths`: where each continuation starts.

        As when drafting, the context before a continuation is the full model's: its keys/values are computed
        once, and each candidate runs only the continuation against them (then crops its own slots away)."""
        self.runner = runner
        self.draft_length = draft_length
        self.evaluations = 0
        self.contexts = []
        with torch.inference_mode():
            for ids, start in zip(sequences, prompt_lengths):
                cache = runner.new_cache(len(ids))
                runner.run_layers(runner.embed(ids[: start - 1]), cache)  # keys/values only: no logits needed
                self.contexts.append((cache, ids[start - 1:-1], torch.tensor(ids[start:], device=runner.device)))

    @torch.inference_mode()
    def agreement(self, skip: SkipSet) -> float:
        self.evaluations += 1
        hits = total = 0
        for cache, inputs, targets in self.contexts:
            context = cache.lengths[0]
            hidden = self.runner.run_layers(self.runner.embed(inputs), cache, skip_attention=skip.attention,
                                            skip_mlp=skip.mlp)
            cache.crop(context)
            hits += int((self.runner.logits(hidden).argmax(-1) == targets).sum())
            total += len(targets)
        return hits / total

    def objective(self, skip: SkipSet) -> tuple[float, float]:
        """(estimated speed-up, agreement) of a skip set."""
        agreement = self.agreement(skip)
        return estimated_speedup(agreement, draft_cost(self.runner, skip), self.draft_length), agreement

    def run(self, candidates: list[tuple[str, int]] | None = None, patience: int = 8) -> tuple[SkipSet, float, float]:
        """The best skip set found, its estimated speed-up and its agreement.

        Sub-layers are skipped cumulatively in ranking order and the best prefix of that ranking is kept (one skip
        alone rarely pays, so the climb must be allowed through worse sets). `candidates`: ("attention" or "mlp",
        layer) pairs, all by default; the climb stops after `patience` sets in a row without a new best."""
        candidates = candidates or [(kind, layer) for layer in range(self.runner.n_layers)
                                    for kind in ("attention", "mlp")]
        alone = {c: self.agreement(SkipSet().with_sublayer(*c)) for c in candidates}
        trial = best = SkipSet()
        best_speedup, best_agreement = self.objective(best)
        misses = 0
        for candidate in sorted(candidates, key=lambda c: -alone[c]):
            trial = trial.with_sublayer(*candidate)
            speedup, agreement = self.objective(trial)
            if speedup > best_speedup:
                best, best_speedup, best_agreement, misses = trial, speedup, agreement, 0
            else:
                misses += 1
                if misses >= patience:
                    break
        return best, best_speedup, best_agreement


def skip_set_file(model_name: str) -> Path:
    return cache_dir() / "skip_sets" / (re.sub(r"[^A-Za-z0-9._-]", "_", model_name or "model") + ".json")


@torch.inference_mode()
def own_continuations(runner: ModelRunner, new_tokens: int) -> tuple[list[list[int]], list[int]]:
    """The model's greedy continuations of SEARCH_PROMPTS (chat template applied when the model has one)."""
    sequences, starts = [], []
    for prompt in SEARCH_PROMPTS:
        if getattr(runner.tokenizer, "chat_template", None):
            ids = runner.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                       add_generation_prompt=True, tokenize=True, return_dict=False)
        else:
            ids = runner.tokenizer(prompt)["input_ids"]
        out = runner.model.generate(torch.tensor([list(ids)], device=runner.device), max_new_tokens=new_tokens,
                                    do_sample=False)
        sequences.append(out[0].tolist())
        starts.append(len(ids))
    return sequences, starts


def load_or_search(runner: ModelRunner, new_tokens: int = 32, draft_length: int = 4) -> SkipSet:
    """The model's cached skip set, searched for (a few minutes on a CPU) and cached on first use."""
    path = skip_set_file(runner.name)
    if path.exists():
        found = json.loads(path.read_text())
        return SkipSet(frozenset(found["skip_attention"]), frozenset(found["skip_mlp"]))
    search = SkipSearch(runner, *own_continuations(runner, new_tokens), draft_length=draft_length)
    skip, speedup, agreement = search.run()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": runner.name, "skip_attention": sorted(skip.attention),
                                "skip_mlp": sorted(skip.mlp), "agreement": agreement, "estimated_speedup": speedup,
                                "draft_length": draft_length, "prompts": len(SEARCH_PROMPTS),
                                "new_tokens": new_tokens, "evaluations": search.evaluations}, indent=1))
    return skip
