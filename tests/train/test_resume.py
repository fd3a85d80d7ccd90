"""Exact resume: a run killed at any point and resumed with --resume reproduces the uninterrupted run bit for bit.

Every run here is a real `python -m cognimamba train` subprocess on a tiny model. The reference run and the
interrupted ones share one config; the resumed run is started from the run dir alone (`--out RUN --resume`), so
the config saved in the run dir, the checkpoint's optimizer and RNG state and the step-keyed data order are what
make the losses identical.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.runs.manifest import verify_manifest
from cognimamba.runs.metrics import read_metrics
from tests.conftest import TINY_MODEL, run_cli

MAX_STEPS = 60
# 32 windows of 64 a step pass over the tiny data's 45,928 tokens in 23 steps: the profile's dropout (0.3) is off
# in the first pass, then rises to 0.3 by step 45, so the kills land before and inside the ramp and a resume must
# restore the rate with the random state.
SETTINGS = [*TINY_MODEL, "train.log_every=1", "train.save_every=10", "train.eval_every=20", "train.keep_last=2",
            "train.micro_batch_size=32", "train.dropout_ramp_passes=1"]
# One thread: the same arithmetic in every process, and no oversubscription of a busy machine.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_args(data: Path, run: Path) -> list[str]:
    sets = [arg for item in SETTINGS for arg in ("--set", item)]
    return ["train", "--data", str(data), "--out", str(run), "--max-steps", str(MAX_STEPS), "--quiet", *sets]


def start_training(data: Path, run: Path, home: Path, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, **ENV, "COGNI_HOME": str(home), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    if fault:
        env["COGNI_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "cognimamba", *train_args(data, run)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended (rc {process.returncode}) before the moment to interrupt it: "
                        f"{process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("training never reached the moment to interrupt it")
        time.sleep(0.005)


def resume(run: Path, home: Path) -> subprocess.CompletedProcess:
    """What a user types after a crash: only the run dir, the rest comes from it."""
    result = run_cli("train", "--out", str(run), "--resume", "--quiet", env={**ENV, "COGNI_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return result


def train_losses(run: Path) -> dict[int, float]:
    rows = [row for row in read_metrics(run) if "train_loss" in row]
    steps = [row["step"] for row in rows]
    assert len(steps) == len(set(steps)), f"metrics.jsonl logs some steps twice: {steps}"
    return {row["step"]: row["train_loss"] for row in rows}


def assert_same_run(resumed: Path, reference: Path) -> None:
    assert train_losses(resumed) == train_losses(reference)  # exact float equality, every step from 1 to the end
    ours, theirs = load_file(str(resumed / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert json.loads((resumed / "trainer_state.json").read_text())["step"] == MAX_STEPS


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume_home")


@pytest.fixture(scope="module")
def reference(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, home: Path) -> Path:
    """The same run, never interrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli(*train_args(tiny_data, run), env={**ENV, "COGNI_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert sorted(train_losses(run)) == list(range(1, MAX_STEPS + 1))
    rates = [row["dropout"] for row in read_metrics(run) if "train_loss" in row]
    assert rates[:20] == [0.0] * 20 and 0.0 < rates[30] < 0.3 and rates[-1] == 0.3
    return run


def test_sigkill_between_checkpoints_then_resume_is_bit_exact(tiny_data: Path, reference: Path, home: Path,
                                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    killed = start_training(tiny_data, run, home, fault="kill-after-step@27")
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert max(train_losses(run)) == 27  # steps 21-27 were logged after the last checkpoint...
    assert latest_checkpoint(run).name == "step-00000020"
    resume(run, home)
    assert_same_run(run, reference)  # ...and are logged again, identically, not twice


def test_sigkill_from_outside_right_after_a_checkpoint_then_resume_is_bit_exact(
        tiny_data: Path, reference: Path, home: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = start_training(tiny_data, run, home)
    # The checkpoint dir appears by one rename; the kill lands while it is published and older ones pruned.
    wait_for(lambda: (run / "checkpoints" / "step-00000010").is_dir(), process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    checkpoint = latest_checkpoint(run)
    assert checkpoint is not None and verify_manifest(checkpoint) is None
    resume(run, home)
    assert_same_run(run, reference)


@pytest.mark.slow
def test_ctrl_c_then_the_printed_resume_command_is_bit_exact(tiny_data: Path, reference: Path, home: Path,
                                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = start_training(tiny_data, run, home)
    wait_for(lambda: (run / "metrics.jsonl").is_file() and len(read_metrics(run)) >= 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "continue with `cogni train" in lines[-1]
    command = shlex.split(lines[-1].split("`")[1])
    stopped = json.loads((run / "trainer_state.json").read_text())["step"]
    assert (run / "checkpoints" / f"step-{stopped:08d}").is_dir()  # saved exactly where it stopped
    result = run_cli(*command[1:], "--quiet", env={**ENV, "COGNI_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert_same_run(run, reference)
