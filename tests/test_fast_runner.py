"""The static step (padded buckets, device-side geometry) and its compiled form on the CPU.

The static step's logic is checked uncompiled (cheap, exact against the packed path); one test compiles it
(`fullgraph=True`) and checks exact chunks and that nothing recompiles; a slow one runs every decoder on it.
"""
import pytest
import torch
from torch._dynamo.utils import counters

from harness.core.backends.cuda_graphs import CapturedStack, eager_capture
from harness.core.backends.fixed_buffer import PackedLayer
from harness.core.backends.packed_bf16 import PackedBF16Stack, PackedLinear
from harness.core.kv_cache import LayeredKVCache
from harness.core.backends.static_stack import SCRATCH_SLOTS, StaticStack, packed_weights
from harness.core.backends.static_step import PACKED_OPS, fill_chunk_inputs, new_chunk_inputs, visibility_mask
from test_bf16_exactness import _decoders
from spec_planting import real_prompts, stop_after, vanilla_tokens

CONTEXT = list(range(300, 340))


def test_the_mask_shows_each_real_row_its_past_and_chunk_and_padded_rows_only_the_scratch_slot():
    inputs = new_chunk_inputs(4, torch.device("cpu"))
    fill_chunk_inputs(inputs, 2, None, None)
    visible = visibility_mask(torch.tensor(3), inputs, 8) == 0
    expected = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0],   # slots 0-2 are the past, slot 3 the row itself
                             [1, 1, 1, 1, 1, 0, 0, 0],
                             [0, 0, 0, 0, 0, 0, 0, 1],   # padded rows: the scratch slot (the last) only
                             [0, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(visible, expected)


def test_explicit_positions_and_a_tree_mask_are_filled_in_place():
    inputs = new_chunk_inputs(4, torch.device("cpu"))
    before = [t.data_ptr() for t in inputs]
    tree = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    fill_chunk_inputs(inputs, 3, torch.tensor([7, 8, 8]), tree)
    assert [t.data_ptr() for t in inputs] == before
    assert inputs.rel_pos.tolist() == [7, 8, 8, 0] and inputs.use_rel.item() == 0 and inputs.n_real.item() == 3
    assert torch.equal(inputs.inner[:3, :3], tree) and not inputs.inner[3].any() and not inputs.inner[:, 3].any()


def _uncompiled_stack(runner) -> StaticStack:
    return StaticStack(runner, [packed_weights(PackedLayer(layer, PackedLinear)) for layer in runner.layers], PACKED_OPS,
                       lambda kind, bucket: kind, runner.eager_layers, "test")


@torch.inference_mode()
def test_a_padded_static_chunk_gives_the_packed_paths_bits_and_writes_no_real_slot_beyond_it(runner_bf16):
    runner = runner_bf16
    stack = _uncompiled_stack(runner)
    runner.new_cache(80 + SCRATCH_SLOTS)  # tabulates the rotary positions the scratch slot needs
    reference, static = (LayeredKVCache(runner.n_layers, runner.n_kv_heads, runner.head_dim, 80, runner.dtype,
                                        runner.device, SCRATCH_SLOTS) for _ in range(2))
    runner.forward(CONTEXT, reference)
    runner.forward(CONTEXT, static)
    static.k[:, :, :, len(CONTEXT):].fill_(7)  # marks the slots a padded row must not touch
    hidden = runner.embed([11, 12, 13])
    expected = PackedBF16Stack(runner, PackedLinear).run_layers(hidden, reference, 0, runner.n_layers, None, None,
                                                                frozenset(), frozenset())  # the same oneDNN linears
    got = stack.run_layers(hidden, static, 0, runner.n_layers, None, None, frozenset(), frozenset())
    assert static.lengths == reference.lengths == [len(CONTEXT) + 3] * runner.n_layers
    assert torch.equal(got, expected)  # 3 rows padded to a bucket of 4
    end = len(CONTEXT) + 3
    assert torch.equal(static.k[:, :, :, :end], reference.k[:, :, :, :end])
    assert (static.k[:, :, :, end:static.max_len] == 7).all()


def _chunk_and_singles(runner, prompt, tokens, cache_len):
    singles, chunk = runner.new_cache(cache_len), runner.new_cache(cache_len)
    runner.forward(prompt, singles)
    runner.forward(prompt, chunk)
    one_by_one = torch.cat([runner.forward([t], singles) for t in tokens])
    end = len(prompt) + len(tokens)
    return (runner.forward(tokens, chunk), one_by_one), (chunk.k[:, :, :, :end], singles.k[:, :, :, :end])


@torch.inference_mode()
def test_the_compiled_step_compiles_fullgraph_and_gives_exact_chunks_without_recompiling(runner_bf16_compiled):
    """A prompt of 20 runs as blocks of 16 and 4; 3 tokens as a bucket of 4 and as 3 buckets of 2 (one row and a
    padded one). Then another prompt and buffer length must reuse the same graphs."""
    runner, tokens = runner_bf16_compiled, [21, 22, 23]
    logits, keys = _chunk_and_singles(runner, CONTEXT[:20], tokens, 80)
    assert torch.equal(*logits) and torch.equal(*keys)
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.config.error_on_recompile = True  # a shape tied to a Python int would recompile, and fail here
    try:
        logits, keys = _chunk_and_singles(runner, CONTEXT[:36], tokens, 120)
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert torch.equal(*logits) and torch.equal(*keys)
    assert counters["stats"]["unique_graphs"] == graphs == 3


@pytest.mark.slow
@torch.inference_mode()
def test_every_decoder_runs_on_the_compiled_step_and_a_second_pass_compiles_nothing(runner_bf16_compiled, shared_data):
    runner = runner_bf16_compiled
    prompts = real_prompts(runner, shared_data, 2)
    builders = _decoders(runner)
    for _ in range(2):
        graphs = counters["stats"]["unique_graphs"]
        for name, build in builders.items():
            for prompt in prompts:
                tokens = build().generate(prompt, stop_after(runner, 24)).tokens
                if name not in ("medusa", "eagle"):  # tree verifiers are not exact (packed_bf16.py)
                    assert tokens == vanilla_tokens(runner, prompt, 24), name
    assert counters["stats"]["unique_graphs"] == graphs


@torch.inference_mode()
def test_captured_ranges_replay_the_static_steps_bits_copy_out_and_stay_bounded(runner_bf16):
    """The CUDA-graph bookkeeping with an eager stand-in for capture: which key is captured when, static inputs
    refilled before each replay, outputs copied out, at most `limit` graphs."""
    runner = runner_bf16
    plain = _uncompiled_stack(runner)
    captured = CapturedStack(runner, plain.weights, PACKED_OPS, lambda kind, bucket: kind, runner.eager_layers,
                             "test", capture=eager_capture, limit=2)
    runner.new_cache(80 + SCRATCH_SLOTS)
    caches = [LayeredKVCache(runner.n_layers, runner.n_kv_heads, runner.head_dim, 80, runner.dtype, runner.device,
                             SCRATCH_SLOTS) for _ in range(2)]
    for cache in caches:
        runner.forward(CONTEXT, cache)
    run = {"plain": plain, "captured": captured}
    outputs = {name: [] for name in run}
    for step, token in enumerate([3, 4, 5, 6]):
        for (name, stack), cache in zip(run.items(), caches):
            outputs[name].append(stack.run_layers(runner.embed([token]), cache, 0, 20, None, None, frozenset(),
                                                  frozenset()))
        assert len(captured.graphs) == (0 if step == 0 else 1)  # the second call captures, later ones replay
    assert all(torch.equal(a, b) for a, b in zip(outputs["plain"], outputs["captured"]))
    assert caches[0].lengths == caches[1].lengths
    for start in (20, 25, 28):  # three more ranges, each run twice: the oldest graphs are dropped
        for _ in range(2):
            captured.run_layers(runner.embed([7]), caches[1], start, 30, None, None, frozenset(), frozenset())
    assert len(captured.graphs) == 2 and [key[2] for key in captured.graphs] == [25, 28]


def test_each_runner_kind_names_its_arithmetic_and_a_draft_keeps_eager_or_runs_the_fast_one():
    from harness.core.random_models import TINY_QWEN2, random_runner

    kinds = {kind: random_runner(TINY_QWEN2, name="tiny-qwen2", runner=kind) for kind in ("eager", "fast", "compiled")}
    assert kinds["eager"].kernel_path.startswith("cpu-eager") and not kinds["eager"].exact_chunks
    assert "compiled" in kinds["compiled"].kernel_path and "compiled" not in kinds["fast"].kernel_path
    assert kinds["fast"].exact_chunks == (kinds["fast"]._packed is not None)  # native kernels where they apply
    drafts = {kind: runner.companion(runner.model, "draft") for kind, runner in kinds.items()}
    assert {kind: d.runner_kind for kind, d in drafts.items()} == {"eager": "eager", "fast": "fast", "compiled": "fast"}
    with pytest.raises(ValueError, match="unknown runner 'turbo'; use one of eager, fast, compiled, captured"):
        random_runner(TINY_QWEN2, runner="turbo")
