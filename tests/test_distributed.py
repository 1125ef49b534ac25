"""Scale-out under torchrun (gloo on CPU): shards, rank files, the merge, and resume after a rank died."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from harness.core.errors import HarnessError
from harness.run.distributed import World, merge_results
from harness.run.results import ResultStore

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
DECODERS = ["vanilla", "layerskip"]  # layerskip's defaults need no trained heads and keep parity
LIMIT = 6


def bench_args(shared_data: Path, out: Path, report: bool = False) -> list[str]:
    return ["run.py", "--decoders", ",".join(DECODERS), "--tasks", "gsm8k", "--limit", str(LIMIT),
            "--max-new-tokens", "8", "--warmup", "0", "--no-telemetry", "--device", "cpu",
            "--data", str(shared_data), "--out", str(out), *([] if report else ["--no-report"])]


def torchrun(shared_data: Path, out: Path, report: bool = False) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            *bench_args(shared_data, out, report)]


def run(command: list[str], env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tokens_by_key(rows: list[dict]) -> dict[tuple, list[int]]:
    return {(r["decoder"], r["task"], r["sample_id"]): r["tokens"] for r in rows}


def check_complete(out: Path, reference: list[dict]) -> None:
    """One row per (decoder, sample), the tokens of the single-process run, no rank file left."""
    rows = rows_of(out / "results.jsonl")
    keys = [(r["decoder"], r["sample_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(DECODERS) * LIMIT
    assert tokens_by_key(rows) == tokens_by_key(reference)
    assert all(r["error"] is None and r["tokens"] for r in rows)
    assert not list(out.glob("results.rank*.jsonl"))


@pytest.fixture(scope="module")
def single_run(shared_data, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("single")
    run([sys.executable, *bench_args(shared_data, out)])
    return rows_of(out / "results.jsonl")


def test_two_ranks_merge_into_the_single_process_results(shared_data, single_run, tmp_path):
    out = run(torchrun(shared_data, tmp_path, report=True))
    check_complete(tmp_path, single_run)
    rows = rows_of(tmp_path / "results.jsonl")
    assert [(r["sample_index"], r["decoder"]) for r in rows] == [(i, d) for i in range(LIMIT) for d in DECODERS]
    assert all(r["parity"]["match"] for r in rows if r["decoder"] != "vanilla")
    assert out.stdout.count("vanilla on gsm8k:") == 1 and "layerskip on gsm8k:" in out.stdout  # rank 0 alone summarizes
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["world_size"] == 2 and len(meta["device_names"]) == 2 and meta["device"] == "cpu"
    assert out.stdout.count("report: ") == 1  # written once, by rank 0, after the merge
    assert "| world_size | 2 |" in " ".join((tmp_path / "report" / "report.md").read_text().split())


def test_a_killed_rank_loses_only_its_unfinished_samples(shared_data, single_run, tmp_path):
    launch = subprocess.Popen(torchrun(shared_data, tmp_path), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not any(f.stat().st_size for f in tmp_path.glob("results.rank*.jsonl")) and time.time() < deadline:
            if launch.poll() is not None:
                pytest.skip("the launch finished before a rank could be killed (a fast machine)")
            time.sleep(0.05)
        ranks = psutil.Process(launch.pid).children()
        assert len(ranks) == 2, "torchrun should run one process per rank"
        ranks[1].kill()  # one rank dies; torchrun then stops the other one
        launch.wait(timeout=120)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
    assert launch.returncode != 0
    before = {f.name: rows_of(f) for f in tmp_path.glob("results.rank*.jsonl")}
    assert 0 < sum(map(len, before.values())) < len(DECODERS) * LIMIT  # killed mid-run
    run(torchrun(shared_data, tmp_path))  # the same command
    check_complete(tmp_path, single_run)
    after = rows_of(tmp_path / "results.jsonl")
    for rows in before.values():  # the rows written before the kill were kept, not redone
        assert all(row in after for row in rows)


RANK_SCRIPT = """
import torch
from harness.core.errors import HarnessError
from harness.run.distributed import World

