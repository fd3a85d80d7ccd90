"""Two CPU processes under torchrun (gloo): the multi-GPU path users take when they outgrow one card."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.runs.metrics import read_metrics
from cognimamba.runs.tensors import load_optimizer
from tests.conftest import TINY_MODEL


@pytest.mark.slow
def test_torchrun_two_processes(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    settings = [arg for item in TINY_MODEL for arg in ("--set", item)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "cognimamba", "train", "--data", str(tiny_data), "--max-steps", "6", "--out", str(run),
               "--quiet", *settings, "--set", "train.eval_every=3", "--set", "train.save_every=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COGNI_HOME": str(tmp_path / "home")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["world_size"] == 2
    rows = [r for r in read_metrics(run) if "train_loss" in r]
    # Both ranks contribute: each optimizer step sees 2 x micro-batch x seq tokens.
    assert rows[-1]["tokens"] == rows[-1]["step"] * 2 * 4 * 64
    assert len([r for r in read_metrics(run) if "val_loss" in r]) == 2  # rank 0 alone writes metrics
    # The checkpoint keeps each rank's own random stream, so a resume does not give both rank 0's masks.
    states = load_optimizer(latest_checkpoint(run) / "optimizer.pt")["random_states"]
    assert len(states) == 2 and not torch.equal(states[0]["cpu"], states[1]["cpu"])
