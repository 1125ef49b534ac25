"""Which arithmetic runs beneath `ModelRunner.run_layers`, chosen once when the runner is built.

`eager`: the packed bf16 path on CPUs with bf16 hardware (`packed_bf16.py`), the model's own modules elsewhere.
`fast`: the static step (`static_step.py`, `static_stack.py`) beneath it, compiled on a CPU (`compiled_cpu.py`,
on the packed weights where they apply, else on the model's), captured in CUDA graphs on a GPU (`cuda_graphs.py`);
for layers the static step does not cover (q/k norms), `fast` is the eager runner. Decoders never learn which
one runs.
"""
from __future__ import annotations

from harness.core.backends.compiled_cpu import CPU_BUCKETS, compile_step
from harness.core.backends.cuda_graphs import CapturedStack, cuda_capture, eager_capture
from harness.core.backends.fixed_buffer import PackedLayer
from harness.core.backends.packed_bf16 import PackedBF16Stack, PackedLinear
from harness.core.backends.static_stack import StaticStack, packed_weights, plain_weights, static_step_applies
from harness.core.backends.static_step import PACKED_OPS, PLAIN_OPS

RUNNERS = ("eager", "fast", "captured")  # captured: the CUDA-graph backend on any device (off a GPU, a stand-in)


def captured_backend(runner) -> CapturedStack:
    """Layer ranges in CUDA graphs; off a GPU replays run eagerly (`eager_capture`: the bookkeeping only)."""
    capture = cuda_capture if runner.device.type == "cuda" else eager_capture
    return CapturedStack(runner, [plain_weights(layer) for layer in runner.layers], PLAIN_OPS, lambda kind, b: kind,
                         runner.eager_layers, f"{runner.device.type}-captured (CUDA graphs of the static step per "
                         f"layer range and bucket{'' if capture is cuda_capture else ', replayed eagerly'}; not "
                         "batch-invariant)", split_long_chunks=False, capture=capture)


def backend(runner, kind: str) -> StaticStack | None:
    """The backend `kind` names for this runner (None: the eager runner's own arithmetic)."""
    if kind == "eager" or not static_step_applies(runner):
        return None
    if kind == "captured" or runner.device.type == "cuda":
        return captured_backend(runner)
    return fast_backend(runner)


def fast_backend(runner) -> StaticStack | None:
    """The fast backend on a CPU, or None where the eager runner is the fastest there is."""
    if runner.device.type != "cpu":
        return None
    packed = runner._packed
    if isinstance(packed, PackedBF16Stack):  # the compiled graphs call oneDNN's prepacked linears
        layers = packed.layers if packed.linear is PackedLinear else [PackedLayer(layer, PackedLinear) for layer in runner.layers]
        return StaticStack(runner, [packed_weights(layer) for layer in layers], PACKED_OPS, compile_step,
                           runner.eager_layers, "cpu-bf16-packed-compiled (inductor-fused static step around oneDNN "
                           "prepacked weights, fixed-buffer attention; batch-invariant)", CPU_BUCKETS)
    return StaticStack(runner, [plain_weights(layer) for layer in runner.layers], PLAIN_OPS, compile_step,
                       runner.eager_layers, f"cpu-{str(runner.dtype).removeprefix('torch.')}-compiled (inductor-fused "
                       "static step; not batch-invariant)", CPU_BUCKETS)
