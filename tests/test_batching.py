"""Batch > 1: several sequences decoded together by copies of one decoder, each pass over the weights shared.

On the packed bf16 path (batch-invariant kernels) every sequence of a ragged batch must get, bit for bit, the tokens
it gets alone, for every decoder. The batch's bookkeeping (rounds, sequences leaving and refilling, failures) is
checked on every CPU with a stand-in that runs a round's calls one by one, so it is exact on any kernels.
"""
from __future__ import annotations

import threading

import pytest
import torch

from decoders.vanilla import Vanilla
from harness.core.batching import SequenceJob
from harness.core.layer_calls import LayerCall
from spec_planting import real_prompts, stop_after
from test_bf16_exactness import _decoders

NEW_TOKENS = 20


def _jobs(runner, prompts, budgets) -> list[SequenceJob]:
    return [SequenceJob(p, stop_after(runner, n)) for p, n in zip(prompts, budgets)]


def _alone(decoder, jobs) -> list[list[int]]:
    return [decoder.generate(j.prompt_ids, j.stop).tokens for j in jobs]


@pytest.mark.parametrize("name", ["vanilla", "adadecode", "layerskip", "self_speculative", "medusa", "pld", "eagle"])
def test_a_ragged_batch_gives_each_sequence_its_tokens_alone_bit_for_bit(runner_bf16, shared_data, name):
    """Different prompt lengths, budgets, acceptances and exit layers; static batches of 3 and refilled ones of 2."""
    runner = runner_bf16
    decoder = Vanilla(runner) if name == "vanilla" else _decoders(runner)[name]()
    prompts = real_prompts(runner, shared_data, 5)
    assert len(set(map(len, prompts))) == 5  # ragged
    jobs = _jobs(runner, prompts, [NEW_TOKENS, 6, NEW_TOKENS, 11, NEW_TOKENS])
    alone = _alone(decoder, jobs)
    for size, refill in ((3, False), (2, True)):
        results = decoder.generate_batch(jobs, size, refill)
        assert [r.error for r in results] == [None] * len(jobs)
        assert [r.generation.tokens for r in results] == alone, (size, refill)


class RoundLog:
    """A stand-in for the runner's batched calls: each round's calls run one by one (exact on any kernels), and
    the number of sequences in each round is logged."""

    def __init__(self, runner, monkeypatch) -> None:
        self.layer_rounds: list[int] = []
        self.logit_rounds: list[int] = []

        def layers(calls):
            self.layer_rounds.append(len(calls))
            return [runner.run_layers(c.hidden, c.cache, c.start, c.end, c.positions, c.chunk_mask,
                                      c.skip_attention, c.skip_mlp) for c in calls]

        def logits(hiddens):
            self.logit_rounds.append(len(hiddens))
            return [runner.logits(h) for h in hiddens]

        monkeypatch.setattr(runner, "run_layers_batch", layers)
        monkeypatch.setattr(runner, "logits_batch", logits)


def test_sequences_share_rounds_and_one_that_finishes_early_leaves_the_others_undisturbed(runner, shared_data,
                                                                                          monkeypatch):
    decoder = Vanilla(runner)
    prompts = real_prompts(runner, shared_data, 4)
    jobs = _jobs(runner, prompts, [3, 12, 12, 7])
    alone = _alone(decoder, jobs)
    assert list(map(len, alone)) == [3, 12, 12, 7]  # no end of sequence comes first
    log = RoundLog(runner, monkeypatch)
    results = decoder.generate_batch(jobs, 4)
    assert [r.generation.tokens for r in results] == alone
    # vanilla asks one layer call and one logits call per token: 4 sequences share the first 3 rounds, then 3 ...
    assert log.layer_rounds == [4] * 3 + [3] * 4 + [2] * 5 and log.logit_rounds == log.layer_rounds
    assert all(r.batch == 0 and r.size == 4 for r in results)
    assert results[0].finished_s < results[3].finished_s < results[1].finished_s


