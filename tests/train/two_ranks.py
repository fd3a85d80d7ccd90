"""Run a function on two CPU processes joined by gloo, as torchrun would, in a few seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing

from cognimamba.train.distributed import DistributedContext

Worker = Callable[..., None]  # worker(context, tmp_path, *args); must be importable (module level)


def run_on_two_ranks(worker: Worker, tmp_path: Path, *args: object) -> None:
    torch.multiprocessing.spawn(_joined, args=(worker, tmp_path, args), nprocs=2)


def _joined(rank: int, worker: Worker, tmp_path: Path, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=rank, world_size=2)
    try:
        worker(DistributedContext(rank=rank, local_rank=rank, world_size=2), tmp_path, *args)
    finally:
        dist.destroy_process_group()
