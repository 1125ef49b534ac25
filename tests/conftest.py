import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("FASTDECODE_RUNNER", "fast")  # runs in tests compile nothing; tests/test_fast_runner.py does

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def runner():
    """The real embedded model (SmolLM2-135M-Instruct), float32 on the CPU."""
    from harness.core.loading import load_runner

    return load_runner("smollm2", "float32", "cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} missing")
    return SHARED_DATA


def _packed(build):
    from harness.core.backends.packed_bf16 import cpu_has_bf16_hardware

    if not cpu_has_bf16_hardware():
        pytest.skip("this CPU has no bf16 hardware (AVX512-BF16 or AMX): the packed bf16 path does not apply")
    runner = build()
    assert runner.exact_chunks
    return runner


@pytest.fixture(scope="session")
def runner_f32_native(runner):
    """The fp32 `runner` where it runs on the native fp32 kernels (batch-invariant: CPUs with AVX2 and FMA)."""
    if not runner.exact_chunks:
        pytest.skip(f"the native fp32 kernels do not run here: {runner.kernel_path}")
    return runner


@pytest.fixture(scope="session")
def runner_bf16():
    """The embedded model in bfloat16 on the runner's batch-invariant packed path (CPUs with bf16 hardware)."""
    from harness.core.loading import load_runner

    return _packed(lambda: load_runner("smollm2", "bfloat16", "cpu"))


@pytest.fixture(scope="session")
def runner_bf16_compiled(runner_bf16):
    """The same model on the compiled runner: the static step compiled by inductor around the packed bf16 weights."""
    from harness.core.model_runner import ModelRunner

    return ModelRunner(runner_bf16.model, runner_bf16.tokenizer, runner_bf16.name, runner="compiled")


@pytest.fixture(scope="session")
def qwen():
    """A random-weight Qwen2 of Qwen2.5-Coder-0.5B's shape ratios (`harness.core.random_models.TINY_QWEN2`), float32."""
    from harness.core.random_models import TINY_QWEN2, random_runner

    return random_runner(TINY_QWEN2, name="tiny-qwen2")


@pytest.fixture(scope="session")
def qwen_bf16():
    """The random Qwen2 in bfloat16 on the packed path (CPUs with bf16 hardware)."""
    import torch

    from harness.core.random_models import TINY_QWEN2, random_runner

    return _packed(lambda: random_runner(TINY_QWEN2, torch.bfloat16, name="tiny-qwen2"))
