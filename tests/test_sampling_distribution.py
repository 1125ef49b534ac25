"""Under sampling every decoder must draw from vanilla's distribution: a chi-square test of the first 3 tokens.

On a tiny random model (`harness.core.random_models.TINY`), with top-k 3 (27 continuations) and temperature 0.05 (the
random model's logits are close together; this spreads the top 3 apart), each decoder generates 4 tokens (so the
first round drafts 2) from 1000 seeded samplers, and Pearson's chi-square test compares the counts of the first 3
tokens with the exact probabilities computed from the model (`harness.checks.distribution`), and a chi-square test of
homogeneity compares them with vanilla's counts from 1000 other seeds. At alpha = 0.001 a correct decoder fails each
check with probability 0.001 (2 % for the 20 checks together); the seeds are fixed, so the outcome is
reproducible. A planted verifier that accepts a draft with probability sqrt(p) instead of p (accepts too
often) must fail the same check.
"""
import pytest
import torch

from decoders.adadecode.decoder import AdaDecode
from decoders.eagle.decoder import Eagle
from decoders.hf_generate import HFGenerate
from decoders.layerskip import LayerSkip
from decoders.medusa.decoder import Medusa
from decoders.medusa.heads import MedusaHeads
from decoders.pld import PromptLookup
from decoders.self_speculative.decoder import SelfSpeculative
from decoders.vanilla import Vanilla
from harness.core.decoding import StopCondition
from decoders.eagle.draft import FeatureDraft
from harness.core.heads import ExitHead
from harness.core.sampling import Sampler, Sampling
from harness.checks.distribution import chi_square, empirical_counts, exact_distribution, two_sample
from harness.core.random_models import TINY, random_runner

SETTINGS = Sampling(temperature=0.05, top_k=3, seed=0)
# "5 17 99" is followed by tokens the model finds likely after it, so prompt lookup drafts them (and the model
# accepts some and rejects others)
PROMPT = [5, 17, 99, 42, 238, 238, 7, 5, 17, 99]
DRAWS, LENGTH, GENERATED, ALPHA = 1000, 3, 4, 0.001

DECODERS = {
    "vanilla": lambda runner: Vanilla(runner),
    "hf_generate": lambda runner: HFGenerate(runner),  # transformers' own sampling
    "hf_generate_lookup": lambda runner: HFGenerate(runner, prompt_lookup_num_tokens=2),
    "pld": lambda runner: PromptLookup(runner),
    "layerskip": lambda runner: LayerSkip(runner, exit_layer=5, speculations=2),
    "self_speculative": lambda runner: SelfSpeculative(runner, skip_attention=[2, 3], skip_mlp=[3]),
    # untrained (identity) heads guess the model's own top tokens, several siblings per position
    "medusa": lambda runner: Medusa(runner, heads=MedusaHeads(2, runner.hidden_size), tree="[[0],[1],[2],[0,0],[1,0]]"),
    "eagle": lambda runner: OracleEagle(runner, draft=untrained_draft(runner)),
    # early tokens drawn from the exit head's q, over the whole vocabulary or over candidates (half of it)
    "adadecode": lambda runner: AdaDecode(runner, heads={5: ExitHead(runner.hidden_size)}, gamma=0.0,
                                          vocabulary="full"),
    "adadecode_candidates": lambda runner: AdaDecode(runner, heads={5: ExitHead(runner.hidden_size)}, gamma=0.0,
                                                     candidates=list(range(0, 512, 2))),
}


def untrained_draft(runner) -> FeatureDraft:
    torch.manual_seed(0)
    return FeatureDraft(runner)


class OracleEagle(Eagle):
    """EAGLE whose tree (an untrained draft's would never be accepted on this model) is the model's own top 2 after
    the root and its top 1 after the first of them: a deterministic function of the context, as a draft's is, so
    sampling must stay exact while both siblings, the residual and the deeper node are all exercised."""

    def _generate(self, prompt_ids, stop, on_first_token):
        self._context, self._prompt_length = list(prompt_ids), len(prompt_ids)
        return super()._generate(prompt_ids, stop, on_first_token)

    def _top(self, ids: list[int], k: int) -> list[int]:
        return self.runner.forward(ids, self.runner.new_cache(len(ids)), last_only=True)[-1].topk(k).indices.tolist()

    def _draft_tree(self, root, guess, draft_cache):
        if len(self._context) == self._prompt_length:
            self._context.append(root)  # the prefill's token
        first, second = self._top(self._context, 2)
        return [root, first, second, self._top(self._context + [first], 1)[0]], [-1, 0, 0, 1]

    def _verify(self, cache, tree, tokens):
        new_tokens, features = super()._verify(cache, tree, tokens)
        self._context += new_tokens
        return new_tokens, features


