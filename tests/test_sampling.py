"""Sampling settings, the warped target distribution, the seeded sampler and speculative acceptance (units), and
vanilla sampling's per-sample reproducibility on a tiny random model."""
import pytest
import torch

from decoders.vanilla import Vanilla
from harness.core.decoding import Decoder, Generation, StopCondition
from harness.core.errors import HarnessError
from harness.core.sampling import Sampler, Sampling, warp
from harness.core.random_models import TINY, random_runner


@pytest.fixture(scope="module")
def tiny():
    return random_runner(TINY)


def test_bad_settings_are_refused_in_one_line():
    """The core names the setting; the command line names its flag."""
    from run import cli_message

    for kwargs, flag in [({"temperature": -1}, "--temperature"), ({"top_p": 0}, "--top-p"),
                         ({"top_p": 1.5}, "--top-p"), ({"top_k": -2}, "--top-k")]:
        with pytest.raises(HarnessError, match=f"^{next(iter(kwargs))} ") as caught:
            Sampling(**kwargs)
        assert cli_message(caught.value).startswith(flag + " ")


def test_greedy_is_the_default_and_has_no_sampler():
    assert Sampling().greedy and Sampling().sampler("xsum", 0) is None
    assert Sampling().as_dict() == {"greedy": True}
    assert Sampling(temperature=0.7, top_p=0.95, seed=3).as_dict() == {
        "greedy": False, "temperature": 0.7, "top_p": 0.95, "top_k": 0, "seed": 3}


def test_warp_applies_temperature_then_top_k_then_top_p():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))
    assert torch.allclose(warp(logits, Sampling(temperature=1.0)), torch.tensor([0.5, 0.25, 0.15, 0.1]))
    assert torch.allclose(warp(logits, Sampling(temperature=1.0, top_k=2)), torch.tensor([2 / 3, 1 / 3, 0, 0]))
    # top-p keeps the smallest most likely set whose mass reaches p: 0.5 + 0.25 >= 0.7
    assert torch.allclose(warp(logits, Sampling(temperature=1.0, top_p=0.7)), torch.tensor([2 / 3, 1 / 3, 0, 0]))
    assert torch.allclose(warp(logits, Sampling(temperature=1.0, top_p=0.76)),
                          torch.tensor([0.5, 0.25, 0.15, 0]) / 0.9)
    sharp = warp(logits, Sampling(temperature=0.5))
    assert torch.allclose(sharp, torch.tensor([0.25, 0.0625, 0.0225, 0.01]) / 0.345)


def test_draw_never_returns_a_zero_probability_token():
    sampler = Sampler(Sampling(temperature=1.0), seed=0)
    weights = torch.tensor([0.0, 0.3, 0.0, 0.7, 0.0])
    assert {sampler.draw(weights) for _ in range(200)} == {1, 3}


def test_rejection_over_siblings_keeps_the_target_distribution():
    """Candidates tried in turn against p with the rejected ones removed: each token comes out with p's
    probability (a statistical check with seeded draws, tolerance 5 standard errors)."""
    probs = torch.tensor([0.1, 0.4, 0.2, 0.3])
    sampler = Sampler(Sampling(temperature=1.0), seed=1)
    n = 20000
    counts = torch.zeros(4)
    for _ in range(n):
        token, _ = sampler.choose_among([3, 0], probs)
        counts[token] += 1
    assert torch.all((counts / n - probs).abs() < 5 * (probs * (1 - probs) / n).sqrt())


def test_accept_chain_keeps_confirmed_drafts_and_replaces_an_impossible_one():
    sampler = Sampler(Sampling(temperature=1.0), seed=0)
    certain = torch.full((3, 4), -1e9)
    certain[0, 1] = certain[1, 2] = certain[2, 3] = 0.0  # the model is sure of 1, 2, then 3
    assert sampler.accept_chain([1, 2], certain) == [1, 2, 3]
    assert sampler.accept_chain([1, 0], certain) == [1, 2]  # 0 has probability 0: rejected, 2 drawn instead


def test_vanilla_sampling_is_reproducible_per_sample(tiny):
    settings = Sampling(temperature=1.0, top_p=0.9, seed=5)
    stop = StopCondition(12)
    prompt = [5, 17, 99, 3]
    first = Vanilla(tiny).generate(prompt, stop, sampler=settings.sampler("task", "a")).tokens
    assert Vanilla(tiny).generate(prompt, stop, sampler=settings.sampler("task", "a")).tokens == first
    others = {tuple(Vanilla(tiny).generate(prompt, stop, sampler=settings.sampler("task", key)).tokens)
              for key in "bcdef"}
    assert len(others | {tuple(first)}) > 1  # different samples draw differently


class GreedyOnly(Decoder):
    name = "greedy_only"

    def _generate(self, prompt_ids, stop, on_first_token):
        return Generation([])


def test_a_greedy_only_decoder_refuses_a_sampler(tiny):
    assert GreedyOnly(tiny).generate([1, 2], StopCondition(2)).tokens == []
    with pytest.raises(HarnessError, match="greedy_only decodes greedily only"):
        GreedyOnly(tiny).generate([1, 2], StopCondition(2), sampler=Sampling(temperature=1.0).sampler(0))


def test_a_draft_drawn_from_q_is_accepted_with_min_1_p_over_q_and_keeps_p():
    """One token drafted from q, verified against p: the first output token is distributed as p (seeded draws,
    tolerance 5 standard errors); a verifier told the wrong q (p itself, so it accepts every draft) is caught."""
    p = torch.tensor([0.1, 0.4, 0.2, 0.3])
    q = torch.tensor([0.5, 0.1, 0.2, 0.2])
    logits = torch.log(torch.stack([p, p]))

    def first_tokens(claimed_q: torch.Tensor) -> torch.Tensor:
        sampler, counts = Sampler(Sampling(temperature=1.0), seed=2), torch.zeros(4)
        for _ in range(20000):
            counts[sampler.accept_chain([sampler.draw(q)], logits, [claimed_q])[0]] += 1
        return counts / 20000

    def distributed_as_p(shares: torch.Tensor) -> bool:
        return bool(torch.all((shares - p).abs() < 5 * (p * (1 - p) / 20000).sqrt()))

    assert distributed_as_p(first_tokens(q))
    assert not distributed_as_p(first_tokens(p))
