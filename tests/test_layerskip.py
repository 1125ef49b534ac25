"""LayerSkip: planted drafts (all right, all wrong, wrong in the middle) and real drafts must give vanilla's tokens,
with every layer's cache rolled back to exactly the full model's keys/values for the accepted positions."""
import pytest
import torch

from decoders.layerskip import LayerSkip
from harness.core.errors import HarnessError, MissingHeads
from harness.core.heads import ExitHead, heads_file, save_heads
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

        def _draft_and_verify(self, pending, cache, committed, budget):
            self.cache_ref = cache
            return super()._draft_and_verify(pending, cache, committed, budget)

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


def _heads_file(path, runner, layers_and_weights):
    tensors = {f"exit.{layer}": weight for layer, weight in layers_and_weights.items()}
    return save_heads(path, tensors, {"model": runner.name, "layers": sorted(layers_and_weights)})


def test_trained_exit_head_from_a_file(runner, case, tmp_path):
    """An identity head is the logit lens: the same drafts as the model's own head. Any other head changes the
    drafts, never the output."""
    prompt, expected = case
    stop = stop_after(runner, NEW_TOKENS)
    eye = torch.eye(runner.hidden_size)
    scrambled = eye[torch.randperm(runner.hidden_size, generator=torch.Generator().manual_seed(0))]
    identity = _heads_file(tmp_path / "identity.safetensors", runner, {12: eye, 20: 2 * eye})
    other = _heads_file(tmp_path / "scrambled.safetensors", runner, {12: scrambled})
    default = LayerSkip(runner, exit_layer=12, speculations=K, exit_head="model").generate(prompt, stop)
    with_identity = LayerSkip(runner, exit_layer=12, speculations=K, exit_head=str(identity)).generate(prompt, stop)
    with_other = LayerSkip(runner, exit_layer=12, speculations=K, exit_head=str(other)).generate(prompt, stop)
    assert default.tokens == with_identity.tokens == with_other.tokens == expected
    assert with_identity.stats == default.stats
    assert with_other.stats["acceptance_lengths"] != default.stats["acceptance_lengths"]


def test_exit_head_in_memory(runner, case):
    prompt, expected = case
    generation = LayerSkip(runner, exit_layer=12, speculations=K, exit_head=ExitHead(runner.hidden_size)).generate(
        prompt, stop_after(runner, NEW_TOKENS))
    assert generation.tokens == expected


def test_missing_exit_head_names_the_training_command(runner, tmp_path, monkeypatch):
    from run import cli_message

    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    command = "python run.py train-heads --decoder adadecode --task xsum --exit-layers 16"
    with pytest.raises(MissingHeads, match="adadecode-xsum.safetensors$") as caught:
        LayerSkip(runner, task="xsum", exit_layer=16, exit_head="adadecode")
    assert cli_message(caught.value).endswith(f"; train them with: {command}")
    path = _heads_file(heads_file(runner.name, "adadecode", "xsum"), runner,
                       {12: torch.eye(runner.hidden_size)})
    assert LayerSkip(runner, task="xsum", exit_layer=12, exit_head="adadecode").exit_head is not None
    with pytest.raises(MissingHeads, match="no exit head at layer 16 \\(it has \\[12\\]\\)$") as caught:
        LayerSkip(runner, task="xsum", exit_layer=16, exit_head=str(path))
    assert cli_message(caught.value).endswith(f"; train them with: {command}")
    with pytest.raises(HarnessError, match="needs a task"):
        LayerSkip(runner, exit_layer=12, exit_head="adadecode")
