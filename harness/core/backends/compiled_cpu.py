"""The compiled CPU backend: each static layer step (`static_step.py`) compiled by inductor, fullgraph, static shapes.

One compiled graph per (step kind, bucket): a whole layer, attention only or MLP only (self-speculative drafts skip
sub-layers), for chunks of 2, 4, 8 or 16 rows (one row runs as two on the packed path: oneDNN's one-row bf16 kernel
is slow and not batch-invariant, see `packed_bf16.PackedLinear`). A layer's weights and cache buffers are the
graph's inputs, so the 30 layers share it; the cache buffer's length is its only dynamic dimension, so a new prompt
length compiles nothing. Inductor fuses each layer's norms, rotary embeddings, masks, softmax and residual adds
into a few C++ loops around oneDNN's prepacked linears (left as calls: inductor's own lowering of them insists on
frozen constant weights). Compiled code is cached on disk (`<cache>/inductor`); each graph's first compilation is
timed and printed once, and at most `len(buckets) × 3` graphs are ever built.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from typing import Callable

import torch

from harness.core.backends.static_step import mlp_step

CPU_BUCKETS = (2, 4, 8, 16)


@functools.cache
def _allow_packed_weight_inputs() -> None:
    """Lets inductor call oneDNN's prepacked linears on weights that are graph inputs (its lowering wants frozen
    constants; others fall back to a plain call of the op, which is what the eager packed path runs)."""
    from torch._inductor import lowering
    from torch._inductor.virtualized import V

    for op, weight_at in ((torch.ops.mkldnn._linear_pointwise.default, 1),
                          (torch.ops.mkldnn._linear_pointwise.binary, 2)):
        native = lowering.lowerings.get(op)
        fallback = lowering.fallback_handler(op, add_to_fallback_set=False)

        def lower(*args, native=native, fallback=fallback, weight_at=weight_at, **kwargs):
            frozen = native is not None and args[weight_at].get_name() in V.graph.constants
            return (native if frozen else fallback)(*args, **kwargs)

        lowering.lowerings[op] = lower


def _inductor_cache() -> None:
    from harness.core.loading import cache_dir

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))


def compile_step(kind: Callable, bucket: int) -> Callable:
    """`kind` compiled for `bucket` rows; its first call (the compilation) is timed and printed."""
    _allow_packed_weight_inputs()
    _inductor_cache()
    compiled = torch.compile(kind, fullgraph=True, dynamic=False, options={"size_asserts": False})
    first = True

    def step(*args):
        nonlocal first
        if kind is not mlp_step:  # the cache buffers' and rotary tables' lengths vary with the prompt
            for tensor, dim in ((args[2], 1), (args[3], 1), (args[6], 0), (args[7], 0)):
                torch._dynamo.mark_dynamic(tensor, dim)
        if not first:
            return compiled(*args)
        began = time.perf_counter()
        out = compiled(*args)
        first = False
        print(f"compiled CPU step: {kind.__name__} for {bucket} rows in {time.perf_counter() - began:.1f} s "
              f"(cached on disk for later runs)", file=sys.stderr)
        return out

    return step
