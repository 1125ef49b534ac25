"""The fast, batch-invariant bf16 path for CPUs with bf16 hardware (AVX512-BF16 or AMX).

Why it exists: on such CPUs a bf16 chunk of 1–8 positions costs what one position costs (the weights are streamed
once either way), so drafts, catch-up chunks and candidate trees ride along almost for free, as on a GPU. For that
to be lossless, row i of a chunk must come out bit-for-bit as it would alone. Every step here is chosen for that:

- linear layers run on oneDNN weights prepacked once (`mkldnn._reorder_linear_weight`): its bf16 kernels
  accumulate in fp32 and give each row the same bits whatever the number of rows, and prepacking saves re-laying
  the weight on every call (measured 1.6–2× faster, same bits). q/k/v are packed as one matrix; SiLU(gate) and
  the product with up are fused into the gate and up linears' epilogues (a fused residual add is not
  batch-invariant, so the residual adds stay separate); one row is fed as two (see `PackedLinear`);
- attention is written out over the cache's fixed-length buffer, every slot a row may not see masked to -inf
  and the softmax in fp32, in blocks of at most `ATTENTION_BLOCK` rows: each row's reductions then run over the
  same length with the same kernels whatever the chunk (`scaled_dot_product_attention` is not row-invariant);
- norms, rotary embeddings and activations are row-wise.

The bits depend on the buffer's length (the reductions run over all of it), so two computations agree exactly when
their caches have the same length: every decoder allocates `Decoder.new_cache` (prompt + budget + headroom).

`tests/test_bf16_exactness.py` checks the claim: random causal chunks (q = 1..8, and deep layers catching up on
shallow ones) give, at every layer, the hidden states and KV entries of one-position forwards, bit for bit. A tree
mask is not covered: a node's ancestors sit at other slots of the buffer than in left-to-right decoding, and the
reductions then add the same terms in other vector lanes (measured: Medusa's trees leave vanilla's output at logit
margins of 0–0.25 on 17 of 100 samples).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from harness.core.backends import native_linear
from harness.core.backends.cpu_kernels import cpu_flags
from harness.core.backends.fixed_buffer import FixedBufferStack
from harness.core.backends.native_linear import NativeLinear


@functools.cache
def cpu_has_bf16_hardware() -> bool:
    """True where the CPU advertises AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo) and oneDNN takes bf16."""
    hardware = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return hardware and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def packed_path_applies(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.bfloat16 and cpu_has_bf16_hardware()


class PackedLinear:
    """One oneDNN-prepacked bf16 weight (several linears side by side along the output), with fused epilogues.

    A single row is fed as two identical rows: oneDNN's one-row kernel is neither batch-invariant (measured: the
    1536→576 down projection differs in the last bit from the same row in a larger batch) nor fast (4 ms against
    0.05 ms for two rows, measured on AVX512-BF16). From two rows on, every row's bits are the same at any count
    up to the row count where oneDNN changes its blocking (`PackedBF16Stack.exact_rows`, measured at start-up).
    """

    def __init__(self, *linears: torch.nn.Linear) -> None:
        weight = torch.cat([lin.weight.detach() for lin in linears]).contiguous()
        self.in_features = weight.shape[1]
        biases = [lin.bias for lin in linears]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b.detach() if b is not None else weight.new_zeros(lin.out_features) for b, lin in zip(biases, linears)])
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, "none")

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU(x Wᵀ + b), fused."""
        return self._run(x, "swish")

    def times(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """(x Wᵀ + b) · other, fused."""
        if x.shape[0] == 1:
            return torch.ops.mkldnn._linear_pointwise.binary(x.expand(2, -1), other.expand(2, -1), self.weight,
                                                             self.bias, "mul")[:1]
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.weight, self.bias, "mul")

    def _run(self, x: torch.Tensor, activation: str) -> torch.Tensor:
        if x.shape[0] == 1:
            return torch.ops.mkldnn._linear_pointwise(x.expand(2, -1), self.weight, self.bias, activation, [], "")[:1]
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, activation, [], "")


def rms_norm(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
    """RMSNorm in fp32 (weight included), rounded once to bf16."""
    weight, eps = norm
    return F.rms_norm(x.float(), weight.shape, weight, eps).to(x.dtype)


class PackedBF16Stack(FixedBufferStack):
    """The fixed-buffer stack on bf16 kernels: native (C) where they run, else oneDNN's prepacked ones."""

    def __init__(self, runner, linear: type | None = None) -> None:
        """`linear`: NativeLinear or PackedLinear (oneDNN); by default the native kernel where it runs."""
        linear = linear or (NativeLinear if native_linear.library() is not None else PackedLinear)
        native = linear is NativeLinear and runner.head_dim <= native_linear.MAX_HEAD_DIM
        super().__init__(runner, linear, native, shadow=linear is PackedLinear,
                         fused=native_linear.layer_function() if native else None)

    @property
    def kernel_path(self) -> str:
        kind = "AMX-BF16" if native_linear.uses_amx() else "AVX512-BF16"
        linears = (f"native {kind} linears" if self.linear is NativeLinear else
                   f"oneDNN prepacked weights ({native_linear.unavailable_reason()})")
        return f"cpu-bf16-packed ({linears}, fixed-buffer attention; batch-invariant)"

    def _norm(self, x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        return native_linear.rms_norm(x, *norm) if self.native else rms_norm(x, norm)

    def _attend_native(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        return native_linear.attend(q, keys, values, mask, self.scaling)
