"""The cost structure that decides every method's gain: a chunk of q positions through all layers, and the lm head,
in float32 and bfloat16, after a short and a long context; and the memory-bandwidth floor beside them.

    python -m pytest benchmarks/test_cost_structure.py --benchmark-columns=median,iqr --benchmark-sort=name

Drafts, catch-up chunks and candidate trees ride along with a step for free where a chunk costs what one position
costs (the weights are streamed once either way, as on GPUs); where compute dominates, each extra position costs
almost a step of its own. `test_bandwidth_floor` reads a buffer the size of the weights one step reads: no step can
be faster than that on this machine.
"""
import pytest
import torch

from harness.measure.bandwidth import bandwidth_floor

CONTEXTS = (256, 1024)
CHUNKS = tuple(range(1, 9))
DTYPES = ("float32", "bfloat16")


@pytest.fixture(scope="module")
def runners():
    from harness.core.loading import load_runner

    return {dtype: load_runner("smollm2", dtype, "cpu") for dtype in DTYPES}


@pytest.fixture(scope="module")
def context_caches(runners):
    caches = {}
    with torch.inference_mode():
        for dtype, runner in runners.items():
            for context in CONTEXTS:
                caches[dtype, context] = runner.new_cache(context + max(CHUNKS) + 1)
                runner.forward(list(range(1000, 1000 + context)), caches[dtype, context])
    return caches


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("q", CHUNKS)
@pytest.mark.parametrize("part", ["all layers", "lm head"])
def test_chunk_cost(benchmark, runners, context_caches, dtype, context, part, q):
    runner, cache = runners[dtype], context_caches[dtype, context]
    hidden = runner.embed(list(range(2000, 2000 + q)))

    def step():
        with torch.inference_mode():
            if part == "lm head":
                return runner.logits(hidden)
            cache.crop(context)
            return runner.run_layers(hidden, cache)

    result = benchmark.pedantic(step, rounds=15, warmup_rounds=2)
    assert result.shape[-2] == q
    benchmark.extra_info.update(part=part, chunk=q, context=context, dtype=dtype, kernel_path=runner.kernel_path)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bandwidth_floor(benchmark, runners, dtype):
    floor = benchmark.pedantic(bandwidth_floor, args=(runners[dtype],), rounds=3)
    assert floor["read_gb_per_s"] > 0
    benchmark.extra_info.update(dtype=dtype, **floor)
