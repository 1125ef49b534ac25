"""`run.py doctor`: ok/warn/fail lines with fixes, the CPU by its model name, heads per task."""
import subprocess
import sys
from pathlib import Path

import torch

import harness.measure.doctor as doctor

ROOT = Path(__file__).resolve().parents[1]


def test_doctor_prints_one_status_per_fact_with_fixes():
    out = subprocess.run([sys.executable, "run.py", "doctor"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    statuses = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert set(statuses) <= {"ok", "warn", "fail"} and len(statuses) >= 7
    assert out.returncode == (1 if "fail" in statuses else 0), out.stderr  # 1 only for a fail line, never a crash
    assert all(line.strip().startswith("fix: ") for line in lines if line.startswith(" "))
    assert lines[0].startswith("ok   torch ") and "transformers" in lines[0]
    cpu = next(line for line in lines if " CPU " in line)
    assert "cores" in cpu and "bf16 instructions" in cpu and "CPU x86_64 " not in cpu
    from harness.core.loading import resolve_dtype

    auto = "bfloat16 on the packed path" if resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16 else "float32"
    assert f"--dtype auto runs {auto}" in cpu


def test_the_doctor_exits_1_exactly_when_a_check_fails(monkeypatch, capsys):
    import run

    checks = [doctor.Check(doctor.OK, "fine"), doctor.Check(doctor.WARN, "slow", "a fix")]
    monkeypatch.setattr(doctor, "run_checks", lambda: checks)
    assert run.doctor([]) == 0  # a warning is not a failure
    checks.append(doctor.Check(doctor.FAIL, "broken", "the fix"))
    assert run.doctor([]) == 1
    assert capsys.readouterr().out.splitlines()[-2:] == ["fail broken", "     fix: the fix"]


def test_heads_are_listed_per_model_kind_and_task(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    assert doctor.trained_heads().status == doctor.WARN
    folder = tmp_path / "heads" / "SmolLM2-135M-Instruct"
    folder.mkdir(parents=True)
    for name in ("adadecode-xsum", "adadecode-humaneval", "medusa-xsum"):
        (folder / f"{name}.safetensors").write_bytes(b"")
    check = doctor.trained_heads()
    assert check.status == doctor.OK
    assert "adadecode (humaneval, xsum)" in check.what and "medusa (xsum)" in check.what


def test_a_cpu_without_bf16_instructions_is_a_warning_with_a_fix(monkeypatch):
    monkeypatch.setattr(doctor, "describe_device", lambda device: {
        "name": "Old CPU", "architecture": "x86_64", "logical_cores": 4, "physical_cores": 2, "torch_threads": 4,
        "torch_cpu_capability": "AVX2", "flags_known": True,
        "bf16_instructions": {"AVX512-BF16": False, "AMX-BF16": False, "AMX tiles": False, "AVX-512": False}})
    check = doctor.cpu()
    assert check.status == doctor.WARN and "--dtype float32" in check.fix


def test_each_embedded_model_is_listed_with_its_install_command_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDECODE_CACHE", str(tmp_path))
    qwen = doctor.EMBEDDED["qwen2.5-coder-0.5b"]
    monkeypatch.setattr(type(qwen), "installed", lambda self: self.alias == "smollm2")
    check = doctor.model_cache()
    assert check.status == doctor.OK and "smollm2 available" in check.what
    assert f"qwen2.5-coder-0.5b not installed ({qwen.install_command})" in check.what


def test_doctor_says_which_isolation_generated_code_runs_under(monkeypatch):
    import tasks.sandbox as sandbox

    monkeypatch.setattr(sandbox, "isolation", sandbox.isolation.__wrapped__)  # uncached: each call tries again
    check = doctor.code_isolation()
    assert ("bubblewrap" in check.what) and check.status in (doctor.OK, doctor.WARN)
    which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: "/usr/bin/bwrap" if name == "bwrap" else which(name))
    monkeypatch.setattr(sandbox, "bubblewrap_args", lambda bwrap: ["false"])  # bwrap present but failing to start
    check = doctor.code_isolation()
    assert check.status == doctor.WARN and "weaker isolation" in check.what and "failed to start" in check.what
    assert "apt-get install -y bubblewrap" in check.fix
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    assert "not installed" in doctor.code_isolation().what
