"""Sampling from the command line: flags checked before the model loads, greedy-only decoders refused, the
settings recorded in meta.json (a rerun with others refused), parity skipped, and reproducible draws."""
import json

import pytest

from harness.checks.distribution import RUN_TOP_K, informative_prefix
from harness.core.errors import HarnessError
from harness.core.sampling import Sampling
from harness.run.meta import write_meta
from tasks.base import build_task
from test_bench_cli import NO_MODEL, one_line_error, run_cli


def test_bad_sampling_flags_are_refused_before_the_model_loads():
    one_line_error(run_cli("--temperature", "-0.5", *NO_MODEL), "--temperature must be 0 (greedy) or more")
    one_line_error(run_cli("--temperature", "0.7", "--top-p", "0", *NO_MODEL), "--top-p must lie in (0, 1]")


def test_a_decoder_that_cannot_sample_is_refused_before_the_model_loads(monkeypatch):
    """Every registered decoder samples; a plugin that does not (`samples = False`) is refused by name."""
    import run
    from decoders.hf_generate import HFGenerate

    monkeypatch.setattr(HFGenerate, "samples", False)
    args = run.bench_parser().parse_args(["--temperature", "0.7"])
    with pytest.raises(HarnessError, match="hf_generate decodes greedily only; drop it from --decoders .*medusa"):
        run.sampling_settings(args, ["vanilla", "hf_generate"])
    args.temperature = 0.0
    assert run.sampling_settings(args, ["hf_generate"]).greedy


def _meta(sampling):
    return {"model": "m", "dtype": "float32", "device": "cpu", "max_new_tokens": None, "decoder_settings": {},
            "tasks": {}, "command_lines": ["run"], **({"sampling": sampling} if sampling else {})}


def test_a_rerun_with_other_sampling_settings_is_refused(tmp_path):
    write_meta(tmp_path, _meta(None))  # a folder written before sampling existed is greedy
    write_meta(tmp_path, _meta({"greedy": True}))
    with pytest.raises(HarnessError, match="sampling="):
        write_meta(tmp_path, _meta({"greedy": False, "temperature": 0.7, "top_p": 0.95, "top_k": 0, "seed": 0}))


def test_a_sampled_run_records_its_settings_and_skips_parity(runner, tmp_path):
    args = ("--decoders", "pld", "--tasks", "humaneval", "--limit", "2", "--max-new-tokens", "8", "--device", "cpu",
            "--dtype", "float32", "--temperature", "0.7", "--top-p", "0.95", "--seed", "3", "--warmup", "0",
            "--distribution-draws", "20", "--no-report")
    out = run_cli(*args, "--out", str(tmp_path / "a"))
    assert out.returncode == 0, out.stderr
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["sampling"] == {"greedy": False, "temperature": 0.7, "top_p": 0.95, "top_k": 0, "seed": 3}
    rows = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["error"] is None and r["parity"] is None for r in rows)
    checks = [json.loads(line) for line in (tmp_path / "a" / "distribution.jsonl").read_text().splitlines()]
    assert [(c["task"], c["decoder"], c["draws"]) for c in checks] == [("humaneval", "vanilla", 20),
                                                                        ("humaneval", "pld", 20)]
    assert checks[0]["sampling"] == {"greedy": False, "temperature": 0.7, "top_p": 0.95, "top_k": 3, "seed": 3}
    task = build_task("humaneval")
    sample = task.samples(2)[0]  # a run checks its first sample, with the top-k cut to RUN_TOP_K
    prompt_ids = task.prompt_ids(sample, runner.tokenizer)
    start = len(informative_prefix(runner, prompt_ids, Sampling(temperature=0.7, top_p=0.95, top_k=RUN_TOP_K,
                                                                 seed=3))) - len(prompt_ids)
    assert start > 0  # the most uncertain greedy position is not the first: a check from the bare prompt fails
    assert [c["sample_id"] for c in checks] == [str(sample.id)] * 2
    assert checks[0]["prefix_tokens"] == checks[1]["prefix_tokens"] == start  # both decoders from that start
    assert "pld on humaneval" in out.stdout and "distribution check" in out.stdout
    assert run_cli(*args, "--out", str(tmp_path / "b")).returncode == 0
    again = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in again] == [r["tokens"] for r in rows]  # the seed makes the draws reproducible
    (tmp_path / "b" / "distribution.jsonl").unlink()  # stopped after its generations, before its checks
    assert run_cli(*args, "--out", str(tmp_path / "b")).returncode == 0
    resumed = [json.loads(line) for line in (tmp_path / "b" / "distribution.jsonl").read_text().splitlines()]
    # the check is redone for both decoders with as many draws; its p-value may move in the last draws, since float32
    # kernels need not give the same bits in another process (one suite run: 0.2831 against 0.2825)
    assert [(c["decoder"], c["draws"], c["passed"]) for c in resumed] == [(c["decoder"], c["draws"], c["passed"])
                                                                          for c in checks]
    assert [c["p_value"] for c in resumed] == pytest.approx([c["p_value"] for c in checks], abs=0.02)
    assert len((tmp_path / "b" / "results.jsonl").read_text().splitlines()) == len(rows)
    other = run_cli(*[a if a != "0.7" else "0.9" for a in args], "--out", str(tmp_path / "a"))
    assert other.returncode == 2 and "holds a run with sampling=" in other.stderr and "temperature': 0.9" in other.stderr
