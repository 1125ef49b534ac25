"""`python run.py train-heads` end to end on the embedded model, for every decoder that has heads (tiny settings)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.heads import load_heads

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("decoder, extra", [("adadecode", ["--exit-layers", "20,26"]), ("medusa", []), ("eagle", [])])
def test_train_heads_writes_a_heads_file_with_metadata(shared_data, tmp_path, decoder, extra):
    env = {**os.environ, "FASTDECODE_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    models = Path(os.environ.get("FASTDECODE_CACHE", Path.home() / ".cache" / "fastdecode")) / "models"
    if models.is_dir():  # reuse the converted checkpoint instead of converting the GGUF again
        (tmp_path / "models").symlink_to(models)
    out = subprocess.run([sys.executable, "run.py", "train-heads", "--decoder", decoder, "--task", "gsm8k",
                          "--prompts", "3", "--max-new-tokens", "6", "--steps", "3", "--device", "cpu",
                          "--data", str(shared_data), *extra],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1].removeprefix("heads: "))
    assert path.is_file() and path.is_relative_to(tmp_path / "heads")
    tensors, metadata = load_heads(path)
    assert metadata["task"] == "gsm8k" and metadata["steps"] == 3 and metadata["data"]["training_prompts"] == 3
    if decoder == "adadecode":
        assert metadata["layers"] == [20, 26] and {"exit.20", "exit.26"} <= set(tensors)


def test_train_heads_for_a_decoder_without_heads_is_a_one_line_error(shared_data):
    out = subprocess.run([sys.executable, "run.py", "train-heads", "--decoder", "vanilla", "--task", "gsm8k",
                          "--data", str(shared_data)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no heads to train" in out.stderr
