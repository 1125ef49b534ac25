"""The fast, batch-invariant float32 path for CPUs with AVX2 and FMA (every x86 CPU the project has met; the only
fast path on those without bf16 hardware, such as AMD Zen 3).

Why: at one to a few rows a decoding step streams every weight once, and the time to do so is its whole cost; the
eager runner adds a Python step and a kernel launch per op around kernels built for larger products. Here each
decoder layer is one C call (`native_f32.c`, compiled into the cache like `native_linear.c`): RMSNorm, q/k/v as one
weight, rotary, the cache write, attention over the cache's whole buffer with masked slots skipped, the output
projection, and the MLP with SiLU and the product fused into its linears. Every output accumulates in its own fp32
lane over k in order, so a row's bits never depend on the other rows: chunks are exact, as on the packed bf16 path.
Several sequences' chunks share each layer's linears (`FixedBufferStack`), with the bits each gets alone. Linears
over more than `NATIVE_ROWS` rows (prefills: compute-bound, where torch's GEMMs win) run on the model's own weights.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

import torch.nn.functional as F

from harness.core.backends.cpu_kernels import NATIVE_ROWS, compile_library, cpu_flags, kernels_disabled
from harness.core.backends.fixed_buffer import (FixedBufferStack, declare_kernels, layer_struct, native_attend,
                                                 native_rms_norm)

SOURCE = Path(__file__).with_name("native_f32.c")
FLAGS = ("-O3", "-fopenmp", "-mavx2", "-mfma", "-ffp-contract=off", "-shared", "-fPIC")
BLOCK = 16  # outputs per weight block (BLOCK in the C source)
EPILOGUES = {"none": 0, "swish": 1, "mul": 2}


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    if kernels_disabled():
        return None, "FASTDECODE_NATIVE=0"
    if not {"avx2", "fma"} <= cpu_flags():
        return None, "the CPU has no AVX2 and FMA"
    built = compile_library(SOURCE, FLAGS)
    if not isinstance(built, Path):
        return None, built
    library = ctypes.CDLL(str(built))
    declare_kernels(library, "f32")
    return library, ""


def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot run here (`unavailable_reason`)."""
    return _load()[0]


def unavailable_reason() -> str:
    return _load()[1]


def native_f32_applies(runner) -> bool:
    """float32 on a CPU whose kernels build, Llama-style layers with head dims the kernels hold."""
    return (runner.device.type == "cpu" and runner.dtype == torch.float32 and library() is not None
            and runner.head_dim % 8 == 0 and runner.head_dim <= 256)


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """[N, K] → blocks of `BLOCK` outputs, then k, then the block's outputs (zero-padded to whole blocks): the order
    in which the kernel reads them."""
    n, k = weight.shape
    rows = -(-n // BLOCK) * BLOCK
    padded = weight.new_zeros(rows, k)
    padded[:n] = weight
    return padded.view(rows // BLOCK, BLOCK, k).transpose(1, 2).contiguous()


class _Linear(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("in_features", ctypes.c_int64),
                ("out_features", ctypes.c_int64)]


class F32Linear:
    """One fp32 weight (several linears side by side along the output) packed for `linear_f32`, with the fused
    epilogues of the bf16 kernels: `__call__` (x Wᵀ + b), `silu`, `times` (· other). More than `NATIVE_ROWS` rows
    run on the linears' own weights with torch's GEMM."""

    def __init__(self, *linears: torch.nn.Linear) -> None:
        self.linears = linears
        weight = torch.cat([lin.weight.detach() for lin in linears]).float()
        self.out_features, self.in_features = weight.shape
        self.weight = pack_weight(weight)
        biases = [lin.bias for lin in linears]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b.detach().float() if b is not None else weight.new_zeros(lin.out_features)
             for b, lin in zip(biases, linears)])

    def as_struct(self) -> _Linear:
        """The weight as `layer_f32` reads it (pointers into this object's tensors, which must outlive it)."""
        bias = None if self.bias is None else self.bias.data_ptr()
        return _Linear(self.weight.data_ptr(), bias, self.in_features, self.out_features)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None, "none") if x.shape[0] <= NATIVE_ROWS else self._long(x)

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None, "swish") if x.shape[0] <= NATIVE_ROWS else F.silu(self._long(x))

    def times(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self._run(x, other.contiguous(), "mul") if x.shape[0] <= NATIVE_ROWS else self._long(x) * other

    def _long(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.linear(x, lin.weight, lin.bias) for lin in self.linears], dim=-1)

    def _run(self, x: torch.Tensor, other: torch.Tensor | None, epilogue: str) -> torch.Tensor:
        x = x.contiguous()
        y = x.new_empty(x.shape[0], self.out_features)
        library().linear_f32(x.data_ptr(), self.weight.data_ptr(), None if self.bias is None else self.bias.data_ptr(),
                             None if other is None else other.data_ptr(), y.data_ptr(), x.shape[0], self.in_features,
                             self.out_features, EPILOGUES[epilogue])
        return y


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
           scaling: float) -> torch.Tensor:
    """`native_linear.attend` in fp32."""
    return native_attend(library().attend_f32, q, keys, values, mask, scaling)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of fp32 rows with its weight."""
    return native_rms_norm(library().rms_norm_f32, x, weight, eps)


class NativeF32Stack(FixedBufferStack):
    """The fixed-buffer stack on the fp32 kernels (see the module doc)."""

    kernel_path = "cpu-f32-native (AVX2-FMA C kernels, a call per layer, fixed-buffer attention; batch-invariant)"

    def __init__(self, runner) -> None:
        super().__init__(runner, F32Linear, native=True, shadow=False,
                         fused=(layer_struct(_Linear), library().layers_f32))

    def _norm(self, x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        return rms_norm(x, *norm)

    def _attend_native(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        return attend(q, keys, values, mask, self.scaling)
