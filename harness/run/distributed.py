"""Scale-out on torch.distributed: under `torchrun` (or `accelerate launch`) each rank benchmarks its own shard.

Samples are sharded by index (sample i of a task goes to rank i % world_size), so a sample's vanilla reference row
and its method rows land on the same rank. Rank R streams its rows to `results.rank<R>.jsonl`; after a barrier,
rank 0 merges every rank file into `results.jsonl`, checks that each planned (decoder, task, sample) is there
exactly once, and removes the rank files. A rank that dies takes the whole launch down (torchrun stops the other
ranks); the same command then resumes from whatever every result file in the folder holds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from harness.core.errors import HarnessError
from harness.run.results import Key, read_rows, result_files, row_key, write_rows
from harness.schema import RESULTS_FILE

# Ranks reach the final barrier at different times (their shards take different times); a rank that dies makes
# torchrun stop the others, so the barrier need not time out early.
BARRIER_TIMEOUT = timedelta(hours=24)

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the launch: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def results_file(self) -> str:
        return f"results.rank{self.rank}.jsonl" if self.distributed else RESULTS_FILE

    def owns(self, sample_index: int) -> bool:
        return sample_index % self.world_size == self.rank

    def device(self, device: torch.device) -> torch.device:
        """Each rank of a CUDA launch gets its own GPU, cuda:LOCAL_RANK."""
        return torch.device("cuda", self.local_rank) if self.distributed and device.type == "cuda" else device

    def start(self, device: torch.device) -> None:
        """Joins the process group (gloo on CPU, nccl on CUDA); a no-op for a single process."""
        if not self.distributed:
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT)

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (on every rank)."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def on_rank0(self, fn: Callable[[], T]) -> T:
        """Runs `fn` on rank 0 only and hands its result to every rank; a HarnessError it raises is raised on every
        rank (all stop with the same line)."""
        if not self.distributed:
            return fn()
        shared: list[Any] = [None, None]  # result, error
        if self.rank == 0:
            try:
                shared[0] = fn()
            except HarnessError as exc:
                shared[1] = str(exc)
        dist.broadcast_object_list(shared, src=0)
        if shared[1] is not None:
            raise HarnessError(shared[1])
        return shared[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(device_ids=[self.local_rank] if dist.get_backend() == "nccl" else None)


def merge_results(out_dir: Path, planned: list[Key]) -> dict[Key, dict[str, Any]]:
    """Merges the rank files into `results.jsonl` (its earlier rows first, then the new ones in `planned` order),
    removes them, and returns all the rows; a planned row missing, or one row done twice, is a HarnessError."""
    rows: dict[Key, dict[str, Any]] = {}
    source: dict[Key, str] = {}
    for path in result_files(out_dir):
        for row in read_rows(path)[0]:
            key = row_key(row)
            if key in rows and rows[key] != row and source[key] != path.name:
                raise HarnessError(f"{'/'.join(key)} was run twice ({source[key]} and {path.name}): did two launches "
                                   f"write into {out_dir}? Delete one of the two rows, or use another --out")
            rows[key], source[key] = row, path.name
    missing = [key for key in planned if key not in rows]
    if missing:
        raise HarnessError(f"{len(missing)} of {len(planned)} planned rows are missing after the merge (first: "
                           f"{'/'.join(missing[0])}); rerun the same command to complete them")
    position = {key: i for i, key in enumerate(planned)}
    earlier = [row for key, row in rows.items() if source[key] == RESULTS_FILE]
    new = sorted((row for key, row in rows.items() if source[key] != RESULTS_FILE),
                 key=lambda row: position.get(row_key(row), len(position)))
    write_rows(out_dir / RESULTS_FILE, earlier + new)
    for path in result_files(out_dir):
        if path.name != RESULTS_FILE:
            path.unlink()
    return rows
