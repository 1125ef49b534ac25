"""Attention over a cache layer's whole fixed-length buffer: each row's rotary tables and its additive mask over
every slot, and a chunk's run through layers that are one C call each (`native_linear.NativeLayer`,
`native_f32.F32Layer`)."""
from __future__ import annotations

import torch

from harness.core.layer_calls import LayerCall


def rotary_and_mask(runner, past: int, q_len: int, slots: int, positions: torch.Tensor | None,
                    chunk_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos/sin per row ([rows, head_dim]) and the additive mask over the whole buffer ([rows, slots]): the `past`
    valid slots and the chunk's own (causal, or `chunk_mask`) visible, every other slot -inf."""
    device = runner.device
    pos = positions if positions is not None else torch.arange(past, past + q_len, device=device)
    inner = chunk_mask if chunk_mask is not None else torch.ones(q_len, q_len, dtype=torch.bool, device=device).tril()
    visible = torch.zeros(q_len, slots, dtype=torch.bool, device=device)
    visible[:, :past] = True
    visible[:, past:past + q_len] = inner
    mask = torch.zeros(visible.shape, device=device).masked_fill_(~visible, float("-inf"))
    cos, sin = runner.rotary_tables()
    return cos[pos], sin[pos], mask


def run_fused_layers(runner, layers: list, call: LayerCall, scaling: float) -> torch.Tensor:
    """One sequence's chunk through its layer range, a C call per layer, in place on a copy of its hidden states;
    each layer's keys and values written after that layer's valid slots."""
    x = call.hidden[0].contiguous().clone()
    work = x.new_empty(call.rows, layers[0].width)
    tables: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    slots = call.cache.k.shape[3]
    for i in range(call.start, call.end):
        attention, past, table = i not in call.skip_attention, 0, (None, None, None)
        if attention:
            past = call.cache.reserve(i, call.rows)
            if past not in tables:
                tables[past] = rotary_and_mask(runner, past, call.rows, slots, call.positions, call.chunk_mask)
            table = tables[past]
        layers[i](x, attention, i not in call.skip_mlp, table[0], table[1], call.cache.k[i, 0], call.cache.v[i, 0],
                  past, table[2], scaling, work)
    return x[None]
