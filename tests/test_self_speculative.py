"""Draft & Verify self-speculation: planted and real drafts give vanilla's tokens with a clean cache; the draft
threshold adapts to the acceptance rate; the skip-set search and its per-model cache."""
import json
import math

import pytest
import torch

from decoders.self_speculative.decoder import SelfSpeculative
from decoders.self_speculative.skip_search import SkipSearch, SkipSet, skip_set_file
from harness.core.random_models import TINY, random_runner
from spec_planting import check_planted_round_trip, planted, real_prompts, stop_after, vanilla_tokens

NEW_TOKENS = 16
K = 4
SKIP = {"skip_attention": [4, 9, 14, 19, 24], "skip_mlp": [6, 12, 18]}


@pytest.fixture(scope="module")
def case(runner, shared_data):
    prompt = real_prompts(runner, shared_data, 2)[1]
    return prompt, vanilla_tokens(runner, prompt, NEW_TOKENS)


@pytest.mark.parametrize("mismatch_depth, accepted_per_round", [(None, K), (0, 0), (1, 1)])
def test_planted_drafts_give_vanilla_tokens_and_a_clean_cache(runner, case, mismatch_depth, accepted_per_round):
    prompt, expected = case
    fixed_length = {"max_draft": K, "threshold": 0.0, "step": 0.0}  # always K drafts, so rounds are predictable
    decoder = planted(SelfSpeculative, prompt + expected, mismatch_depth)(runner, **SKIP, **fixed_length)
    stats = check_planted_round_trip(runner, decoder, prompt, expected)
    full_rounds = stats["acceptance_lengths"][:-1]
    assert full_rounds and all(n == accepted_per_round + 1 for n in full_rounds)


def test_real_drafts_match_vanilla_on_real_prompts(runner, shared_data):
    for prompt in real_prompts(runner, shared_data, 2):
        generation = SelfSpeculative(runner, **SKIP).generate(prompt, stop_after(runner, NEW_TOKENS))
        assert generation.tokens == vanilla_tokens(runner, prompt, NEW_TOKENS)
        assert generation.stats["drafted"] > 0 and 0 <= generation.stats["acceptance_rate"] <= 1


def test_threshold_rises_when_drafts_fail_and_falls_when_they_pass(runner):
    decoder = SelfSpeculative(runner, **SKIP, threshold=0.5, target_acceptance=0.8)
    decoder.threshold, decoder.acceptance = 0.5, 0.8
    decoder._after_round(drafted=4, accepted=0)
    assert decoder.threshold > 0.5
    decoder.threshold, decoder.acceptance = 0.5, 0.8
    decoder._after_round(drafted=4, accepted=4)
    assert decoder.threshold < 0.5


def test_the_search_on_the_real_model_keeps_to_its_candidates(runner, shared_data):
    prompt = real_prompts(runner, shared_data, 1)[0]
    expected = vanilla_tokens(runner, prompt, NEW_TOKENS)
    search = SkipSearch(runner, [prompt + expected[:8]], [len(prompt)])
    assert search.agreement(SkipSet()) == 1.0  # the full model agrees with its own greedy tokens
    candidates = [("mlp", 0), ("attention", 1), ("mlp", 29), ("attention", 28)]
    best, speedup, agreement = search.run(candidates, patience=4)
    assert {("attention", i) for i in best.attention} | {("mlp", i) for i in best.mlp} <= set(candidates)
    assert speedup >= search.objective(SkipSet())[0] and agreement == search.agreement(best)


# A known landscape on the tiny model (6 layers): each skipped sub-layer keeps this share of the agreement.
ALONE = {("attention", 1): 0.98, ("mlp", 2): 0.975, ("mlp", 4): 0.9, ("attention", 5): 0.3}


class KnownLandscape(SkipSearch):
    """A search whose agreement is the product of `ALONE` over the skipped sub-layers (no model runs)."""

    def agreement(self, skip: SkipSet) -> float:
        self.evaluations += 1
        return math.prod([ALONE["attention", i] for i in skip.attention] + [ALONE["mlp", i] for i in skip.mlp])


def test_the_climb_goes_through_a_worse_set_to_the_best_and_keeps_it():
    """Estimated speed-ups along the climb (attention 1, then mlp 2, mlp 4, attention 5 cumulatively): 1.0 with
    nothing skipped, then 0.9995, 1.035, 0.938, 0.351; the best is the second set, reached through a worse one."""
    search = KnownLandscape(random_runner(TINY, torch.float32, torch.device("cpu")), [], [])
    best, speedup, agreement = search.run(list(ALONE), patience=2)
    assert best == SkipSet(frozenset({1}), frozenset({2}))
    assert (speedup, agreement) == search.objective(best) and speedup == pytest.approx(1.0351, abs=1e-4)
    assert search.run(list(ALONE), patience=1)[0] == SkipSet()  # one worse set in a row ends that climb


def test_the_cached_skip_set_is_used(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    path = skip_set_file(runner.name)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"skip_attention": [3], "skip_mlp": [5, 7]}))
    decoder = SelfSpeculative(runner)
    assert decoder.skip == SkipSet(frozenset({3}), frozenset({5, 7}))
