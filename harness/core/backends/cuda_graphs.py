"""The captured backend: the static step's layer ranges replayed from CUDA graphs.

A graph is captured lazily, the second time a (cache buffer, layer range, bucket, skip sets) is run (the first
runs eager: most keys of a prefill or a one-off chunk never come back), and kept in a least-recently-used table of
at most `limit` graphs. A graph reads fixed tensors: the padded rows, the layers' lengths and the chunk's geometry
are copied into them before a replay, and its output is copied out after (a decoder keeps hidden states across
calls; the graph's buffer is overwritten by the next replay). Chunk masks are data (`ChunkInputs.inner`), so
a tree and a causal chunk of one bucket share a graph. The cache buffer is part of the key (a graph writes into the
buffers it was captured with), so each generation captures its own graphs and the table's bound frees the last
one's. Decoders see nothing of it.

`capture(fn)` is `cuda_capture` on a GPU; elsewhere `eager_capture` stands in, so the bookkeeping runs on a CPU.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

from harness.core.backends.static_stack import StaticStack
from harness.core.backends.static_step import ChunkInputs

GRAPH_LIMIT = 64


def cuda_capture(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """Runs fn once on a side stream (as CUDA graphs want: it warms up the allocator; fn's writes are idempotent),
    captures it, and returns the replay and the graph's output tensor."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph.replay, out


def eager_capture(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """A stand-in for `cuda_capture` off a GPU (tests, the device check's dry form): a replay re-runs fn eagerly
    into the captured output, so the bookkeeping runs exactly as it would around a graph."""
    out = fn()
    return lambda: out.copy_(fn()), out


class CapturedStack(StaticStack):
    def __init__(self, *args, capture: Callable = cuda_capture, limit: int = GRAPH_LIMIT, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._capture, self.limit = capture, limit
        self.graphs: OrderedDict[tuple, tuple[Callable[[], None], torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()
        self._seen: set[tuple] = set()

    def layers(self, x: torch.Tensor, pasts: torch.Tensor, inputs: ChunkInputs, cache, start: int, end: int,
               skip_attention: frozenset[int], skip_mlp: frozenset[int]) -> torch.Tensor:
        key = (cache.k.data_ptr(), self.runner.rotary_tables()[0].data_ptr(), start, end, x.shape[0],
               skip_attention, skip_mlp)
        if key in self.graphs:
            self.graphs.move_to_end(key)
            replay, x_in, pasts_in, out = self.graphs[key]
            x_in.copy_(x)
            pasts_in.copy_(pasts)
            replay()
            return out.clone()
        if key not in self._seen:
            if len(self._seen) >= 4 * self.limit:
                self._seen.clear()
            self._seen.add(key)
            return super().layers(x, pasts, inputs, cache, start, end, skip_attention, skip_mlp)
        x_in, pasts_in = x.clone(), pasts.clone()
        replay, out = self._capture(lambda: super(CapturedStack, self).layers(x_in, pasts_in, inputs, cache, start,
                                                                              end, skip_attention, skip_mlp))
        self.graphs[key] = (replay, x_in, pasts_in, out)
        if len(self.graphs) > self.limit:
            self.graphs.popitem(last=False)
        return out.clone()
