"""The packed bf16 and native fp32 runners are batch-invariant: a causal chunk's rows are bit-for-bit what
one-position forwards give.

Every decoder that verifies causal chunks then returns vanilla's tokens in bf16 by construction. Tree verification
(Medusa, EAGLE) is not covered: a node's ancestors sit at other cache slots than in left-to-right decoding, so the
attention reductions add the same terms in other lanes (`Decoder.exact_on_runner`). The checks compare
with `torch.equal` (no tolerance) at every layer, for the hidden states and for the keys/values each layer wrote.
"""
import pytest
import torch

from decoders.adadecode.decoder import AdaDecode
from decoders.eagle.decoder import Eagle
from decoders.layerskip import LayerSkip
from decoders.medusa.decoder import Medusa
from decoders.medusa.heads import MedusaHeads
from decoders.pld import PromptLookup
from decoders.self_speculative.decoder import SelfSpeculative
from decoders.vanilla import Vanilla
from harness.core.decoding import CACHE_HEADROOM
from harness.core.layer_calls import LayerCall
from decoders.eagle.draft import FeatureDraft
from harness.core.heads import ExitHead
from spec_planting import real_prompts, stop_after, vanilla_tokens

CONTEXT = 40


@pytest.fixture(params=["runner_bf16", "qwen_bf16", "runner_f32_native",
                        pytest.param("runner_bf16_compiled", marks=pytest.mark.slow)])
