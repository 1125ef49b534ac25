"""Memory telemetry around one generation.

- NVML (`nvidia-ml-py`): a sampler thread reads the GPU's used memory and utilisation every `interval_s` while a
  generation runs (CUDA runs only), on the device found by torch's UUID or PCI bus id. NVML missing or failing is normal on CPU-only machines: the fields are null and
  one notice is printed per process.
- torch's allocator peak per generation on CUDA (`reset_peak_memory_stats` before, `max_memory_allocated` after),
  on the runner's device.
- The process's peak resident set size so far (`getrusage`), on every device.
"""
from __future__ import annotations

import resource
import sys
import threading
import time
from typing import Any

import torch

from harness.measure.device_info import nvml_ids

_nvml_notice_shown = False


def _notice(message: str) -> None:
    global _nvml_notice_shown
    if not _nvml_notice_shown:
        print(f"note: {message}; NVML memory fields are null", file=sys.stderr)
        _nvml_notice_shown = True


def open_nvml(device: torch.device) -> Any | None:
    """The NVML handle of the GPU torch calls `device`, found by its UUID (else its PCI bus id): torch's index is
    not NVML's under CUDA_VISIBLE_DEVICES or SLURM. None (with one notice per process) when NVML is missing or
    fails."""
    try:
        import pynvml

        pynvml.nvmlInit()
        ids = nvml_ids(torch.cuda.get_device_properties(device))
        if ids["uuid"]:
            return pynvml.nvmlDeviceGetHandleByUUID(ids["uuid"])
        if ids["pci_bus_id"]:
            return pynvml.nvmlDeviceGetHandleByPciBusId(ids["pci_bus_id"])
        _notice(f"torch gives no UUID or PCI bus id for {device}")
        return None
    except Exception as exc:  # pynvml.NVMLError subclasses, or the package missing
        _notice(f"NVML unavailable ({type(exc).__name__}: {exc})")
        return None


class NvmlSampler:
    """Samples [seconds since start, used bytes, utilisation %] on a thread between `start` and `stop`.

    A query NVML refuses (utilisation is not supported under MIG, for one) is noted once and its field becomes
    null; the other query goes on being sampled. Sampling stops only when both fail.
    """

    def __init__(self, handle: Any, interval_s: float = 0.01) -> None:
        self.handle = handle
        self.interval_s = interval_s
        self.samples: list[list[float | None]] = []
        self.failed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self) -> None:
        """Takes the first sample at once (the state the generation starts from), then samples on a thread."""
        self.samples = []
        self._stop.clear()
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> list[list[float | None]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples

    def _query(self, name: str, read: Any) -> int | None:
        import pynvml

        if name in self.failed:
            return None
        try:
            return int(read(self.handle))
        except pynvml.NVMLError as exc:
            self.failed.add(name)
            print(f"note: NVML {name} query failed ({exc}); that field is null from now on", file=sys.stderr)
            return None

    def _sample(self) -> None:
        import pynvml

        used = self._query("memory", lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).used)
        util = self._query("utilisation", lambda h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
        if used is not None or util is not None:
            self.samples.append([round(time.perf_counter() - self._t0, 4), used, util])

    def _run(self) -> None:
        while len(self.failed) < 2 and not self._stop.wait(self.interval_s):
            self._sample()


def rss_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


class MemoryProbe:
    """`start()` before a generation, `stop()` after: returns the row's `memory` dict (all null when disabled).

    On CUDA each generation is measured from a known state on the runner's own device: `start` synchronises,
    empties the caching allocator (so memory an earlier generation reserved is given back and NVML's "used" does
    not carry it over) and resets torch's peak; `nvml_start_bytes` is NVML's reading then, so
    `nvml_peak_bytes - nvml_start_bytes` is what this generation added on the device.
    """

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.enabled = enabled
        self.device = device
        self.cuda = device.type == "cuda"
        handle = open_nvml(device) if enabled and self.cuda else None
        self.sampler = NvmlSampler(handle) if handle is not None else None

    def start(self) -> None:
        if not self.enabled:
            return
        if self.cuda:
            torch.cuda.synchronize(self.device)
            with torch.cuda.device(self.device):
                torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.sampler:
            self.sampler.start()

    def stop(self) -> dict[str, Any]:
        if not self.enabled:
            return {"torch_peak_bytes": None, "rss_peak_bytes": None, "nvml_start_bytes": None,
                    "nvml_peak_bytes": None, "nvml_samples": None}
        samples = self.sampler.stop() if self.sampler else None
        used = [s[1] for s in samples or () if s[1] is not None]
        return {"torch_peak_bytes": torch.cuda.max_memory_allocated(self.device) if self.cuda else None,
                "rss_peak_bytes": rss_peak_bytes(),
                "nvml_start_bytes": used[0] if used else None,
                "nvml_peak_bytes": max(used) if used else None,
                "nvml_samples": samples}
