"""A first run: missing heads are trained with the decoder's recipe (or refused with --no-train), decoders with
trained heads default to the recommended setting and the run's meta.json says which and why; no arguments print
a usage."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from decoders.adadecode.decoder import AdaDecode, parse_layers
from harness.core.errors import HarnessError
from harness.core.heads import read_metadata
from harness.core.random_models import QWEN25_CODER_05B, SMOLLM2_135M
from harness.run.recommended import (best_lossless_point, recommendation, resolve_settings,
                                 store_recommendation)
from harness.run.training import missing_heads, prepare_heads

ROOT = Path(__file__).resolve().parents[1]
TINY = {"prompts": 3, "max_new_tokens": 4, "steps": 2, "exit_layers": [24, 28]}


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A cache folder without heads (the converted model linked in, not converted again)."""
    models = Path(os.environ.get("FASTDECODE_CACHE", Path.home() / ".cache" / "fastdecode")) / "models"
    if models.is_dir():
        (tmp_path / "models").symlink_to(models)
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    return tmp_path


def test_missing_heads_are_trained_once_with_the_recipe_and_carry_the_recommendation(
        runner, shared_data, private_cache, monkeypatch, capsys):
    monkeypatch.setattr(AdaDecode, "default_recipe", classmethod(lambda cls, runner: dict(TINY)))
    settings = {"adadecode": {}, "layerskip": {"exit_head": "adadecode", "exit_layer": 26}, "vanilla": {}}
    with pytest.raises(HarnessError, match="train them with: python run.py train-heads --decoder adadecode"):
        prepare_heads(runner, settings, ["gsm8k"], str(shared_data), refuse="--no-train")
    trained = prepare_heads(runner, settings, ["gsm8k"], str(shared_data))
    notice = capsys.readouterr().err
    assert "training them now with the default recipe at exit layers 24, 26, 28" in notice  # layerskip's 26 added
    assert "first 3 rows of" in notice and "ms per token" in notice and "--no-train" in notice
    assert [(t["kind"], t["task"], t["recipe"]["prompts"]) for t in trained] == [("adadecode", "gsm8k", 3)]
    path = Path(trained[0]["path"])
    assert path.is_relative_to(private_cache) and read_metadata(path)["layers"] == [24, 26, 28]
    assert read_metadata(path)["recommended"] == AdaDecode.measured_settings[runner.name]
    assert missing_heads(runner, settings, ["gsm8k"]) == {}
    assert prepare_heads(runner, settings, ["gsm8k"], str(shared_data)) == []  # cached: nothing trained again

    used = resolve_settings(runner.name, {"adadecode": {}, "adadecode@gamma=0.5": {"gamma": 0.5}, "vanilla": {}},
                            ["gsm8k"])["gsm8k"]
    assert used["adadecode"]["settings"] == AdaDecode.measured_settings[runner.name]["settings"]
    assert used["adadecode"]["source"].startswith("recommended: README") and str(path) in used["adadecode"]["source"]
    assert used["adadecode@gamma=0.5"]["settings"] == {"gamma": 0.5, "exit_layers": "24+28"}
    assert "--set: gamma" in used["adadecode@gamma=0.5"]["source"]
    assert used["vanilla"] == {"settings": {}, "source": "the decoder's defaults (no measured recommendation)"}

    store_recommendation(runner.name, "adadecode", "gsm8k", {"gamma": 0.8}, "run.py sweep runs/x on gsm8k")
    advice = recommendation(runner.name, "adadecode", "gsm8k")
    assert advice["settings"] == {"gamma": 0.8} and advice["source"].startswith("run.py sweep runs/x on gsm8k (")
    assert read_metadata(path)["layers"] == [24, 26, 28]  # the heads themselves are kept
    with pytest.raises(HarnessError, match="no trained heads of its own"):
        store_recommendation(runner.name, "layerskip", "gsm8k", {}, "x")


@pytest.mark.parametrize("model, config", [("SmolLM2-135M-Instruct", SMOLLM2_135M),
                                           ("Qwen2.5-Coder-0.5B-Instruct", QWEN25_CODER_05B)])
def test_measured_exits_are_among_those_a_first_run_trains(model, config):
    """The measured setting names only exits the default recipe trains at the model's depth, else a first run's
    heads could not serve it."""
    depth = SimpleNamespace(n_layers=config["num_hidden_layers"])
    exits = set(parse_layers(AdaDecode.measured_settings[model]["settings"]["exit_layers"]))
    assert exits <= set(AdaDecode.default_recipe(depth)["exit_layers"])


def test_best_lossless_point_skips_mismatches_and_errors():
    points = [{"gamma": 0.5, "speedup": 1.3, "errors": 0, "parity_mismatches": 1},
              {"gamma": 0.75, "speedup": 1.2, "errors": 1, "parity_mismatches": 0},
              {"gamma": 0.9, "speedup": 1.1, "errors": 0, "parity_mismatches": 0},
              {"gamma": 0.95, "speedup": 1.0, "errors": 0, "parity_rate": 1.0}]
    assert best_lossless_point(points)["gamma"] == 0.9
    assert best_lossless_point(points[:2]) is None


def cli(*args, env=None):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_no_train_stops_with_the_command_before_any_row(shared_data, private_cache, tmp_path):
    out = cli("--decoders", "adadecode", "--tasks", "gsm8k", "--limit", "1", "--no-train", "--device", "cpu",
              "--data", str(shared_data), "--out", str(tmp_path / "run"), env={"FASTDECODE_CACHE": str(private_cache)})
    assert out.returncode == 2, out.stderr
    error = out.stderr.strip().splitlines()[-1]  # one line, after the model's loading bar
    assert error.startswith("error: no trained heads at") and "error:" not in out.stderr.replace(error, "")
    assert "train them with: python run.py train-heads --decoder adadecode --task gsm8k" in out.stderr
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_no_arguments_print_the_usage_and_run_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "run.py")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage:")
    assert out.stdout.count("python run.py") >= 4 and "report" in out.stdout and "compare" in out.stdout
    assert not (tmp_path / "runs").exists()
