"""Runner-layer units: parity, NVML absence, result streaming and resume, --set parsing."""
import json

import pytest
import torch

import harness.measure.telemetry as telemetry
from harness.core.errors import HarnessError
from harness.checks.parity import compare
from harness.run.results import ResultStore
from harness.measure.timing import GenerationTimer
from run import parse_settings, parse_value


def test_parity_finds_a_planted_divergence_at_its_index():
    reference = list(range(100, 140))
    planted = list(reference)
    planted[17] = 7
    assert compare(reference, planted) == {"match": False, "first_divergence": 17}
    assert compare(reference, list(reference)) == {"match": True, "first_divergence": None}
    assert compare(reference, reference[:25]) == {"match": False, "first_divergence": 25}


def test_nvml_absence_gives_null_and_one_notice(monkeypatch, capsys):
    pynvml = pytest.importorskip("pynvml")

    def missing():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    monkeypatch.setattr(telemetry, "_nvml_notice_shown", False)
    assert telemetry.open_nvml(0) is None
    assert telemetry.open_nvml(0) is None
    assert capsys.readouterr().err.count("NVML unavailable") == 1


def test_memory_probe_on_cpu_records_rss_and_nulls():
    probe = telemetry.MemoryProbe(torch.device("cpu"))
    probe.start()
    memory = probe.stop()
    assert memory["rss_peak_bytes"] > 10_000_000
    assert memory["torch_peak_bytes"] is None and memory["nvml_peak_bytes"] is None
    off = telemetry.MemoryProbe(torch.device("cpu"), enabled=False)
    off.start()
    assert set(off.stop().values()) == {None}


def test_cpu_timer_splits_prefill_and_decode():
    timer = GenerationTimer(torch.device("cpu"))
    timer.start()
    timer.first_token()
    timing = timer.stop()
    assert 0 <= timing.ttft_s <= timing.total_s and abs(timing.ttft_s + timing.decode_s - timing.total_s) < 1e-9
    timer.start()
    assert timer.stop().ttft_s is None


def _row(decoder, sample_id, tokens=3, seconds=1.0, match=None):
    return {"decoder": decoder, "task": "t", "sample_id": sample_id, "new_tokens": tokens, "total_s": seconds,
            "error": None, "tokens": [1] * tokens, "parity": None if match is None else {"match": match}}


def test_store_drops_a_partial_last_line_and_resumes(tmp_path):
    store = ResultStore(tmp_path)
    store.append(_row("vanilla", "a"))
    store.append(_row("vanilla", "b"))
    store.close()
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"decoder": "vanilla", "task": "t", "sam')  # killed mid-write
    store = ResultStore(tmp_path)
    assert store.has("vanilla", "t", "a") and store.has("vanilla", "t", "b") and not store.has("vanilla", "t", "c")
    assert store.reference_tokens("t", "a") == [1, 1, 1]
    store.append(_row("vanilla", "c"))
    store.close()
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["sample_id"] for line in lines] == ["a", "b", "c"]


def test_set_values_are_typed_and_checked():
    assert [parse_value(v) for v in ("3", "0.5", "true", "False", "layer")] == [3, 0.5, True, False, "layer"]
    assert parse_settings(["ada.threshold=0.9", "ada.mode=fast"], ["ada"]) == {"ada": {"threshold": 0.9, "mode": "fast"}}
    with pytest.raises(HarnessError, match="not in --decoders"):
        parse_settings(["other.k=1"], ["ada"])
    with pytest.raises(HarnessError, match="DECODER.KEY=VALUE"):
        parse_settings(["threshold=1"], ["ada"])
