"""Checkpoints keep every rank's CPU and CUDA random state, so dropout continues, not repeats, after --resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cognimamba.runs.tensors import load_optimizer, save_optimizer
from cognimamba.train.distributed import DistributedContext
from cognimamba.train.random_state import random_states, restore_random_state
from tests.train.two_ranks import run_on_two_ranks

ONE_PROCESS = DistributedContext()


def test_cuda_random_state_is_saved_and_restored(monkeypatch, tmp_path: Path) -> None:
    """On a GPU dropout draws from CUDA's generator; without it, masks after a resume repeat step 0's."""
    generator = {"state": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": generator["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": generator.update(state=state))
    gpu = torch.device("cuda", 0)
    save_optimizer(tmp_path / "optimizer.pt", random_states(ONE_PROCESS, gpu))
    generator["state"] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # training went on, then the process died
    restore_random_state(load_optimizer(tmp_path / "optimizer.pt"), ONE_PROCESS, gpu)
    assert generator["state"].tolist() == [1, 2, 3]


def test_cpu_random_state_continues_after_restore(tmp_path: Path) -> None:
    torch.manual_seed(3)
    save_optimizer(tmp_path / "optimizer.pt", random_states(ONE_PROCESS, torch.device("cpu")))
    expected = torch.rand(4)
    torch.manual_seed(99)
    restore_random_state(load_optimizer(tmp_path / "optimizer.pt"), ONE_PROCESS, torch.device("cpu"))
    assert torch.equal(torch.rand(4), expected)


def test_checkpoint_of_an_older_version_still_restores_the_cpu_state() -> None:
    torch.manual_seed(5)
    payload = {"torch_rng": torch.get_rng_state()}  # what checkpoints held before per-rank states
    expected = torch.rand(4)
    torch.manual_seed(99)
    restore_random_state(payload, ONE_PROCESS, torch.device("cpu"))
    assert torch.equal(torch.rand(4), expected)


def _save_then_restore(context: DistributedContext, tmp_path: Path) -> None:
    """Each rank seeds its own stream (seed + rank, as training does), checkpoints, draws, then resumes."""
    cpu = torch.device("cpu")
    torch.manual_seed(7 + context.rank)
    payload = random_states(context, cpu)  # every rank takes part; rank 0 writes the checkpoint
    if context.is_main:
        save_optimizer(tmp_path / "optimizer.pt", payload)
    drawn = torch.rand(4)
    torch.distributed.barrier()
    torch.manual_seed(1234)  # a new process: the seed alone would not continue the stream
    restore_random_state(load_optimizer(tmp_path / "optimizer.pt"), context, cpu)
    torch.save({"before": drawn, "after": torch.rand(4)}, tmp_path / f"rank{context.rank}.pt")


@pytest.mark.slow
def test_each_rank_resumes_its_own_random_stream(tmp_path: Path) -> None:
    """Under DDP rank 1 must not take rank 0's state, or both ranks draw the same dropout masks."""
    run_on_two_ranks(_save_then_restore, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for rank in ranks:
        assert torch.equal(rank["after"], rank["before"])
    assert not torch.equal(ranks[0]["after"], ranks[1]["after"])
