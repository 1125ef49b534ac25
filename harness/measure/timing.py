"""Wall-clock timing of one generation: start, first token (the decoder's `on_first_token` callback), end.

On CUDA the marks are CUDA events on the current stream of the runner's own device (not whatever device is current,
which is GPU 0 for `--device cuda:1` in one process), read after synchronising that device, so queued kernels are
counted; on the CPU they are `perf_counter` readings.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    ttft_s: float | None  # prefill: time to the first new token (None when no token came)
    decode_s: float | None  # first token to the end
    total_s: float


class GenerationTimer:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._marks: dict[str, object] = {}

    def _mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            self._marks[name] = event
        else:
            self._marks[name] = time.perf_counter()

    def start(self) -> None:
        self._marks = {}
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self._mark("start")

    def first_token(self) -> None:
        """Pass as `on_first_token` to `Decoder.generate`."""
        self._mark("first")

    def stop(self) -> Timing:
        self._mark("end")
        if self.cuda:
            torch.cuda.synchronize(self.device)
        start, end, first = self._marks["start"], self._marks["end"], self._marks.get("first")
        total = self._seconds(start, end)
        if first is None:
            return Timing(None, None, total)
        return Timing(self._seconds(start, first), self._seconds(first, end), total)

    def _seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1000.0 if self.cuda else b - a
