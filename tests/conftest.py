import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

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
