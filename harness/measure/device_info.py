"""What the device gives the harness, in one place: `describe_device` feeds `run.py doctor` and the run's meta.json
(`device_info`).

CPU: the model name (/proc/cpuinfo, else `lscpu`), logical and physical cores, torch's threads and vector ISA, and
the bf16 instructions the flags announce (AVX512-BF16, AMX). GPU: name, memory, compute capability, bf16 support,
the driver and CUDA versions, and the UUID and PCI bus id by which NVML finds the same device whatever
`CUDA_VISIBLE_DEVICES` renumbered.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch

# cpu flag → what it means for bf16 matrix work (oneDNN uses them for bf16 matmuls)
BF16_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_tile": "AMX tiles", "avx512f": "AVX-512"}


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return fields
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _lscpu() -> dict[str, str]:
    if shutil.which("lscpu") is None:
        return {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip().lower(): v.strip() for k, sep, v in (line.partition(":") for line in out.splitlines()) if sep}


def describe_cpu() -> dict[str, Any]:
    info, lscpu = _cpuinfo(), {}
    name = info.get("model name") or info.get("hardware")
    flags = set(info.get("flags", "").split())
    if not name or not flags:
        lscpu = _lscpu()
        name = name or lscpu.get("model name")
        flags = flags or set(lscpu.get("flags", "").split())
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    return {"type": "cpu", "name": name or platform.processor() or platform.machine(),
            "architecture": platform.machine(), "logical_cores": os.cpu_count(), "physical_cores": physical,
            "torch_threads": torch.get_num_threads(), "torch_cpu_capability": _cpu_capability(),
            "bf16_instructions": {label: flag in flags for flag, label in BF16_FLAGS.items()},
            "flags_known": bool(flags)}


def _cpu_capability() -> str | None:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None


def nvml_ids(props: Any) -> dict[str, str | None]:
    """The UUID and PCI bus id NVML knows a torch device by (torch's index is not NVML's under
    CUDA_VISIBLE_DEVICES or SLURM)."""
    uuid = getattr(props, "uuid", None)
    uuid = str(uuid) if uuid is not None else None
    if uuid and not uuid.startswith(("GPU-", "MIG-")):
        uuid = "GPU-" + uuid
    bus = getattr(props, "pci_bus_id", None)
    pci = (f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
           if bus is not None else None)
    return {"uuid": uuid, "pci_bus_id": pci}


def describe_cuda(device: torch.device) -> dict[str, Any]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"type": "cuda", "index": index, "name": props.name, "total_memory_bytes": props.total_memory,
            "compute_capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(), "cuda_runtime": torch.version.cuda,
            "driver": nvml_driver_version(), "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            **nvml_ids(props)}


def nvml_driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # the package missing, or no driver
        return None


def describe_device(device: torch.device | str) -> dict[str, Any]:
    """The device's facts as a JSON-ready dict (`type` "cpu" or "cuda", `name`, and the rest as documented above)."""
    device = torch.device(device)
    if device.type == "cuda":
        return describe_cuda(device)
    if device.type == "cpu":
        return describe_cpu()
    return {"type": device.type, "name": str(device)}