def packed_runner(request):
    """The embedded SmolLM2 (Llama) and the random Qwen2 (q/k/v biases, 7:1 grouped heads), both on the packed path,
    SmolLM2 on the native fp32 kernels, and on the compiled runner (`--runner compiled`; slow: it compiles every
    bucket)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["runner_bf16", "runner_f32_native", pytest.param("runner_bf16_compiled", marks=pytest.mark.slow)])
def exact_runner(request):
    """The packed bf16 runner, native and compiled (`--runner compiled`; slow: it compiles every bucket), and the native
    fp32 runner."""
    return request.getfixturevalue(request.param)


def _context_cache(runner, context, extra=80):
    cache = runner.new_cache(len(context) + extra)
    runner.forward(context, cache)
    return cache


def _layer_by_layer(runner, hidden, cache, **chunk):
    """Hidden states [q, d] after each layer, running the layers one call at a time."""
    out = []
    for i in range(runner.n_layers):
        hidden = runner.run_layers(hidden, cache, i, i + 1, **chunk)
        out.append(hidden[0])
    return out


def _one_position_path(runner, context, path_tokens, positions=None):
    """Per-layer hidden states of the last token of `path_tokens`, fed one position at a time after `context`."""
    cache = _context_cache(runner, context)
    for j, token in enumerate(path_tokens):
        pos = None if positions is None else torch.tensor([positions[j]])
        states = _layer_by_layer(runner, runner.embed([token]), cache, positions=pos)
    return [s[0] for s in states], cache


@torch.inference_mode()
@pytest.mark.parametrize("q", range(1, 9))
def test_a_causal_chunk_equals_one_position_forwards_at_every_layer(packed_runner, q):
    runner, vocab = packed_runner, packed_runner.config.vocab_size
    gen = torch.Generator().manual_seed(q)
    context = torch.randint(0, vocab, (CONTEXT,), generator=gen).tolist()
    tokens = torch.randint(0, vocab, (q,), generator=gen).tolist()
    chunk_cache = _context_cache(runner, context)
    chunk = _layer_by_layer(runner, runner.embed(tokens), chunk_cache)
    for j in range(q):
        single, single_cache = _one_position_path(runner, context, tokens[: j + 1])
        for layer in range(runner.n_layers):
            assert torch.equal(chunk[layer][j], single[layer]), f"row {j} of a {q}-chunk differs at layer {layer}"
    end = CONTEXT + q
    assert torch.equal(chunk_cache.k[:, :, :, :end], single_cache.k[:, :, :, :end])
    assert torch.equal(chunk_cache.v[:, :, :, :end], single_cache.v[:, :, :, :end])
    assert torch.equal(runner.logits(chunk[-1][None]), torch.cat(
        [runner.logits(_one_position_path(runner, context, tokens[: j + 1])[0][-1][None, None]) for j in range(q)]))


@torch.inference_mode()
def test_shallow_layers_ahead_and_deep_layers_catching_up_give_vanilla_bits(packed_runner):
    """AdaDecode's schedule: each layer's chunk starts after a different number of valid slots."""
    runner, ahead = packed_runner, 5
    split = runner.n_layers // 3 + 1  # 11 of SmolLM2's 30 layers, 3 of the random Qwen's 6
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(0, runner.config.vocab_size, (CONTEXT + ahead,), generator=gen).tolist()
    reference_cache = _context_cache(runner, ids[:CONTEXT])
    reference = torch.cat([runner.forward([t], reference_cache) for t in ids[CONTEXT:]])
    cache = _context_cache(runner, ids[:CONTEXT])
    pending = [runner.run_layers(runner.embed([t]), cache, 0, split) for t in ids[CONTEXT:]]
    deep = runner.run_layers(torch.cat(pending, dim=1), cache, split, runner.n_layers)
    assert torch.equal(runner.logits(deep), reference)
    assert torch.equal(cache.k[:, :, :, :len(ids)], reference_cache.k[:, :, :, :len(ids)])


NEW_TOKENS = 40


def _decoders(runner) -> dict:
    """Builders of each decoder with settings that make it draft, exit and roll back often."""
    medusa_heads = MedusaHeads(3, runner.hidden_size)
    torch.nn.init.normal_(medusa_heads.weight, std=0.02, generator=torch.Generator().manual_seed(0))
    exits = {layer: ExitHead(runner.hidden_size, runner.dtype) for layer in (12, 20, 26)}
    return {
        "adadecode": lambda: AdaDecode(runner, heads=exits, candidates=list(range(8000)), gamma=0.2),
        "layerskip": lambda: LayerSkip(runner, exit_layer=16, speculations=3),
        "self_speculative": lambda: SelfSpeculative(runner, skip_attention=[4, 9, 14, 19, 24], skip_mlp=[6, 12, 18]),
        "medusa": lambda: Medusa(runner, heads=medusa_heads, tree="default"),
        "pld": lambda: PromptLookup(runner, k=4),
        "eagle": lambda: Eagle(runner, draft=FeatureDraft(runner)),
    }


@pytest.mark.parametrize("name", ["adadecode", "layerskip", "self_speculative", "pld"])
def test_every_causal_chunk_decoder_equals_vanilla_token_for_token_in_bf16(exact_runner, shared_data, name):
    runner = exact_runner
    decoder = _decoders(runner)[name]()
    drafted = 0
    for prompt in real_prompts(runner, shared_data, 4):
        generation = decoder.generate(prompt, stop_after(runner, NEW_TOKENS))
        assert generation.tokens == vanilla_tokens(runner, prompt, NEW_TOKENS)
        drafted += generation.stats.get("drafted", 0)
    assert drafted > 0  # the rollback paths ran


@pytest.mark.parametrize("name", ["adadecode", "layerskip", "self_speculative", "medusa", "pld", "eagle"])
def test_every_decoder_allocates_vanillas_cache_length(runner, shared_data, name, monkeypatch):
    """The packed path's bits depend on the cache buffer's length (its reductions run over all of it), so every
    decoder allocates vanilla's. The length does not depend on the dtype: checked on the float32 runner, so on
    every CPU."""
    lengths, allocate = [], runner.new_cache
    monkeypatch.setattr(runner, "new_cache", lambda max_len: lengths.append(max_len) or allocate(max_len))
    prompt = real_prompts(runner, shared_data, 1)[0]
    Vanilla(runner).generate(prompt, stop_after(runner, 4))
    assert lengths == [len(prompt) + 4 + CACHE_HEADROOM]
    _decoders(runner)[name]().generate(prompt, stop_after(runner, 4))
    assert len(lengths) > 1 and lengths[1] == lengths[0]


@torch.inference_mode()
def test_sequences_sharing_a_pass_get_the_bits_each_gets_alone(packed_runner):
    """A lone chunk runs each layer as one C call, sequences batched together run the kernels op by op over their
    joined rows: both must give the same bits (ragged chunks, layer ranges and contexts)."""
    runner, vocab = packed_runner, packed_runner.config.vocab_size
    gen = torch.Generator().manual_seed(11)
    contexts = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (CONTEXT, CONTEXT + 9, CONTEXT + 3)]
    chunks = [torch.randint(0, vocab, (q,), generator=gen).tolist() for q in (1, 4, 2)]
    ranges = [(0, runner.n_layers), (0, runner.n_layers // 2), (1, runner.n_layers)]
    alone = []
    for context, chunk, (start, end) in zip(contexts, chunks, ranges):
        cache = _context_cache(runner, context)
        hidden = runner.embed(chunk) if start == 0 else runner.run_layers(runner.embed(chunk), cache, 0, start)
        alone.append((hidden, runner.run_layers(hidden, cache, start, end), cache))
    calls = []
    for context, chunk, (hidden, _, _), (start, end) in zip(contexts, chunks, alone, ranges):
        cache = _context_cache(runner, context)
        if start:
            runner.run_layers(runner.embed(chunk), cache, 0, start)  # the same keys/values below the range as alone
        calls.append(LayerCall(hidden, cache, start, end))
    for (_, expected, cache), call, out in zip(alone, calls, runner.run_layers_batch(calls)):
        assert torch.equal(out, expected)
        assert torch.equal(call.cache.k, cache.k) and torch.equal(call.cache.v, cache.v)
    assert all(torch.equal(a, b) for a, b in zip(runner.logits_batch([c[1] for c in alone]),
                                                  [runner.logits(c[1]) for c in alone]))


@torch.inference_mode()
def test_sequences_that_skip_sublayers_get_the_bits_each_gets_alone(packed_runner):
    """Self-speculative drafts skip attention or MLP at chosen layers. Batched: a layer where every sequence skips
    its attention, one where every sequence skips its MLP, and layers that only some skip (the group's gathered
    rows then differ between attention and MLP: a race there once deadlocked the threads)."""
    runner, vocab = packed_runner, packed_runner.config.vocab_size
    gen = torch.Generator().manual_seed(5)
    contexts = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (CONTEXT, CONTEXT + 5, CONTEXT + 2)]
    chunks = [torch.randint(0, vocab, (q,), generator=gen).tolist() for q in (1, 3, 1)]
    every_skips_attention, every_skips_mlp = 2, runner.n_layers - 3
    skips = [(frozenset({every_skips_attention, 4}), frozenset({every_skips_mlp})),
             (frozenset({every_skips_attention}), frozenset({every_skips_mlp, 1, 4})),
             (frozenset({every_skips_attention, every_skips_mlp}), frozenset({every_skips_mlp, every_skips_attention}))]
    alone, calls = [], []
    for context, chunk, (attention, mlp) in zip(contexts, chunks, skips):
        cache = _context_cache(runner, context)
        alone.append((runner.run_layers(runner.embed(chunk), cache, 0, runner.n_layers,
                                        skip_attention=attention, skip_mlp=mlp), cache))
        calls.append(LayerCall(runner.embed(chunk), _context_cache(runner, context), 0, runner.n_layers,
                               skip_attention=attention, skip_mlp=mlp))
    for (expected, cache), call, out in zip(alone, calls, runner.run_layers_batch(calls)):
        assert torch.equal(out, expected)
        assert call.cache.lengths == cache.lengths
        assert torch.equal(call.cache.k, cache.k) and torch.equal(call.cache.v, cache.v)
