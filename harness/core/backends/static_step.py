"""The static step: one decoder layer whose tensor shapes depend on no Python integer.

A chunk of q positions is padded to a bucket of B rows (`BUCKETS`); where each row's keys/values go, its rotary
position and what it may see all come from small device tensors (`ChunkInputs`, filled in place before a call), so
the same compiled kernel or captured graph serves every step of a given bucket, at any cache length and any layer:

- attention runs over the cache's whole buffer (`max_len` slots plus one scratch slot), a row seeing the slots
  before its layer's length `past`, and the chunk's slots its `inner` mask allows;
- padded rows write their keys/values to the scratch slot (the buffer's last) and see only it, so they stay
  finite and change no real row, slot or length (every op is row-wise or batch-invariant);
- the layer's `past` is a device scalar; the host advances the cache's lengths after the call.

Nothing here reads a tensor's value on the host, so a step never syncs: `torch.compile(fullgraph=True)` traces
it whole and a CUDA graph can replay it. `linear_ops` says how linears run: oneDNN's prepacked bf16 kernels
(`PACKED_OPS`, the batch-invariant bf16 path of `packed_bf16.py`) or `F.linear` (`PLAIN_OPS`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from harness.core.backends.packed_bf16 import rms_norm
from harness.core.rotary import apply_rotary

BUCKETS = (1, 2, 4, 8, 16)  # chunk sizes a static step is built for


def bucket_for(q: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket that holds q rows, or None when q is larger than every bucket."""
    return next((b for b in buckets if b >= q), None)


class LinearOps(NamedTuple):
    """x Wᵀ + b, SiLU(x Wᵀ + b) and (x Wᵀ + b) · other, for one way of storing W."""
    plain: Callable
    silu: Callable
    times: Callable


def _packed(x, w, b):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def _packed_silu(x, w, b):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "swish", [], "")


def _packed_times(x, other, w, b):
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, w, b, "mul")


@torch.library.register_fake("mkldnn::_linear_pointwise.binary")
def _packed_times_shape(x, other, w, b, attr):
    """torch ships no shape function for the fused binary linear; the compiler needs one to trace it."""
    return other.new_empty(other.shape)


PACKED_OPS = LinearOps(_packed, _packed_silu, _packed_times)
PLAIN_OPS = LinearOps(F.linear, lambda x, w, b: F.silu(F.linear(x, w, b)), lambda x, o, w, b: F.linear(x, w, b) * o)


class LayerWeights(NamedTuple):
    """One layer's tensors: q/k/v as one matrix, o, gate, up, down (weight, bias or None), the norms' weights (fp32)."""
    qkv: tuple
    o: tuple
    gate: tuple
    up: tuple
    down: tuple
    input_norm: torch.Tensor
    post_norm: torch.Tensor


@dataclass(frozen=True)
class LayerSpec:
    """The numbers a layer step is specialised on (the same for every layer of a model)."""
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float
    eps: float


class ChunkInputs(NamedTuple):
    """A chunk's geometry as device tensors, shared by every layer of a call.

    rel_pos [B]: a row's position is rel_pos + use_rel · past (use_rel = 1: positions follow the layer's slots;
    0: explicit positions, e.g. tree depths); inner [B, B] bool: which chunk rows a row may see (padded rows and
    columns False); n_real [1]: how many rows are real."""
    rel_pos: torch.Tensor
    use_rel: torch.Tensor
    inner: torch.Tensor
    n_real: torch.Tensor


def fill_chunk_inputs(inputs: ChunkInputs, q: int, positions: torch.Tensor | None,
                      chunk_mask: torch.Tensor | None) -> None:
    """Writes a chunk of q real rows into a bucket's input tensors, in place (no new tensors for a graph to see)."""
    rel, inner = inputs.rel_pos, inputs.inner
    rel.zero_()
    inner.zero_()
    if positions is None:
        rel[:q] = torch.arange(q)
    else:
        rel[:q] = positions.reshape(-1)
    inputs.use_rel.fill_(int(positions is None))
    inner[:q, :q] = chunk_mask if chunk_mask is not None else torch.ones(q, q, dtype=torch.bool).tril()
    inputs.n_real.fill_(q)


