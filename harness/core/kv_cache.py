"""A KV cache whose layers may hold different lengths.

Early-exit methods leave deep layers behind the shallow ones for a few positions; speculative methods append
drafts and roll them back. Keys and values live in preallocated buffers (as in gpt-fast); `lengths[i]` says how
many slots of layer i are valid, so a rollback is just a smaller length.
"""
from __future__ import annotations

import torch

from harness.core.errors import HarnessError


class LayeredKVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str, spare_slots: int = 0) -> None:
        """`spare_slots` past `max_len` hold no position (the static step's padded rows write there)."""
        shape = (n_layers, 1, n_kv_heads, max_len + spare_slots, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = [0] * n_layers
        self.max_len = max_len

    @property
    def n_layers(self) -> int:
        return len(self.lengths)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes a chunk of keys/values ([1, heads, q, dim]) after the layer's valid slots; returns all valid slots."""
        start = self.reserve(layer, k.shape[2])
        end = self.lengths[layer]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reserve(self, layer: int, n: int) -> int:
        """Counts n more valid slots for the layer (whose keys/values the caller writes); returns the first."""
        start = self.lengths[layer]
        if start + n > self.max_len:
            raise self.full_error()
        self.lengths[layer] = start + n
        return start

    def full_error(self) -> HarnessError:
        """What a chunk that does not fit is refused with."""
        return HarnessError(f"KV cache full ({self.max_len} slots): raise max_new_tokens headroom or shorten the prompt")

    def crop(self, length: int) -> None:
        """Rolls every layer back to at most `length` slots."""
        self.lengths = [min(n, length) for n in self.lengths]

    def keep_slots(self, start: int, slots: list[int]) -> None:
        """Keeps only the given slots (all >= start, increasing) after `start`, moved to start, start+1, ...

        Tree verification writes every candidate after the accepted prefix; the accepted path is a subset of
        those slots. Each layer is rolled back to `start + len(slots)`.
        """
        if slots:
            src = torch.tensor(slots, device=self.k.device)
            dst = slice(start, start + len(slots))
            self.k[:, :, :, dst] = self.k[:, :, :, src]
            self.v[:, :, :, dst] = self.v[:, :, :, src]
        self.crop(start + len(slots))