def refuse():
    raise HarnessError("refused on rank 0")

world = World.from_env()
world.start(torch.device("cpu"))
assert world.gather(world.rank) == [0, 1]
assert world.on_rank0(lambda: f"picked by {world.rank}") == "picked by 0"
try:
    world.on_rank0(refuse)
except HarnessError as exc:
    print(f"rank {world.rank}: {exc}")
world.barrier()
world.stop()
"""


def test_rank0_shares_its_result_and_its_error_with_every_rank(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    out = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
              {**ENV, "PYTHONPATH": str(ROOT)})  # this checkout's harness, not an installed one
    assert "rank 0: refused on rank 0" in out.stdout and "rank 1: refused on rank 0" in out.stdout


def _row(decoder: str, index: int, tokens: list[int]) -> dict:
    return {"decoder": decoder, "task": "t", "sample_id": f"t/{index}", "sample_index": index, "tokens": tokens,
            "error": None}


def _write(path: Path, rows: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_a_rerun_with_another_world_size_skips_rows_of_every_rank_file(tmp_path):
    planned = [(d, "t", f"t/{i}") for i in range(3) for d in ("vanilla", "m")]
    _write(tmp_path / "results.rank0.jsonl", [_row("vanilla", 0, [1]), _row("m", 0, [1]), _row("vanilla", 2, [3])])
    _write(tmp_path / "results.rank1.jsonl", [_row("vanilla", 1, [2])], tail='{"decoder": "m", "ta')  # killed
    world = World(rank=2, world_size=3)  # the rerun has three ranks
    store = ResultStore(tmp_path, world.results_file)
    assert store.has("vanilla", "t", "t/1") and not store.has("m", "t", "t/1")
    assert store.reference_tokens("t", "t/2") == [3]  # a reference row from another rank's file
    store.append(_row("m", 2, [3]))
    store.close()
    assert (tmp_path / "results.rank1.jsonl").read_text().endswith('"ta')  # only its own rank repairs a file
    with pytest.raises(HarnessError, match=r"1 of 6 planned rows are missing .* \(first: m/t/t/1\); rerun"):
        merge_results(tmp_path, planned)
    store = ResultStore(tmp_path, World(rank=1, world_size=3).results_file)
    store.append(_row("m", 1, [2]))
    store.close()
    rows = merge_results(tmp_path, planned)
    assert set(rows) == set(planned)
    assert [(r["decoder"], r["sample_index"]) for r in rows_of(tmp_path / "results.jsonl")] == \
        [(d, i) for i in range(3) for d in ("vanilla", "m")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl", "results.rank1.jsonl.damaged"]
    assert (tmp_path / "results.rank1.jsonl.damaged").read_text() == '{"decoder": "m", "ta\n'  # kept, set aside


def test_a_row_done_twice_with_different_results_is_refused(tmp_path):
    _write(tmp_path / "results.rank0.jsonl", [_row("vanilla", 0, [1])])
    _write(tmp_path / "results.rank1.jsonl", [_row("vanilla", 0, [9])])
    with pytest.raises(HarnessError, match="vanilla/t/t/0 was run twice"):
        merge_results(tmp_path, [("vanilla", "t", "t/0")])


def test_shards_split_samples_by_index_and_give_each_rank_its_gpu():
    worlds = [World(rank=r, world_size=3, local_rank=r) for r in range(3)]
    assert [[i for i in range(7) if w.owns(i)] for w in worlds] == [[0, 3, 6], [1, 4], [2, 5]]
    assert str(worlds[2].device(torch.device("cuda"))) == "cuda:2"
    assert str(worlds[2].device(torch.device("cpu"))) == "cpu"
    assert World().results_file == "results.jsonl" and worlds[1].results_file == "results.rank1.jsonl"
