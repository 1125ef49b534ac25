"""Which arithmetic runs beneath `ModelRunner.run_layers`, chosen once when the runner is built.

- `eager`: the model's own modules and `scaled_dot_product_attention`, on every device: the regime the papers
  measured their baselines in.
- `fast` (the default): the fastest arithmetic measured correct on the device. On a CPU, the native kernels, a C
  call per decoder layer (`packed_bf16.py` in bf16 on CPUs with bf16 hardware, `native_f32.py` in float32), where
  they apply, else the model's modules; on a GPU, the model's modules until the captured step has been measured
  there (no GPU has been lent to this project yet).
- `compiled`: the static step (`static_step.py`, `static_stack.py`) compiled by inductor on a CPU
  (`compiled_cpu.py`, on the packed weights where they apply, else on the model's).
- `captured`: the static step in CUDA graphs on a GPU (`cuda_graphs.py`; off a GPU, replayed eagerly).

For layers the static step does not cover (q/k norms), `compiled` and `captured` run the `fast` arithmetic.
Decoders never learn which one runs.
"""
from __future__ import annotations

from harness.core.backends.compiled_cpu import CPU_BUCKETS, compile_step
from harness.core.backends.cuda_graphs import CapturedStack, cuda_capture, eager_capture
from harness.core.backends.fixed_buffer import PackedLayer
from harness.core.backends.packed_bf16 import PackedBF16Stack, PackedLinear
from harness.core.backends.static_stack import StaticStack, packed_weights, plain_weights, static_step_applies
from harness.core.backends.static_step import PACKED_OPS, PLAIN_OPS

RUNNERS = ("eager", "fast", "compiled", "captured")


def captured_backend(runner) -> CapturedStack:
    """Layer ranges in CUDA graphs; off a GPU replays run eagerly (`eager_capture`: the bookkeeping only)."""
    capture = cuda_capture if runner.device.type == "cuda" else eager_capture
    return CapturedStack(runner, [plain_weights(layer) for layer in runner.layers], PLAIN_OPS, lambda kind, b: kind,
                         runner.eager_layers, f"{runner.device.type}-captured (CUDA graphs of the static step per "
                         f"layer range and bucket{'' if capture is cuda_capture else ', replayed eagerly'}; not "
                         "batch-invariant)", split_long_chunks=False, capture=capture)


def backend(runner, kind: str) -> StaticStack | None:
    """The static-step backend `kind` names for this runner (None: the runner's own arithmetic, `eager` or `fast`)."""
    if kind in ("eager", "fast") or not static_step_applies(runner):
        return None
    if kind == "captured" or runner.device.type == "cuda":
        return captured_backend(runner)
    return compiled_backend(runner)


def compiled_backend(runner) -> StaticStack:
    """The static step compiled by inductor on a CPU, around oneDNN's prepacked bf16 weights where they apply."""
    packed = runner._packed
    if isinstance(packed, PackedBF16Stack):  # the compiled graphs call oneDNN's prepacked linears
        layers = packed.layers if packed.linear is PackedLinear else [PackedLayer(layer, PackedLinear) for layer in runner.layers]
        return StaticStack(runner, [packed_weights(layer) for layer in layers], PACKED_OPS, compile_step,
                           runner.eager_layers, "cpu-bf16-packed-compiled (inductor-fused static step around oneDNN "
                           "prepacked weights, fixed-buffer attention; batch-invariant)", CPU_BUCKETS)
    return StaticStack(runner, [plain_weights(layer) for layer in runner.layers], PLAIN_OPS, compile_step,
                       runner.eager_layers, f"cpu-{str(runner.dtype).removeprefix('torch.')}-compiled (inductor-fused "
                       "static step; not batch-invariant)", CPU_BUCKETS)
