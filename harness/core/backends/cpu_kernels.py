"""What the CPU kernels in C (`native_linear.c`, `native_f32.c`) share: the CPU's flags, the switch that turns them
off, and their compilation, once per source and flags, into the cache folder with the system's C compiler."""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

NATIVE_ROWS = 32  # chunks of more rows (prefills) run on the kernels built for large products


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def kernels_disabled() -> bool:
    """`FASTDECODE_NATIVE=0` keeps the C kernels off (the paths built on torch's kernels run instead)."""
    return os.environ.get("FASTDECODE_NATIVE") == "0"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def compile_library(source: Path, flags: tuple[str, ...]) -> Path | str:
    """The shared library built from `source` with `flags` (once: cached by source, the headers beside it, compiler
    and flags), or why not, in a line."""
    from harness.core.loading import cache_dir

    compiler = _compiler()
    if compiler is None:
        return "no C compiler (cc or $CC)"
    headers = b"".join(h.read_bytes() for h in sorted(source.parent.glob("*.h")))  # what the sources include
    key = hashlib.sha1(source.read_bytes() + headers + " ".join((compiler,) + flags).encode()).hexdigest()[:12]
    target = cache_dir() / "kernels" / f"{source.stem}-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        done = subprocess.run([compiler, *flags, str(source), "-o", str(partial), "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines() or ["?"]
            return f"{compiler} failed: {errors[0].strip()}"
        partial.replace(target)
    return target
