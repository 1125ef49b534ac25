"""The fast, batch-invariant float32 path for CPUs with AVX2 and FMA (every x86 CPU the project has met; the only
fast path on those without bf16 hardware, such as AMD Zen 3).

Why: at one to a few rows a decoding step streams every weight once, and the time to do so is its whole cost; the
eager runner adds a Python step and a kernel launch per op around kernels built for larger products. Here each
decoder layer is one C call (`native_f32.c`, compiled into the cache like `native_linear.c`): RMSNorm, q/k/v as one
weight, rotary, the cache write, attention over the cache's whole buffer with masked slots skipped, the output
projection, and the MLP with SiLU and the product fused into its linears. Every output accumulates in its own fp32
lane over k in order, so a row's bits never depend on the other rows: chunks are exact, as on the packed bf16 path.
Chunks of more than `NATIVE_ROWS` rows (prefills: compute-bound, where the eager runner's GEMMs win) and layers
with q/k norms run on the eager runner.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from harness.core.backends.cpu_kernels import compile_library, cpu_flags, kernels_disabled, NATIVE_ROWS
from harness.core.backends.fixed_buffer import run_fused_layers
from harness.core.layer_calls import LayerCall

SOURCE = Path(__file__).with_name("native_f32.c")
FLAGS = ("-O3", "-fopenmp", "-mavx2", "-mfma", "-ffp-contract=off", "-shared", "-fPIC")
BLOCK = 16  # outputs per weight block (BLOCK in the C source)


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
    library.linear_f32.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    library.rms_norm_f32.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_float]
    library.layer_f32.argtypes = ([ctypes.c_void_p] * 2 + [ctypes.c_int64] + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 4
                                  + [ctypes.c_int64] * 2 + [ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p])
    for function in (library.linear_f32, library.rms_norm_f32, library.layer_f32):
        function.restype = None
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


class _Layer(ctypes.Structure):
    _fields_ = ([(name, _Linear) for name in ("qkv", "o", "gate", "up", "down")]
                + [("input_norm", ctypes.c_void_p), ("post_norm", ctypes.c_void_p), ("input_eps", ctypes.c_float),
                   ("post_eps", ctypes.c_float), ("heads", ctypes.c_int64), ("kv_heads", ctypes.c_int64),
                   ("head_dim", ctypes.c_int64)])


class F32Linear:
    """One fp32 weight (several linears side by side along the output) packed for `linear_f32`."""

    def __init__(self, *linears: torch.nn.Linear) -> None:
        weight = torch.cat([lin.weight.detach() for lin in linears]).float()
        self.out_features, self.in_features = weight.shape
        self.weight = pack_weight(weight)
        biases = [lin.bias for lin in linears]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b.detach().float() if b is not None else weight.new_zeros(lin.out_features)
             for b, lin in zip(biases, linears)])
        self.struct = _Linear(self.weight.data_ptr(), None if self.bias is None else self.bias.data_ptr(),
                              self.in_features, self.out_features)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        y = x.new_empty(x.shape[0], self.out_features)
        library().linear_f32(x.data_ptr(), self.weight.data_ptr(), self.struct.bias, None, y.data_ptr(), x.shape[0],
                             self.in_features, self.out_features, 0)
        return y


def _norm(norm: torch.nn.Module) -> tuple[torch.Tensor, float]:
    return norm.weight.detach().float().contiguous(), float(getattr(norm, "variance_epsilon",
                                                                    getattr(norm, "eps", 1e-6)))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    library().rms_norm_f32(x.data_ptr(), weight.data_ptr(), y.data_ptr(), x.shape[0], x.shape[1], eps)
    return y


class F32Layer:
    """A decoder layer as one `layer_f32` call."""

    def __init__(self, layer: torch.nn.Module, heads: int, kv_heads: int, head_dim: int) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.linears = [F32Linear(attn.q_proj, attn.k_proj, attn.v_proj), F32Linear(attn.o_proj),
                        F32Linear(mlp.gate_proj), F32Linear(mlp.up_proj), F32Linear(mlp.down_proj)]
        (self.input_norm, input_eps), (self.post_norm, post_eps) = (_norm(layer.input_layernorm),
                                                                    _norm(layer.post_attention_layernorm))
        self.struct = _Layer(*(lin.struct for lin in self.linears), self.input_norm.data_ptr(),
                             self.post_norm.data_ptr(), input_eps, post_eps, heads, kv_heads, head_dim)
        qkv, o, gate = self.linears[:3]
        self.width = 2 * o.out_features + qkv.out_features + heads * head_dim + 2 * gate.out_features

    def __call__(self, x: torch.Tensor, attention: bool, mlp: bool, cos: torch.Tensor | None, sin: torch.Tensor | None,
                 keys: torch.Tensor, values: torch.Tensor, past: int, mask: torch.Tensor | None, scaling: float,
                 work: torch.Tensor) -> None:
        """x [rows, d] (contiguous fp32) through the layer in place (see `native_linear.NativeLayer`)."""
        pointer = (lambda t: None if t is None else t.data_ptr())
        library().layer_f32(ctypes.byref(self.struct), x.data_ptr(), x.shape[0], int(attention), int(mlp),
                            pointer(cos), pointer(sin), keys.data_ptr(), values.data_ptr(), keys.shape[1], past,
                            pointer(mask), scaling, work.data_ptr())


class NativeF32Stack:
    """`run_layers` and `logits` on the fp32 kernels (see the module doc); the same interface as `PackedBF16Stack`."""

    def __init__(self, runner) -> None:
        self.runner = runner
        fusable = not hasattr(runner.layers[0].self_attn, "q_norm")
        self.fused = [F32Layer(layer, runner.n_heads, runner.n_kv_heads, runner.head_dim)
                      for layer in runner.layers] if fusable else None
        self.final_norm = _norm(runner.norm)
        self.lm_head = F32Linear(runner.lm_head)
        self.scaling = runner.scaling

    kernel_path = "cpu-f32-native (AVX2-FMA C kernels, one call per layer, fixed-buffer attention; batch-invariant)"

    def run_batch(self, calls: list[LayerCall]) -> list[torch.Tensor]:
        """Each call in turn (its bits are those it gets alone)."""
        return [self._run(call) for call in calls]

    def _run(self, call: LayerCall) -> torch.Tensor:
        if self.fused is None or call.rows > NATIVE_ROWS:
            return self.runner._eager_batch([call])[0]
        return run_fused_layers(self.runner, self.fused, call, self.scaling)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[1] > NATIVE_ROWS:
            return self.runner.lm_head(self.runner.norm(hidden))[0].float()
        return self.lm_head(rms_norm(hidden[0], *self.final_norm))

    def logits_batch(self, hiddens: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.logits(h) for h in hiddens]
