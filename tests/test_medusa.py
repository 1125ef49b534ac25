"""Medusa decoding is lossless whatever its heads guess, keeps the cache exact, and trains/loads its heads."""
import pytest
import torch

from decoders.medusa.decoder import Medusa
from decoders.medusa.heads import MedusaHeads, _shifted_targets
from decoders.vanilla import Vanilla
from harness.core.decoding import StopCondition
from harness.core.errors import HarnessError, MissingHeads
from harness.core.heads import heads_file, load_heads
from tasks.base import encode_prompt

NEW_TOKENS = 32
PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Summarize in one sentence: the city council voted on Tuesday to extend the tram line to the airport by 2030.",
]


class Planted(Medusa):
    """Guesses from the known greedy output: at depth d, rank `rank[d]` holds the right token (None: no rank
    does); every other rank holds a wrong one."""

    def __init__(self, runner, reference, prompt_len, ranks, **settings):
        super().__init__(runner, heads=MedusaHeads(len(ranks), runner.hidden_size), **settings)
        self.reference, self.prompt_len, self.ranks = reference, prompt_len, ranks

    def candidates(self, hidden, context):
        emitted = len(context) - self.prompt_len  # the root is the last emitted token
        guesses = []
        for depth, rank in enumerate(self.ranks[: self.tree.depth]):
            i = emitted + depth
            right = self.reference[i] if i < len(self.reference) else 0
            row = [(right + 1 + k) % 49152 for k in range(self.tree.top_k)]
            if rank is not None and i < len(self.reference):
                row[rank] = right
            guesses.append(row)
        return guesses


@pytest.fixture(scope="module")
def references(runner):
    stop = StopCondition(NEW_TOKENS, frozenset(runner.eos_token_ids))
    out = []
    for prompt in PROMPTS:
        ids = encode_prompt(prompt, runner.tokenizer)
        out.append((ids, Vanilla(runner).generate(ids, stop).tokens))
    return out, stop


@pytest.mark.parametrize("tree, ranks, per_round", [
    ("default", [0, 0, 0], 4),  # all right: every round accepts the whole depth
    ("default", [None, None, None], 1),  # all wrong: only the bonus token
    ("default", [0, None, None], 2),  # right then wrong
    ("default", [1, 0, None], 3),  # right at the second rank, then top-1: the (1, 0) branch
    ("chain", [0, 0, None], 3),
])
def test_planted_guesses_give_vanilla_output_and_the_expected_acceptance(runner, references, tree, ranks, per_round):
    refs, stop = references
    for ids, reference in refs:
        decoder = Planted(runner, reference, len(ids), ranks, tree=tree)
        gen = decoder.generate(ids, stop)
        assert gen.tokens == reference
        lengths = gen.stats["acceptance_lengths"]
        assert lengths[:-1] == [per_round] * (len(lengths) - 1)  # the last round may run past the reference
        assert gen.stats["steps"] == 1 + len(lengths)
        assert gen.stats["mean_acceptance_length"] == pytest.approx(sum(lengths) / len(lengths))


@torch.inference_mode()
@pytest.mark.parametrize("ranks, accepted", [([0, 0, 0], 3), ([1, 0, None], 2), ([None, 0, 0], 0)])
def test_cache_after_acceptance_equals_a_fresh_pass_over_the_accepted_tokens(runner, references, ranks, accepted):
    ids, reference = references[0][0]
    decoder = Planted(runner, reference, len(ids), ranks)
    cache = runner.new_cache(len(ids) + 32)
    root = runner.forward(ids, cache)[-1].argmax().item()
    assert root == reference[0]
    new_tokens, hidden = decoder.verify(cache, root, decoder.candidates(None, ids + [root]))
    assert new_tokens == reference[1: accepted + 2]  # accepted guesses and the bonus token
    kept = len(ids) + 1 + accepted  # prompt, root, accepted guesses; the bonus is not in the cache yet
    assert cache.lengths == [kept] * runner.n_layers
    fresh = runner.new_cache(len(ids) + 32)
    fresh_hidden = runner.run_layers(runner.embed(ids + reference[: accepted + 1]), fresh)
    assert (cache.k[:, :, :, :kept] - fresh.k[:, :, :, :kept]).abs().max().item() < 1e-4
    assert (cache.v[:, :, :, :kept] - fresh.v[:, :, :, :kept]).abs().max().item() < 1e-4
    assert (hidden[0, -1] - fresh_hidden[0, -1]).abs().max().item() < 1e-3


@pytest.mark.parametrize("tree", ["default", "chain"])
def test_parity_with_real_head_guesses(runner, references, tree):
    """Heads with random weights guess from the hidden state as trained ones do; output must not change."""
    refs, stop = references
    heads = MedusaHeads(3, runner.hidden_size)
    torch.nn.init.normal_(heads.weight, std=0.02, generator=torch.Generator().manual_seed(0))
    decoder = Medusa(runner, heads=heads, tree=tree)
    for ids, reference in refs:
        assert decoder.generate(ids, stop).tokens == reference


def test_zero_initialised_heads_are_the_identity(runner):
    heads = MedusaHeads(2, runner.hidden_size)
    hidden = torch.randn(3, runner.hidden_size)
    assert torch.equal(heads(hidden), hidden[:, None].expand(3, 2, -1))


def test_targets_shift_by_one_more_token_per_head():
    assert _shifted_targets([7, 8, 9, 10], 2).tolist() == [[8, 9], [9, 10], [10, -100], [-100, -100]]


def test_tree_deeper_than_the_heads_is_refused(runner):
    with pytest.raises(HarnessError, match="tree depth 3 exceeds the 2 trained heads"):
        Medusa(runner, heads=MedusaHeads(2, runner.hidden_size), tree="default")


def test_missing_heads_say_which_heads_are_missing(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    with pytest.raises(MissingHeads, match="no trained medusa heads for nosuchtask at"):
        Medusa(runner, task="nosuchtask")


def test_trained_heads_are_saved_with_metadata_and_loaded_for_the_task(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    prompts = [encode_prompt(p, runner.tokenizer) for p in PROMPTS]
    path = Medusa.train_heads(runner, "toy", prompts, n_heads=2, steps=3, batch_size=8, max_new_tokens=6)
    assert path == heads_file(runner.name, "medusa", "toy")
    tensors, meta = load_heads(path)
    assert meta["n_heads"] == 2 and meta["steps"] == 3 and meta["prompts"] == 2 and meta["task"] == "toy"
    assert tensors["weight"].abs().sum() > 0  # training moved the zero-initialised weights
    decoder = Medusa(runner, task="toy", tree="chain")
    assert decoder.heads.n_heads == 2 and torch.equal(decoder.heads.weight.detach(), tensors["weight"])
