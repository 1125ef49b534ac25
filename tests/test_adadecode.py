"""AdaDecode must return vanilla greedy's tokens whatever its exits do: planted exits, wrong heads, rollbacks."""
import random

import pytest
import torch

from decoders.adadecode.decoder import AdaDecode
from decoders.vanilla import Vanilla
from harness.core.decoding import StopCondition
from harness.core.errors import HarnessError, MissingHeads
from harness.core.heads import ExitHead
from harness.core.kv_cache import LayeredKVCache
from tasks.base import encode_prompt
from tasks.humaneval import HumanEval

NEW_TOKENS = 24
EXITS = [8, 14, 20]


@pytest.fixture(scope="module")
def cases(runner):
    """(prompt ids, vanilla's tokens) on real prompts."""
    prompts = [HumanEval().samples(1)[0].prompt, 
        "Summarize in one sentence: The council approved a new water park in Bewdley that will create 400 jobs."]
    stop = StopCondition(NEW_TOKENS, frozenset(runner.eos_token_ids))
    out = []
    for prompt in prompts:
        ids = encode_prompt(prompt, runner.tokenizer)
        out.append((ids, Vanilla(runner).generate(ids, stop).tokens))
    return out


def _stop(runner):
    return StopCondition(NEW_TOKENS, frozenset(runner.eos_token_ids))


def _heads(runner, make=lambda d: torch.eye(d)):
    heads = {}
    for e in EXITS:
        heads[e] = ExitHead(runner.hidden_size)
        heads[e].transform.weight.data.copy_(make(runner.hidden_size))
    return heads


class Planted(AdaDecode):
    """Exits decided by a plan: position → (layer, right or wrong), using vanilla's tokens as the oracle."""

    def __init__(self, runner, reference, prompt_length, plan, **settings):
        super().__init__(runner, heads=_heads(runner), exit_layers=EXITS, **settings)
        self.reference, self.prompt_length, self.plan = reference, prompt_length, plan

    def exit_token(self, layer, hidden, position):
        index = position - self.prompt_length + 1  # the output index of the token that follows `position`
        planned = self.plan(position, layer)
        if planned is None or index >= len(self.reference):
            return None
        right = self.reference[index]
        return right if planned == "right" else (right + 1) % self.runner.lm_head.weight.shape[0]


PLANS = {
    "always right at the first exit": lambda p, layer: "right" if layer == EXITS[0] else None,
    "always wrong at the first exit": lambda p, layer: "wrong" if layer == EXITS[0] else None,
    "wrong every third position, deep": lambda p, layer: ("wrong" if p % 3 == 0 else "right") if layer == EXITS[-1] else None,
    "random layers, one in four wrong": lambda p, layer: random.Random(p * 31 + layer).choice(
        [None, None, "right", "right", "right", "wrong"]),
}


@pytest.mark.parametrize("plan", PLANS)
def test_planted_exits_and_rejections_keep_vanilla_output(runner, cases, plan):
    for ids, reference in cases:
        decoder = Planted(runner, reference, len(ids), PLANS[plan])
        gen = decoder.generate(ids, _stop(runner))
        assert gen.tokens == reference, plan
        s = gen.stats
        assert len(s["exit_layers"]) == len(reference)
        assert s["accepted"] + s["rejected"] + s["discarded"] <= s["drafted"]
        if plan.startswith("always right"):
            assert s["rejected"] == 0 and s["early_rate"] > 0.6  # at most 5 pending, then one full pass
            assert s["early_rate_by_layer"].keys() == {str(EXITS[0])}
        if plan.startswith("always wrong"):
            assert s["accepted"] == 0 and s["rejected"] + s["discarded"] == s["drafted"] > 0
            assert set(s["exit_layers"]) == {runner.n_layers}


def test_pending_early_tokens_are_bounded(runner, cases):
    ids, reference = cases[0]
    for max_pending in (1, 3):
        gen = Planted(runner, reference, len(ids), PLANS["always right at the first exit"],
                      max_pending=max_pending).generate(ids, _stop(runner))
        assert gen.tokens == reference
        runs, run = [], 0
        for layer in gen.stats["exit_layers"][1:]:
            run = run + 1 if layer < runner.n_layers else 0
            runs.append(run)
        assert max(runs) == max_pending


def test_real_heads_always_confident_or_always_wrong_keep_vanilla_output(runner, cases):
    """γ = 0 makes every head confident; the logit lens (identity T) is mostly wrong on SmolLM2, a zero T always is."""
    for make in (torch.eye, lambda d: torch.zeros(d, d)):
        for vocabulary in ("candidates", "full"):
            decoder = AdaDecode(runner, heads=_heads(runner, make), candidates=list(range(5000)), gamma=0.0,
                                vocabulary=vocabulary)
            for ids, reference in cases:
                gen = decoder.generate(ids, _stop(runner))
                assert gen.tokens == reference
                assert gen.stats["drafted"] > 0


class RecordingCache(LayeredKVCache):
    """Records (length asked, lengths after, keys/values) at each rollback."""

    def crop(self, length):
        super().crop(length)
        self.rollbacks.append((length, list(self.lengths), self.k.clone(), self.v.clone()))


def test_cache_after_each_rollback_holds_exactly_the_verified_prefix(runner, cases):
    ids, reference = cases[0]
    decoder = Planted(runner, reference, len(ids), PLANS["wrong every third position, deep"])
    caches = []

    def new_cache(prompt_ids, stop):
        cache = decoder.runner.new_cache(len(prompt_ids) + stop.max_new_tokens + 128)
        cache.__class__ = RecordingCache
        cache.rollbacks = []
        caches.append(cache)
        return cache

    decoder.new_cache = new_cache
    assert decoder.generate(ids, _stop(runner)).tokens == reference
    full = runner.new_cache(len(ids) + len(reference) + 8)
    with torch.inference_mode():
        runner.forward(ids + reference, full)  # the reference keys/values of the whole verified sequence
    rollbacks = caches[0].rollbacks
    assert len(rollbacks) >= 5
    for length, lengths, k, v in rollbacks:
        assert lengths == [length] * runner.n_layers  # every layer cut back to the last verified position
        assert (k[:, :, :, :length] - full.k[:, :, :, :length]).abs().max() < 1e-4
        assert (v[:, :, :, :length] - full.v[:, :, :, :length]).abs().max() < 1e-4


def test_stops_fall_where_vanilla_stops(runner, cases):
    ids, _ = cases[0]
    stop = StopCondition(60, frozenset(runner.eos_token_ids), ("\n\n",), runner.tokenizer)
    reference = Vanilla(runner).generate(ids, stop).tokens
    assert len(reference) < 60, "pick a prompt whose answer hits the stop string"
    gen = Planted(runner, reference + [0] * 60, len(ids), PLANS["random layers, one in four wrong"]).generate(ids, stop)
    assert gen.tokens == reference


def test_missing_heads_or_task_is_a_clear_error(runner, tmp_path):
    with pytest.raises(HarnessError, match="needs a task"):
        AdaDecode(runner)
    with pytest.raises(MissingHeads, match="no trained adadecode heads for nosuchtask at"):
        AdaDecode(runner, task="nosuchtask", heads_path=tmp_path / "adadecode-nosuchtask.safetensors")
