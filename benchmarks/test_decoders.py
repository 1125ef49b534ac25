"""Speed of every registered decoder on a fixed small prompt set, for pytest-benchmark's history and gates:

    python -m pytest benchmarks --benchmark-autosave
    python -m pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:10%

Each round generates from every prompt. A decoder whose output differs from vanilla's fails: a fast wrong decoder is
not a result. A decoder that needs trained heads which are not on this machine is skipped, naming the command
that trains them.
"""
import pytest
from conftest import TASK

import decoders  # noqa: F401  (registers the decoders)
from harness.core.decoding import DECODERS
from harness.run.training import missing_heads, train_command


def generate_all(decoder, prompt_set, stop) -> list[list[int]]:
    return [decoder.generate(prompt, stop).tokens for prompt in prompt_set]


@pytest.fixture(scope="session")
def vanilla_outputs(runner, prompt_set, stop) -> list[list[int]]:
    return generate_all(DECODERS.get("vanilla")(runner, task=TASK), prompt_set, stop)


@pytest.mark.parametrize("name", DECODERS.names())
def test_decoder_speed(benchmark, name, runner, prompt_set, stop, vanilla_outputs):
    if DECODERS.get(name).needs_package:
        pytest.importorskip(DECODERS.get(name).needs_package)
    missing = missing_heads(runner, {name: {}}, [TASK])
    if missing:  # only missing trained heads skip; any other error fails
        pytest.skip("; ".join(f"{why}; train them with: {train_command(need.error(why))}"
                              for need, why in missing.items()))
    decoder = DECODERS.get(name)(runner, task=TASK)
    outputs = benchmark.pedantic(generate_all, args=(decoder, prompt_set, stop), rounds=3, warmup_rounds=1)
    assert outputs == vanilla_outputs
    tokens = sum(map(len, outputs))
    benchmark.extra_info.update(new_tokens=tokens, prompts=len(prompt_set),
                                tokens_per_s_median=tokens / benchmark.stats.stats.median)
