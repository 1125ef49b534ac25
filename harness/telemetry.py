"""Memory telemetry around one generation.

- NVML (`nvidia-ml-py`): a sampler thread reads the GPU's used memory and utilisation every `interval_s` while a
  generation runs (CUDA runs only). NVML missing or failing is normal on CPU-only machines: the fields are null and
  one notice is printed per process.
- torch's allocator peak per generation on CUDA (`reset_peak_memory_stats` before, `max_memory_allocated` after).
- The process's peak resident set size so far (`getrusage`), on every device.
"""
from __future__ import annotations

import resource
import sys
import threading
import time
from typing import Any

import torch

_nvml_notice_shown = False


def _notice(message: str) -> None:
    global _nvml_notice_shown
    if not _nvml_notice_shown:
        print(f"note: {message}; NVML memory fields are null", file=sys.stderr)
        _nvml_notice_shown = True


def open_nvml(device_index: int) -> Any | None:
    """An NVML device handle, or None (with one notice per process) when NVML is missing or fails."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(device_index)
    except Exception as exc:  # pynvml.NVMLError subclasses, or the package missing
        _notice(f"NVML unavailable ({type(exc).__name__}: {exc})")
        return None


class NvmlSampler:
    """Samples [seconds since start, used bytes, utilisation %] on a thread between `start` and `stop`."""

    def __init__(self, handle: Any, interval_s: float = 0.01) -> None:
        self.handle = handle
        self.interval_s = interval_s
        self.samples: list[list[float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> list[list[float]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples

    def _run(self) -> None:
        import pynvml

        t0 = time.perf_counter()
        while True:
            try:
                used = pynvml.nvmlDeviceGetMemoryInfo(self.handle).used
                util = pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            except pynvml.NVMLError as exc:
                _notice(f"NVML sampling failed ({exc})")
                return
            self.samples.append([round(time.perf_counter() - t0, 4), int(used), int(util)])
            if self._stop.wait(self.interval_s):
                return


def rss_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class MemoryProbe:
    """`start()` before a generation, `stop()` after: returns the row's `memory` dict (all null when disabled)."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.enabled = enabled
        self.cuda = device.type == "cuda"
        handle = open_nvml(device.index or 0) if enabled and self.cuda else None
        self.sampler = NvmlSampler(handle) if handle is not None else None

    def start(self) -> None:
        if not self.enabled:
            return
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        if self.sampler:
            self.sampler.start()

    def stop(self) -> dict[str, Any]:
        if not self.enabled:
            return {"torch_peak_bytes": None, "rss_peak_bytes": None, "nvml_peak_bytes": None, "nvml_samples": None}
        samples = self.sampler.stop() if self.sampler else None
        return {"torch_peak_bytes": torch.cuda.max_memory_allocated() if self.cuda else None,
                "rss_peak_bytes": rss_peak_bytes(),
                "nvml_peak_bytes": max((s[1] for s in samples), default=None) if samples else None,
                "nvml_samples": samples}
