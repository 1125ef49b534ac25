"""Prompt lookup decoding: the n-gram lookup, vanilla's tokens on real prompts (fp32 and bf16), and a prompt whose
lookups match, so that fully accepted, partly accepted and rejected drafts all roll the cache back correctly."""
import pytest

from decoders.pld import PromptLookup, lookup
from harness.core.errors import HarnessError
from spec_planting import check_planted_round_trip, real_prompts, stop_after, vanilla_tokens

NEW_TOKENS = 32


def test_lookup_takes_the_latest_match_of_the_longest_ngram():
    context = [1, 2, 3, 9, 8, 2, 3, 7, 5, 1, 2, 3]
    assert lookup(context, 3, 1, 4) == [9, 8, 2, 3]  # only the first occurrence matches 3 tokens
    assert lookup(context, 2, 1, 4) == [7, 5, 1, 2]  # 2 tokens match twice: the latest wins
    assert lookup(context, 2, 1, 1) == [7]
    assert lookup([4, 5, 6, 7, 4], 3, 1, 9) == [5, 6, 7, 4]  # the proposal may run into the suffix itself
    assert lookup([4, 5, 6, 7, 4], 3, 2, 9) == []  # no 2-gram recurs
    assert lookup([4], 3, 1, 9) == [] and lookup([1, 2, 3], 3, 1, 9) == []


def test_bad_settings_are_refused(runner):
    with pytest.raises(HarnessError, match="min_ngram <= max_ngram"):
        PromptLookup(runner, max_ngram=1, min_ngram=2)
    with pytest.raises(HarnessError, match="k"):
        PromptLookup(runner, k=0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_real_prompts_give_vanilla_tokens(runner, request, shared_data, dtype):
    """In bf16 on the runner's packed path the chunks are bit-exact, so parity holds there too."""
    model = runner if dtype == "float32" else request.getfixturevalue("runner_bf16")
    drafted = 0
    for prompt in real_prompts(model, shared_data, 2):
        generation = PromptLookup(model).generate(prompt, stop_after(model, NEW_TOKENS))
        assert generation.tokens == vanilla_tokens(model, prompt, NEW_TOKENS)
        drafted += generation.stats["drafted"]
    assert drafted > 0


class Recording(PromptLookup):
    """Records the cache state each round starts from and (drafted, accepted) per round."""

    def _generate(self, prompt_ids, stop, on_first_token):
        self.rounds, self.outcomes, self.lookups = [], [], []
        return super()._generate(prompt_ids, stop, on_first_token)

    def _draft_and_verify(self, pending, cache, committed, budget):
        self.cache = cache
        self.rounds.append((committed, pending, list(cache.lengths)))
        drafted, logits = super()._draft_and_verify(pending, cache, committed, budget)
        self.lookups.append((committed, budget, drafted))
        return drafted, logits

    def _after_round(self, drafted, accepted):
        self.outcomes.append((drafted, accepted))


def test_matching_lookups_accept_and_reject_with_a_clean_cache(runner, shared_data):
    prompt = real_prompts(runner, shared_data, 2)[1]  # a news article to summarise: the summary copies phrases
    expected = vanilla_tokens(runner, prompt, NEW_TOKENS)
    decoder = Recording(runner, max_ngram=3, min_ngram=1, k=6)
    stats = check_planted_round_trip(runner, decoder, prompt, expected)
    full = prompt + expected
    for committed, budget, drafted in decoder.lookups:  # each lookup saw exactly the prompt and the tokens so far
        assert drafted == lookup(full[:committed + 1], 3, 1, min(6, budget))
    outcomes = [(d, a) for d, a in decoder.outcomes if d]
    assert any(a == d for d, a in outcomes)  # a whole draft accepted
    assert any(0 < a < d for d, a in outcomes)  # rejected in the middle: rolled back past the accepted part
    assert any(a == 0 for d, a in outcomes)  # all rejected
    assert stats["drafted"] == sum(d for d, _ in outcomes) and stats["accepted"] == sum(a for _, a in outcomes)
    assert stats["mean_acceptance_length"] == pytest.approx(1 + stats["accepted"] / len(outcomes))