class TooEager(Sampler):
    """The planted bug: accepts a drafted token with probability sqrt(p), more often than p."""

    def choose_among(self, candidates, probs):
        residual = probs.double().clone()
        for index, token in enumerate(candidates):
            if self.uniform() < (float(residual[token]) / float(residual.sum())) ** 0.5:
                return token, index
            residual[token] = 0.0
        return self.draw(residual), None


@pytest.fixture(scope="module")
def tiny():
    return random_runner(TINY)


def drafting_stats(decoder) -> tuple[int, int]:
    """(drafted, accepted) over 100 sampled generations: the check means something only if drafts are both
    accepted and rejected."""
    drafted = accepted = 0
    for i in range(100):
        stats = decoder.generate(PROMPT, StopCondition(GENERATED), sampler=SETTINGS.sampler("stats", i)).stats
        drafted, accepted = drafted + stats["drafted"], accepted + stats["accepted"]
    return drafted, accepted


@pytest.fixture(scope="module")
def exact(tiny):
    return exact_distribution(tiny, PROMPT, LENGTH, SETTINGS)


@pytest.fixture(scope="module")
def vanilla_counts(tiny):
    """Vanilla's counts from seeds of their own (independent of the decoders' draws)."""
    other_seeds = Sampling(SETTINGS.temperature, SETTINGS.top_p, SETTINGS.top_k, seed=1)
    return empirical_counts(Vanilla(tiny), PROMPT, LENGTH, other_seeds, DRAWS, GENERATED)


@pytest.mark.parametrize("name", list(DECODERS))
def test_decoder_samples_the_models_distribution(tiny, exact, vanilla_counts, name):
    decoder = DECODERS[name](tiny)
    if not name.startswith(("vanilla", "hf_generate")):  # these report no drafting counts
        drafted, accepted = drafting_stats(decoder)
        assert 0 < accepted < drafted, (drafted, accepted)
    counts = empirical_counts(decoder, PROMPT, LENGTH, SETTINGS, DRAWS, GENERATED)
    check, against_vanilla = chi_square(counts, exact, ALPHA), two_sample(counts, vanilla_counts, ALPHA)
    print(f"{name}: against the exact distribution chi-square {check.statistic:.2f} on {check.cells} cells, "
          f"p = {check.p_value:.4f}; against vanilla's draws chi-square {against_vanilla.statistic:.2f} on "
          f"{against_vanilla.cells} cells, p = {against_vanilla.p_value:.4f}")
    assert check.passed, check.as_dict()
    assert against_vanilla.passed, against_vanilla.as_dict()


@pytest.mark.parametrize("name", ["pld", "self_speculative", "medusa"])
def test_a_verifier_that_accepts_too_often_is_caught(tiny, exact, vanilla_counts, name):
    counts = empirical_counts(DECODERS[name](tiny), PROMPT, LENGTH, SETTINGS, DRAWS, GENERATED, sampler=TooEager)
    check, against_vanilla = chi_square(counts, exact, ALPHA), two_sample(counts, vanilla_counts, ALPHA)
    print(f"{name} with the planted bug: against the exact distribution chi-square {check.statistic:.2f} on "
          f"{check.cells} cells, p = {check.p_value:.3g}; against vanilla's draws chi-square "
          f"{against_vanilla.statistic:.2f}, p = {against_vanilla.p_value:.3g}")
    assert not check.passed, check.as_dict()
    assert not against_vanilla.passed, against_vanilla.as_dict()


def test_the_run_check_starts_where_the_next_token_is_least_certain(tiny):
    from harness.checks.distribution import informative_prefix
    from harness.core.sampling import warp

    settings = Sampling(temperature=1.0, top_k=3)
    prompt = PROMPT[:4]
    start = informative_prefix(tiny, prompt, settings, horizon=12)
    greedy = Vanilla(tiny).generate(prompt, StopCondition(12, frozenset())).tokens
    assert start[:len(prompt)] == prompt and start[len(prompt):] == greedy[:len(start) - len(prompt)]

    def entropy(prefix):
        cache = tiny.new_cache(len(prefix) + 1)
        with torch.inference_mode():
            probs = warp(tiny.forward(prefix, cache, last_only=True)[-1], settings)
        return float(-(probs * probs.clamp_min(1e-30).log()).sum())

    entropies = [entropy(prompt + greedy[:i]) for i in range(13)]
    assert abs(entropy(start) - max(entropies)) < 1e-4 and len(start) > len(prompt)
