"""The memory-bandwidth floor of a decoding step: every weight a step uses must be read once.

A one-token step streams every linear weight of every layer and the lm head (the embedding table is only indexed).
Reading a buffer of that size, timed here, bounds how fast any step can be on this machine: tokens/s ≤ bandwidth /
bytes. Vanilla's tokens/s divided by that bound says how much of the machine the runner uses.
"""
from __future__ import annotations

import statistics
import time

import torch

from harness.core.model_runner import ModelRunner


def step_weight_bytes(runner: ModelRunner) -> int:
    """Bytes of the weights one decoding step reads: the layers' linear weights and the lm head."""
    linears = [m for layer in runner.layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    return sum(m.weight.numel() * m.weight.element_size() for m in linears + [runner.lm_head])


def read_bandwidth(n_bytes: int, device: torch.device, repeats: int = 7) -> float:
    """Bytes per second reading a fresh buffer of `n_bytes` (median of `repeats` full-buffer sums)."""
    buffer = torch.ones(n_bytes // 4, dtype=torch.float32, device=device)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        buffer.sum().item()
        times.append(time.perf_counter() - start)
    return n_bytes / statistics.median(times[1:])


def bandwidth_floor(runner: ModelRunner) -> dict[str, float]:
    """The machine's weight-read bandwidth and the tokens/s a step can at most reach on this model."""
    n_bytes = step_weight_bytes(runner)
    bandwidth = read_bandwidth(n_bytes, runner.device)
    return {"weight_bytes": n_bytes, "read_gb_per_s": bandwidth / 1e9, "floor_tokens_per_s": bandwidth / n_bytes}