def test_refill_admits_the_next_prompt_where_one_finished(runner, shared_data, monkeypatch):
    decoder = Vanilla(runner)
    prompts = real_prompts(runner, shared_data, 4)
    jobs = _jobs(runner, prompts, [2, 6, 3, 3])
    alone = _alone(decoder, jobs)
    assert list(map(len, alone)) == [2, 6, 3, 3]
    log = RoundLog(runner, monkeypatch)
    results = decoder.generate_batch(jobs, 2, refill=True)
    assert [r.generation.tokens for r in results] == alone
    # sequence 2 takes 0's place after 2 rounds, 3 takes 2's after 3 more, 1 ends one round later
    assert log.layer_rounds == [2] * 6 + [1] * 2
    assert results[0].finished_s <= results[2].started_s < results[2].finished_s <= results[3].started_s
    static = RoundLog(runner, monkeypatch)
    decoder.generate_batch(jobs, 2)
    assert static.layer_rounds == [2, 2, 1, 1, 1, 1, 2, 2, 2]  # without refill the next batch waits for the last


def test_a_failing_sequence_fails_alone(runner, shared_data):
    """A sequence whose cache overflows is refused before its chunk is written; its batch-mates decode on."""
    decoder = Vanilla(runner)
    prompts = real_prompts(runner, shared_data, 3)
    jobs = _jobs(runner, prompts, [8, 8, 8])
    alone = _alone(decoder, jobs)
    small = decoder.new_cache
    decoder.new_cache = lambda prompt_ids, stop: (small(prompt_ids, stop) if prompt_ids != prompts[1] else
                                                  runner.new_cache(len(prompt_ids) + 2))
    results = decoder.generate_batch(jobs, 3)
    assert "KV cache full" in str(results[1].error)
    assert [results[0].generation.tokens, results[2].generation.tokens] == [alone[0], alone[2]]


def test_batched_rows_of_one_sequence_each_match_the_joined_pass_on_the_eager_path(runner, shared_data):
    """On the eager path (not batch-invariant) the joined pass computes what separate passes compute, up to
    float32 rounding."""
    prompts = real_prompts(runner, shared_data, 2)
    with torch.inference_mode():
        caches = [runner.new_cache(len(p) + 4) for p in prompts]
        joined = runner.run_layers_batch([LayerCall(runner.embed(p), c, 0, runner.n_layers)
                                          for p, c in zip(prompts, caches)])
        for p, c, h in zip(prompts, caches, joined):
            fresh = runner.new_cache(len(p) + 4)
            alone = runner.run_layers(runner.embed(p), fresh)
            assert (h - alone).abs().max() <= 1e-5 * alone.abs().max()  # float32 rounding of activations up to ~1e3
            assert c.lengths == fresh.lengths


def test_rotary_tables_only_grow_when_a_batchs_sequences_allocate_their_caches_at_once(runner):
    """The sequences of a batch allocate their caches from their own threads; a smaller table computed beside a
    larger one must not replace it (the larger cache's positions would then index past its end)."""
    sizes = [3000 + 97 * (i % 5) for i in range(24)]
    threads = [threading.Thread(target=runner._ensure_rotary, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runner.rotary_tables()[0].shape[0] >= max(sizes)


def test_a_batched_pass_on_the_packed_path_gives_each_sequence_its_bits_alone(runner_bf16, shared_data):
    """Prefills of different lengths, then one row each, batched and alone: hidden states and cache entries equal
    bit for bit (tokens alone would hide a last-bit difference away from a near-tie)."""
    runner = runner_bf16
    prompts = real_prompts(runner, shared_data, 4)
    with torch.inference_mode():
        batched = [runner.new_cache(len(p) + 8) for p in prompts]
        alone = [runner.new_cache(len(p) + 8) for p in prompts]
        for step in (prompts, [[p[-1]] for p in prompts]):
            outs = runner.run_layers_batch([LayerCall(runner.embed(ids), c, 0, runner.n_layers)
                                            for ids, c in zip(step, batched)])
            for ids, cache, out in zip(step, alone, outs):
                assert torch.equal(out, runner.run_layers(runner.embed(ids), cache))
        for b, a in zip(batched, alone):
            assert b.lengths == a.lengths and torch.equal(b.k, a.k) and torch.equal(b.v, a.v)
