"""One `run_layers` call as data, so several sequences' calls can share one pass over the weights."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.core.kv_cache import LayeredKVCache


@dataclass
class LayerCall:
    """The arguments of `ModelRunner.run_layers` (hidden states [1, q, d] of one sequence, and its own cache)."""
    hidden: torch.Tensor
    cache: LayeredKVCache
    start: int
    end: int
    positions: torch.Tensor | None = None
    chunk_mask: torch.Tensor | None = None
    skip_attention: frozenset[int] = frozenset()
    skip_mlp: frozenset[int] = frozenset()

    @property
    def rows(self) -> int:
        return self.hidden.shape[1]

    def fits(self) -> bool:
        """Whether every layer of the range has room for the chunk (a batch checks before it writes anything)."""
        return all(self.cache.lengths[i] + self.rows <= self.cache.max_len for i in range(self.start, self.end))


def joined(parts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """The parts' rows stacked (a single part as it is: no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def split_like(x: torch.Tensor, parts: list[torch.Tensor], dim: int = 0) -> list[torch.Tensor]:
    """`x` cut back into pieces of the parts' sizes along `dim` (the inverse of `joined`)."""
    if len(parts) == 1:
        return [x]
    return list(x.split([p.shape[dim] for p in parts], dim=dim))
