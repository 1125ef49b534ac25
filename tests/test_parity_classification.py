"""A divergence from vanilla is classified by the reference's logit margin: near-tie or real mismatch."""
import pytest
import torch

from harness.checks import parity
from spec_planting import real_prompts, vanilla_tokens

NEW_TOKENS = 12


@pytest.fixture(scope="module")
def case(runner, shared_data):
    prompt = real_prompts(runner, shared_data, 1)[0]
    return prompt, vanilla_tokens(runner, prompt, NEW_TOKENS)


def _runner_up(runner, prompt, reference, index):
    """Vanilla's second choice at output `index`, and its logit gap to the first."""
    cache = runner.new_cache(len(prompt) + index + 1)
    with torch.inference_mode():
        logits = runner.forward(prompt + reference[:index], cache)[-1]
    top = logits.topk(2)
    return int(top.indices[1]), float(top.values[0] - top.values[1])


def test_the_margin_is_zero_for_vanillas_token_and_the_logit_gap_for_another(runner, case):
    prompt, reference = case
    assert parity.reference_margin(runner, prompt, reference, reference[5], 5) == 0.0
    second, gap = _runner_up(runner, prompt, reference, 5)
    assert parity.reference_margin(runner, prompt, reference, second, 5) == pytest.approx(gap, abs=1e-3)


def test_a_divergence_is_a_near_tie_only_within_the_threshold(runner, case, monkeypatch):
    """For a decoder not exact on the runner (a tree verifier), the dtype's threshold decides."""
    prompt, reference = case
    second, gap = _runner_up(runner, prompt, reference, 4)
    diverged = reference[:4] + [second] + reference[5:]
    result = parity.check(runner, False, prompt, reference, diverged)
    assert result["first_divergence"] == 4 and result["margin"] == pytest.approx(gap, abs=1e-3)
    assert result["class"] == ("near_tie" if gap < parity.NEAR_TIE_MARGIN[torch.float32] else "mismatch")
    monkeypatch.setitem(parity.NEAR_TIE_MARGIN, torch.float32, gap + 1.0)
    assert parity.check(runner, False, prompt, reference, diverged)["class"] == "near_tie"
    monkeypatch.setitem(parity.NEAR_TIE_MARGIN, torch.float32, gap / 2)
    assert parity.check(runner, False, prompt, reference, diverged)["class"] == "mismatch"


def test_matches_are_exact_and_length_differences_are_mismatches(runner, case):
    prompt, reference = case
    assert parity.check(runner, True, prompt, reference, reference)["class"] == "exact"
    assert parity.check(runner, True, prompt, reference, reference[:-3])["class"] == "mismatch"
    assert parity.check(runner, True, prompt, reference[:-3], reference)["class"] == "mismatch"


class ExactRunner:
    """A stand-in for the packed bf16 runner: all `near_tie_margin` and `check` read of it (no bf16 hardware)."""
    exact_chunks, dtype = True, torch.bfloat16


class EagerRunner:
    """A stand-in for the float32 eager runner (torch's kernels: chunks differ from one-position steps in the last
    bits)."""
    exact_chunks, dtype = False, torch.float32


def test_the_exact_bf16_path_allows_no_near_tie_except_outside_the_runner(monkeypatch):
    exact = ExactRunner()
    assert parity.near_tie_margin(exact, exact_on_runner=True) == 0.0
    assert parity.near_tie_margin(exact, exact_on_runner=False) == parity.NEAR_TIE_MARGIN[torch.bfloat16]
    monkeypatch.setattr(parity, "reference_margin", lambda *args: 0.0)  # an exact tie in the reference's logits
    tie = ([1, 2], [3, 4, 5], [3, 9, 5])
    assert parity.check(exact, True, *tie)["class"] == "mismatch"  # identical arithmetic cannot break a tie
    assert parity.check(exact, False, *tie)["class"] == "near_tie"
    assert parity.check(EagerRunner(), True, *tie)["class"] == "near_tie"  # chunks differ in the last bits there
    monkeypatch.setattr(parity, "reference_margin", lambda *args: 1e-6)  # the smallest gap is a bug there too
    assert parity.check(exact, True, *tie)["class"] == "mismatch"


def test_the_stand_in_says_what_the_packed_runner_says(runner_bf16):
    assert (runner_bf16.exact_chunks, runner_bf16.dtype) == (ExactRunner.exact_chunks, ExactRunner.dtype)


def test_counts_read_old_rows_without_a_class():
    rows = [{"parity": {"match": True}}, {"parity": {"match": False}}, {"parity": None},
            {"parity": {"match": False, "class": "near_tie"}}]
    assert parity.parity_counts(rows) == {"exact": 1, "near_tie": 1, "mismatch": 1}
