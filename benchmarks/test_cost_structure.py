"""The cost structure that decides AdaDecode's gain: a chunk of q positions through layers, and the lm head.

    python -m pytest benchmarks/test_cost_structure.py --benchmark-columns=median,iqr --benchmark-sort=name

An early token saves its own deep layers and lm head, but the next token then carries them as a chunk of 2 … 6
positions. If a chunk costs about what one position costs (weights streamed from memory dominate, as on GPUs),
that is nearly free; where compute dominates (a CPU), the chunk's extra positions cost almost as much as separate
steps, and the gain shrinks to the layers skipped. Each case runs after a 256-token context, as during decoding.
"""
import pytest
import torch

CONTEXT = 256
CHUNKS = (1, 2, 3, 4, 6)


@pytest.fixture(scope="module")
def context_cache(runner):
    cache = runner.new_cache(CONTEXT + max(CHUNKS) + 1)
    with torch.inference_mode():
        runner.forward(list(range(1000, 1000 + CONTEXT)), cache)
    return cache


@pytest.mark.parametrize("q", CHUNKS)
@pytest.mark.parametrize("part", ["all layers", "last fifth of the layers", "lm head"])
def test_chunk_cost(benchmark, runner, context_cache, part, q):
    n = runner.n_layers
    start = {"all layers": 0, "last fifth of the layers": n - n // 5, "lm head": n}[part]
    hidden = runner.embed(list(range(2000, 2000 + q)))

    def step():
        with torch.inference_mode():
            context_cache.crop(CONTEXT)
            for layer in range(start):  # the shallow layers already hold the chunk's positions
                context_cache.lengths[layer] = CONTEXT + q
            out = runner.run_layers(hidden, context_cache, start, n)
            return runner.logits(out) if part == "lm head" else out

    result = benchmark.pedantic(step, rounds=15, warmup_rounds=2)
    assert result.shape[-2] == q
    benchmark.extra_info.update(part=part, chunk=q, layers=n - start)
