"""`run_layers` on the static step (`static_step.py`): a chunk padded to its bucket, one step function per layer.

The steps come from a `make_step(kind, bucket)` given by the backend (`compiled_cpu.py` compiles them); every layer
of every range reuses them, since a layer's weights and cache buffers are arguments, not constants. Causal chunks
longer than the largest bucket (prefills, long catch-ups) run, on a CPU, as consecutive blocks of that bucket through the
whole range: each block's rows then see the earlier blocks' keys in the cache, exactly what the chunk would have
given them, and every row comes out as it would in a one-position step (the arithmetic is batch-invariant where
the linears are, see `packed_bf16.py`). Longer chunks with their own mask or positions (trees) run on `fallback`.

The cache keeps one scratch slot after `max_len` (`SCRATCH_SLOTS`), where padded rows write.
"""
from __future__ import annotations

from typing import Callable

import torch

from harness.core.kv_cache import LayeredKVCache
from harness.core.backends.static_step import (BUCKETS, ChunkInputs, LayerSpec, LayerWeights, LinearOps, attention_step, bucket_for,
                                      fill_chunk_inputs, full_layer, mlp_step, new_chunk_inputs)

SCRATCH_SLOTS = 1
KINDS = {(True, True): full_layer, (True, False): attention_step, (False, True): mlp_step}


def static_step_applies(runner) -> bool:
    """Llama-style layers with one norm epsilon (the static step has no q/k norms)."""
    norms = [m for layer in runner.layers for m in (layer.input_layernorm, layer.post_attention_layernorm)]
    eps = {float(getattr(n, "variance_epsilon", getattr(n, "eps", 1e-6))) for n in norms}
    return not hasattr(runner.layers[0].self_attn, "q_norm") and len(eps) == 1


def layer_spec(runner) -> LayerSpec:
    norm = runner.layers[0].input_layernorm
    return LayerSpec(runner.n_heads, runner.n_kv_heads, runner.head_dim, runner.scaling,
                     float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))))


def _plain(*linears: torch.nn.Linear) -> tuple:
    if len(linears) == 1:
        return linears[0].weight, linears[0].bias
    biases = [lin.bias for lin in linears]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b if b is not None else lin.weight.new_zeros(lin.out_features) for b, lin in zip(biases, linears)])
    return torch.cat([lin.weight.detach() for lin in linears]), bias


def plain_weights(layer: torch.nn.Module) -> LayerWeights:
    """A model layer's weights for `PLAIN_OPS` (q/k/v concatenated once)."""
    attn, mlp = layer.self_attn, layer.mlp
    return LayerWeights(_plain(attn.q_proj, attn.k_proj, attn.v_proj), _plain(attn.o_proj), _plain(mlp.gate_proj),
                        _plain(mlp.up_proj), _plain(mlp.down_proj), layer.input_layernorm.weight.detach().float(),
                        layer.post_attention_layernorm.weight.detach().float())


def packed_weights(layer) -> LayerWeights:
    """A `fixed_buffer.PackedLayer`'s prepacked weights for `PACKED_OPS`."""
    return LayerWeights(*((lin.weight, lin.bias) for lin in (layer.qkv, layer.o, layer.gate, layer.up, layer.down)),
                        layer.input_norm[0], layer.post_norm[0])


class StaticStack:
    spare_slots = SCRATCH_SLOTS

    def __init__(self, runner, weights: list[LayerWeights], ops: LinearOps, make_step: Callable[[Callable, int], Callable],
                 fallback: Callable, kernel_path: str, buckets: tuple[int, ...] = BUCKETS,
                 split_long_chunks: bool = True) -> None:
        """`split_long_chunks`: run causal chunks longer than the largest bucket as blocks of it (exact where the
        arithmetic is batch-invariant) rather than on `fallback` (faster for a prefill where it is not)."""
        self.runner, self.weights, self.ops, self.fallback, self.buckets = runner, weights, ops, fallback, buckets
        self.kernel_path, self.split_long_chunks = kernel_path, split_long_chunks
        self.spec = layer_spec(runner)
        self._make_step = make_step
        self._steps: dict[tuple[Callable, int], Callable] = {}
        self._inputs = {b: new_chunk_inputs(b, runner.device) for b in buckets}

    def step(self, kind: Callable, bucket: int) -> Callable:
        if (kind, bucket) not in self._steps:
            self._steps[kind, bucket] = self._make_step(kind, bucket)
        return self._steps[kind, bucket]

    def run_layers(self, hidden: torch.Tensor, cache: LayeredKVCache, start: int, end: int,
                   positions: torch.Tensor | None, chunk_mask: torch.Tensor | None, skip_attention: frozenset[int],
                   skip_mlp: frozenset[int]) -> torch.Tensor:
        q, largest = hidden.shape[1], self.buckets[-1]
        if q <= largest:
            return self._run_bucket(hidden, cache, start, end, positions, chunk_mask, skip_attention, skip_mlp)
        if positions is not None or chunk_mask is not None or not self.split_long_chunks:
            return self.fallback(hidden, cache, start, end, positions, chunk_mask, skip_attention, skip_mlp)
        return torch.cat([self._run_bucket(hidden[:, lo:lo + largest], cache, start, end, None, None, skip_attention,
                                           skip_mlp) for lo in range(0, q, largest)], dim=1)

    def _run_bucket(self, hidden, cache, start, end, positions, chunk_mask, skip_attention, skip_mlp) -> torch.Tensor:
        q = hidden.shape[1]
        bucket = bucket_for(q, self.buckets)
        inputs = self._inputs[bucket]
        fill_chunk_inputs(inputs, q, positions, chunk_mask)
        x = hidden.new_zeros(bucket, hidden.shape[2])
        x[:q] = hidden[0]
        pasts = torch.tensor(cache.lengths, device=hidden.device)
        for i in range(start, end):
            if i not in skip_attention:
                cache.reserve(i, q)
        return self.layers(x, pasts, inputs, cache, start, end, skip_attention, skip_mlp)[None, :q]

    def layers(self, x: torch.Tensor, pasts: torch.Tensor, inputs: ChunkInputs, cache: LayeredKVCache, start: int,
               end: int, skip_attention: frozenset[int], skip_mlp: frozenset[int]) -> torch.Tensor:
        """Padded rows x [B, d] through layers [start, end), each layer's keys/values written after pasts[i]."""
        bucket, per_layer = x.shape[0], pasts.unbind()
        cos, sin = self.runner.rotary_tables()
        for i in range(start, end):
            kind = KINDS.get((i not in skip_attention, i not in skip_mlp))
            if kind is mlp_step:
                x = self.step(kind, bucket)(x, self.weights[i], self.spec, self.ops)
            elif kind is not None:
                x = self.step(kind, bucket)(x, self.weights[i], cache.k[i, 0], cache.v[i, 0], per_layer[i], inputs,
                                            cos, sin, self.spec, self.ops)
        return x
