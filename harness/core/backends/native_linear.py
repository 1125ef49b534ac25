"""Few-row bf16 linears in C (`native_linear.c`), for the packed bf16 path on CPUs with AVX512-BF16.

Why: a decoding step's linears see 1–16 rows, and the time to stream their weights from memory is the whole cost;
oneDNN's bf16 kernels are built for larger products (and its one-row kernel is not batch-invariant). This kernel
streams each weight once, in blocks laid out in the order it reads them (each output in its own vector lane, so
no horizontal sums), and gives every row the same bits
whatever the number of rows (so chunks stay exact without oneDNN's two-row shadow and at any row count).

The source is compiled once with the system's C compiler (`cc`, or `$CC`) into the cache folder, keyed by the
source and flags, and loaded with ctypes; the shared library uses the OpenMP runtime torch already loaded, so it
runs on torch's threads. Where there is no compiler, the CPU lacks AVX512-BF16 or `FASTDECODE_NATIVE=0` is set,
`library()` is None and the packed path keeps oneDNN (`unavailable_reason` says why).
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from harness.core.backends.cpu_kernels import NATIVE_ROWS, compile_library, cpu_flags, kernels_disabled
from harness.core.backends.fixed_buffer import declare_kernels, layer_struct, native_attend, native_rms_norm

SOURCE = Path(__file__).with_name("native_linear.c")
FLAGS = ("-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mfma", "-shared", "-fPIC")
AMX_FLAGS = ("-mamx-tile", "-mamx-bf16")  # where the CPU has AMX-BF16 (and the compiler knows it)
AMX_ROWS = 16  # rows of one AMX tile: more rows run as several calls
BLOCK = 64  # outputs per weight block (BLOCK in the C source: 4 vectors of 16 fp32 lanes)
EPILOGUES = {"none": 0, "swish": 1, "mul": 2}


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str, bool]:
    if kernels_disabled():
        return None, "FASTDECODE_NATIVE=0", False
    if "avx512_bf16" not in cpu_flags():
        return None, "the CPU has no AVX512-BF16", False
    built = compile_library(SOURCE, FLAGS + AMX_FLAGS) if "amx_bf16" in cpu_flags() else None
    built = built if isinstance(built, Path) else compile_library(SOURCE, FLAGS)
    if not isinstance(built, Path):
        return None, built, False
    library = ctypes.CDLL(str(built))
    declare_kernels(library, "bf16")
    amx = hasattr(library, "linear_bf16_amx") and library.amx_init() == 1
    if amx:
        library.linear_bf16_amx.argtypes = library.linear_bf16.argtypes
        library.linear_bf16_amx.restype = None
    return library, "", amx


def layer_function() -> tuple[type[ctypes.Structure], object]:
    """The C layers (`decoder_layer.h`) for `FusedLayers`: the layer struct and the function."""
    return layer_struct(_Linear), library().layers_bf16


def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None where it cannot run here (`unavailable_reason`)."""
    return _load()[0]


def unavailable_reason() -> str:
    return _load()[1]


def uses_amx() -> bool:
    """Whether the linears run on AMX tiles (CPUs with AMX-BF16) rather than AVX512-BF16 vectors."""
    return _load()[2]


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """[N, K] bf16 → blocks of `BLOCK` outputs, each k-pair of a block's outputs together ((w[n, 2p], w[n, 2p+1])
    for its 64 outputs: one lane each), zero-padded to whole blocks and pairs: the order in which the kernel reads
    them."""
    n, k = weight.shape
    rows, cols = -(-n // BLOCK) * BLOCK, k + k % 2
    padded = weight.new_zeros(rows, cols)
    padded[:n, :k] = weight
    return padded.view(rows // BLOCK, BLOCK, cols // 2, 2).permute(0, 2, 1, 3).contiguous()


class NativeLinear:
    """One bf16 weight (several linears side by side along the output) for the C kernel, with the fused epilogues
    `PackedLinear` has: `__call__` (x Wᵀ + b), `silu`, `times` (· other). Up to `NATIVE_ROWS` rows run in C, more
    (a prefill: compute-bound, where oneDNN's large-product kernels win) on a oneDNN copy of the weight, so a
    chunk's rows are those of one-row calls up to `NATIVE_ROWS` rows."""

    def __init__(self, *linears: torch.nn.Linear) -> None:
        from harness.core.backends.packed_bf16 import PackedLinear

        self.long = PackedLinear(*linears)
        weight = torch.cat([lin.weight.detach() for lin in linears]).to(torch.bfloat16)
        self.out_features, self.in_features = weight.shape
        self.weight = pack_weight(weight)
        self.bias = None if self.long.bias is None else self.long.bias.float().contiguous()  # oneDNN's, joined
        self.amx = uses_amx() and self.in_features % 32 == 0  # whole A tiles of 32 columns
        self._kernel = library().linear_bf16_amx if self.amx else library().linear_bf16

    def as_struct(self) -> "_Linear":
        """The weight as `layers_bf16` reads it (pointers into this object's tensors, which must outlive it)."""
        bias = None if self.bias is None else self.bias.data_ptr()
        return _Linear(self.weight.data_ptr(), bias, self.in_features, self.out_features, int(self.amx))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None, "none") if x.shape[0] <= NATIVE_ROWS else self.long(x)

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None, "swish") if x.shape[0] <= NATIVE_ROWS else self.long.silu(x)

    def times(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self._run(x, other.contiguous(), "mul") if x.shape[0] <= NATIVE_ROWS else self.long.times(x, other)

    def _run(self, x: torch.Tensor, other: torch.Tensor | None, epilogue: str) -> torch.Tensor:
        x = x.contiguous()
        y = x.new_empty(x.shape[0], self.out_features)
        step = AMX_ROWS if self.amx else x.shape[0]
        for m in range(0, x.shape[0], step):  # rows never mix, so splitting them changes no bits
            rows = min(step, x.shape[0] - m)
            self._kernel(x[m].data_ptr(), self.weight.data_ptr(), None if self.bias is None else self.bias.data_ptr(),
                         None if other is None else other[m].data_ptr(), y[m].data_ptr(), rows, self.in_features,
                         self.out_features, EPILOGUES[epilogue])
        return y


MAX_HEAD_DIM = 256  # what `attend` holds per head (the C source's output vectors)


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
           scaling: float) -> torch.Tensor:
    """Softmax attention of q [rows, heads, dim] (rows contiguous inside) over a cache layer's whole buffer
    (keys, values [kv_heads, slots, dim]), slots masked -inf in `mask` [rows, slots] skipped: [rows, heads · dim]."""
    return native_attend(library().attend_bf16, q, keys, values, mask, scaling)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of bf16 rows in fp32 with its fp32 weight, rounded once to bf16."""
    return native_rms_norm(library().rms_norm_bf16, x, weight, eps)


class _Linear(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("in_features", ctypes.c_int64),
                ("out_features", ctypes.c_int64), ("amx", ctypes.c_int)]
