"""LayerSkip: planted drafts (all right, all wrong, wrong in the middle) and real drafts must give vanilla's tokens,
with every layer's cache rolled back to exactly the full model's keys/values for the accepted positions."""
import pytest

from decoders.layerskip import LayerSkip
from harness.core.errors import HarnessError
from spec_planting import check_planted_round_trip, planted, real_prompts, stop_after, vanilla_tokens

NEW_TOKENS = 16
K = 4


@pytest.fixture(scope="module")
def case(runner, shared_data):
    prompt = real_prompts(runner, shared_data, 1)[0]
    return prompt, vanilla_tokens(runner, prompt, NEW_TOKENS)


@pytest.mark.parametrize("mismatch_depth, accepted_per_round", [(None, K), (0, 0), (2, 2)])
def test_planted_drafts_give_vanilla_tokens_and_a_clean_cache(runner, case, mismatch_depth, accepted_per_round):
    prompt, expected = case
    decoder = planted(LayerSkip, prompt + expected, mismatch_depth)(runner, exit_layer=12, speculations=K)
    stats = check_planted_round_trip(runner, decoder, prompt, expected)
    full_rounds = stats["acceptance_lengths"][:-1]  # the last round may be cut short by the budget
    assert full_rounds and all(n == accepted_per_round + 1 for n in full_rounds)
    assert stats["accepted"] == sum(stats["acceptance_lengths"]) - len(stats["acceptance_lengths"])
    assert stats["mean_acceptance_length"] == pytest.approx(1 + stats["accepted"] / len(stats["acceptance_lengths"]))


def test_shallow_layers_run_ahead_while_drafting(runner, case):
    """While drafting, layers < E hold the drafted positions that the deep layers never saw."""
    prompt, expected = case
    seen = []

    class Watching(LayerSkip):
        def _propose(self, logits, position, depth):
            seen.append((depth, list(self.cache_ref.lengths), position))
            return super()._propose(logits, position, depth)

        def _speculate(self, pending, cache, committed, budget):
            self.cache_ref = cache
            return super()._speculate(pending, cache, committed, budget)

    Watching(runner, exit_layer=12, speculations=K).generate(prompt, stop_after(runner, 6))
    depth, lengths, position = seen[1]
    assert depth == 1 and lengths[:12] == [position] * 12 and lengths[12:] == [position - 2] * 18


@pytest.mark.parametrize("exit_layer, speculations", [(24, 6)])
def test_real_drafts_match_vanilla_on_real_prompts(runner, shared_data, exit_layer, speculations):
    for prompt in real_prompts(runner, shared_data, 2):
        decoder = LayerSkip(runner, exit_layer=exit_layer, speculations=speculations)
        generation = decoder.generate(prompt, stop_after(runner, NEW_TOKENS))
        assert generation.tokens == vanilla_tokens(runner, prompt, NEW_TOKENS)
        assert generation.stats["drafted"] > 0


def test_bad_settings_are_refused(runner):
    with pytest.raises(HarnessError, match="exit_layer"):
        LayerSkip(runner, exit_layer=30)
    with pytest.raises(HarnessError, match="speculations"):
        LayerSkip(runner, speculations=0)