def new_chunk_inputs(bucket: int, device: torch.device) -> ChunkInputs:
    long = dict(dtype=torch.long, device=device)
    return ChunkInputs(torch.zeros(bucket, **long), torch.ones(1, **long),
                       torch.zeros(bucket, bucket, dtype=torch.bool, device=device), torch.zeros(1, **long))


def visibility_mask(past: torch.Tensor, inputs: ChunkInputs, slots: int) -> torch.Tensor:
    """Additive mask [B, slots]: 0 where a row may attend, -inf elsewhere (padded rows see only the scratch slot)."""
    rows = inputs.inner.shape[0]
    slot = torch.arange(slots, device=past.device)[None]
    rel = slot - past
    in_chunk = (rel >= 0) & (rel < rows)
    seen_in_chunk = inputs.inner.gather(1, rel.clamp(0, rows - 1).expand(rows, -1))
    real = (torch.arange(rows, device=past.device) < inputs.n_real)[:, None]
    visible = torch.where(real, (slot < past) | (in_chunk & seen_in_chunk), slot == slots - 1)
    return torch.zeros(visible.shape, device=past.device).masked_fill(~visible, float("-inf"))


def attention_step(x: torch.Tensor, w: LayerWeights, k_buf: torch.Tensor, v_buf: torch.Tensor, past: torch.Tensor,
                   inputs: ChunkInputs, cos_table: torch.Tensor, sin_table: torch.Tensor, spec: LayerSpec,
                   ops: LinearOps) -> torch.Tensor:
    """x + attention(norm(x)) for rows x [B, d]; writes the real rows' keys/values at slots past, past+1, ...
    of the layer's buffers k_buf/v_buf [kv_heads, slots, dim] (padded rows: the scratch slot)."""
    rows, heads, kv_heads, dim = x.shape[0], spec.n_heads, spec.n_kv_heads, spec.head_dim
    slots = k_buf.shape[1]
    qkv = ops.plain(rms_norm(x, (w.input_norm, spec.eps)), *w.qkv)
    qk, v = qkv.split([(heads + kv_heads) * dim, kv_heads * dim], dim=-1)
    qk, v = qk.view(rows, heads + kv_heads, dim), v.view(rows, kv_heads, dim)
    pos = inputs.rel_pos + inputs.use_rel * past
    q, k = apply_rotary(qk, cos_table[pos][:, None], sin_table[pos][:, None]).split([heads, kv_heads], dim=1)
    row = torch.arange(rows, device=x.device)
    write = torch.where(row < inputs.n_real, past + row, slots - 1)
    k_buf.index_copy_(1, write, k.transpose(0, 1))
    v_buf.index_copy_(1, write, v.transpose(0, 1))
    mask = visibility_mask(past, inputs, slots)
    group = heads // kv_heads
    grouped = q.reshape(rows, kv_heads, group, dim).permute(1, 2, 0, 3).reshape(kv_heads, group * rows, dim)
    scores = torch.matmul(grouped, k_buf.transpose(1, 2)).view(kv_heads, group, rows, slots).float()
    probs = torch.softmax(torch.add(mask, scores, alpha=spec.scaling), -1)
    out = torch.matmul(probs.to(v_buf.dtype).view(kv_heads, group * rows, slots), v_buf)
    out = out.view(kv_heads, group, rows, dim).permute(2, 0, 1, 3).reshape(rows, heads * dim)
    return x + ops.plain(out, *w.o)


def mlp_step(x: torch.Tensor, w: LayerWeights, spec: LayerSpec, ops: LinearOps) -> torch.Tensor:
    """x + down(SiLU(gate(h)) · up(h)), h = norm(x)."""
    h = rms_norm(x, (w.post_norm, spec.eps))
    return x + ops.plain(ops.times(h, ops.silu(h, *w.gate), *w.up), *w.down)


def full_layer(x: torch.Tensor, w: LayerWeights, k_buf: torch.Tensor, v_buf: torch.Tensor, past: torch.Tensor,
               inputs: ChunkInputs, cos_table: torch.Tensor, sin_table: torch.Tensor, spec: LayerSpec,
               ops: LinearOps) -> torch.Tensor:
    """A whole layer: attention then MLP."""
    return mlp_step(attention_step(x, w, k_buf, v_buf, past, inputs, cos_table, sin_table, spec, ops), w, spec, ops)
