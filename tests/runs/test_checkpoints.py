"""Faults during training lose nothing: kills inside a save, Ctrl+C/SIGTERM, NaN losses, a full disk, out of memory.

Kills are real SIGKILLs of `python -m cognimamba train` subprocesses; COGNI_FAULT (cognimamba/faults.py) makes the
process kill itself at the worst moments, which an outside kill would only hit by luck. NaN, disk-full and
out-of-memory faults are injected in-process with the exceptions the real libraries raise.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors import SafetensorError

from cognimamba.config.profiles import get_profile
from cognimamba.errors import CogniError
from cognimamba.model.transformer import LanguageModel
from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.runs.loading import load_run
from cognimamba.runs.manifest import verify_manifest
from cognimamba.runs.metrics import read_metrics
from cognimamba.runs.tensors import load_optimizer, read_weights
from cognimamba.system.fileio import DiskFullError, disk_errors, is_disk_full
from cognimamba.train.entry import TrainOptions, out_of_memory_advice, train
from tests.conftest import TINY_MODEL, run_cli, tiny_config

ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cli_env(home: Path, fault: str | None = None) -> dict[str, str]:
    return {**ENV, "COGNI_HOME": str(home), **({"COGNI_FAULT": fault} if fault else {})}


def train_args(data: Path, run: Path, max_steps: int, *settings: str) -> list[str]:
    sets = [arg for item in [*TINY_MODEL, *settings] for arg in ("--set", item)]
    return ["train", "--data", str(data), "--out", str(run), "--max-steps", str(max_steps), "--quiet", *sets]


def assert_loadable_checkpoint(checkpoint: Path) -> None:
    assert verify_manifest(checkpoint) is None
    read_weights(checkpoint / "model.safetensors")
    assert load_optimizer(checkpoint / "optimizer.pt")["optimizer"]["state"]


def no_leftovers(run: Path) -> list[str]:
    """Staging dirs and temporary files a crash may leave; a later save or resume must clean them up."""
    return sorted(str(path.relative_to(run)) for path in run.rglob("*")
                  if path.name.startswith((".tmp-", ".best-")) or path.name.endswith(".tmp"))


@pytest.fixture
def one_thread():
    """In-process training on one thread, like the subprocesses: fast and undisturbed on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_in_process(data: Path, run: Path, *settings: str, resume: bool = False):
    config = tiny_config(*settings)
    return train(TrainOptions(config=config, data=data, out=run, resume=resume, show_progress=False),
                 Console(quiet=True))


# ------------------------------------------------------------------------------------------- kills inside saves


@pytest.mark.slow
def test_kill_inside_a_checkpoint_save_leaves_the_previous_one_loadable(tiny_data: Path, tmp_path: Path) -> None:
    run, home = tmp_path / "run", tmp_path / "home"
    args = train_args(tiny_data, run, 30, "train.save_every=10", "train.eval_every=10")
    killed = run_cli(*args, env=cli_env(home, "kill-during-save@20"))
    assert killed.returncode == -signal.SIGKILL
    # Killed with step 20's weights half-published in its staging dir: step 10 is still the newest checkpoint.
    assert (run / "checkpoints" / ".tmp-step-00000020" / "model.safetensors").is_file()
    assert not (run / "checkpoints" / "step-00000020").exists()
    assert latest_checkpoint(run) == run / "checkpoints" / "step-00000010"
    assert_loadable_checkpoint(run / "checkpoints" / "step-00000010")
    assert load_run(run).info["format_version"] == 1  # the top-level model is step 10's
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 10
    assert load_run(run / "best").model is not None
    resumed = run_cli("train", "--out", str(run), "--resume", "--quiet", env=cli_env(home))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 30
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000020", "step-00000030"]
    assert no_leftovers(run) == []


@pytest.mark.slow
def test_kill_between_the_renames_of_best_loses_neither_best_nor_checkpoints(tiny_data: Path, tmp_path: Path) -> None:
    run, home = tmp_path / "run", tmp_path / "home"
    # eval at 5 and 10: early in training val loss always improves, so best/ is replaced at step 10.
    args = train_args(tiny_data, run, 20, "train.save_every=5", "train.eval_every=5")
    killed = run_cli(*args, env=cli_env(home, "kill-during-best-swap@10"))
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "best").exists() and (run / ".best-old").is_dir()  # the worst moment: best/ moved aside
    assert_loadable_checkpoint(latest_checkpoint(run))  # keep_last checkpoints are intact...
    best = load_run(run / "best")  # ...and loading best/ finishes the swap: the previous best comes back
    assert (run / "best").is_dir() and not (run / ".best-old").exists()
    assert json.loads((run / "best" / "trainer_state.json").read_text())["step"] == 5
    assert best.model is not None
    resumed = run_cli("train", "--out", str(run), "--resume", "--quiet", env=cli_env(home))
    assert resumed.returncode == 0, resumed.stderr
    assert verify_manifest(run / "best") is None
    assert no_leftovers(run) == []


# ------------------------------------------------------------------------------------------------ signals


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code", "name"), [(signal.SIGINT, 130, "Ctrl+C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_and_sigterm_save_a_checkpoint_and_say_how_to_resume(tiny_data: Path, tmp_path: Path, signum: int,
                                                                    code: int, name: str) -> None:
    run = tmp_path / "run"
    env = {**os.environ, **cli_env(tmp_path / "home"), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    args = train_args(tiny_data, run, 1_000_000, "train.log_every=1")
    process = subprocess.Popen([sys.executable, "-m", "cognimamba", *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((run / "metrics.jsonl").is_file() and len(read_metrics(run)) >= 2):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.01)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert f"{name}: stopped at step" in lines[0]
    assert f"continue with `cogni train --data {tiny_data} --out {run} --resume`" in lines[0]
    assert "Traceback" not in stderr
    step = json.loads((run / "trainer_state.json").read_text())["step"]
    assert latest_checkpoint(run) == run / "checkpoints" / f"step-{step:08d}"
    assert_loadable_checkpoint(latest_checkpoint(run))


# ------------------------------------------------------------------------------------------ NaN and inf


@pytest.fixture
def poisoned_steps(monkeypatch: pytest.MonkeyPatch):
    """Make chosen training steps (1-based, as in metrics.jsonl) produce a NaN loss or an infinite gradient."""
    plan: dict[str, set[int]] = {"nan_loss": set(), "inf_grad": set()}
    calls = {"train": 0}
    forward = LanguageModel.forward

    def poisoned(self, *args, **kwargs):
        logits = forward(self, *args, **kwargs)
        if not self.training:
            return logits
        calls["train"] += 1  # one micro-batch per step in these runs
        if calls["train"] in plan["nan_loss"]:
            return logits * float("nan")
        if calls["train"] in plan["inf_grad"]:
            logits.register_hook(lambda grad: grad * float("inf"))  # the loss stays finite
        return logits

    monkeypatch.setattr(LanguageModel, "forward", poisoned)
    return plan


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tiny_data: Path, tmp_path: Path, one_thread,
                                                                     poisoned_steps) -> None:
    poisoned_steps["nan_loss"].add(13)
    run = tmp_path / "run"
    with pytest.raises(CogniError) as caught:
        train_in_process(tiny_data, run, "train.max_steps=30", "train.save_every=10")
    message = str(caught.value)
    assert f"loss became nan at step 13; last good checkpoint: {run / 'checkpoints' / 'step-00000010'}" in message
    assert "train.max_bad_batches" in message and "\n" not in message
    assert_loadable_checkpoint(run / "checkpoints" / "step-00000010")


def test_bad_batches_are_skipped_up_to_the_limit(tiny_data: Path, tmp_path: Path, one_thread, poisoned_steps) -> None:
    poisoned_steps["nan_loss"].add(3)
    poisoned_steps["inf_grad"].add(7)  # finite loss, infinite gradient: must not reach the weights either
    run = tmp_path / "run"
    result = train_in_process(tiny_data, run, "train.max_steps=12", "train.max_bad_batches=2", "train.log_every=1")
    assert result.step == 12 and math.isfinite(result.train_loss)
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["bad_batches"] == 2
    logged = [row["step"] for row in read_metrics(run) if "train_loss" in row]
    assert logged == [1, 2, 4, 5, 6, 8, 9, 10, 11, 12]
    weights = read_weights(run / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_an_infinite_gradient_is_a_bad_batch_even_with_a_finite_loss(tiny_data: Path, tmp_path: Path, one_thread,
                                                                     poisoned_steps) -> None:
    poisoned_steps["inf_grad"].add(4)
    with pytest.raises(CogniError, match=r"gradient norm became (inf|nan) at step 4; last good checkpoint: none"):
        train_in_process(tiny_data, tmp_path / "run", "train.max_steps=12")


# -------------------------------------------------------------------------------------------------- full disk


def full_disk_safetensors(tensors, filename, metadata=None):
    """What safetensors does on a full disk: part of the file written, then this error."""
    Path(filename).write_bytes(b"\0" * 1000)
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def full_disk_torch_save(obj, f, *args, **kwargs):
    """What torch.save into a Python file does on a full disk: the OSError surfaces as its context."""
    f.write(b"PK\x03\x04" + b"\0" * 1000)
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


@pytest.mark.parametrize("writer", ["weights", "optimizer"])
def test_full_disk_during_a_checkpoint_is_reported_and_the_previous_one_survives(
        tiny_data: Path, tmp_path: Path, one_thread, monkeypatch: pytest.MonkeyPatch, writer: str) -> None:
    run = tmp_path / "run"
    settings = ("train.save_every=10", "train.eval_every=0")
    train_in_process(tiny_data, run, "train.max_steps=10", *settings)
    before = (run / "checkpoints" / "step-00000010" / "model.safetensors").read_bytes()
    with monkeypatch.context() as patch:
        if writer == "weights":
            patch.setattr("cognimamba.runs.tensors.save_file", full_disk_safetensors)
        else:
            patch.setattr(torch, "save", full_disk_torch_save)
        with pytest.raises(DiskFullError) as caught:
            train_in_process(tiny_data, run, "train.max_steps=20", *settings, resume=True)
    message = str(caught.value)
    assert message.startswith(f"disk full while writing checkpoint {run / 'checkpoints' / 'step-00000020'}")
    assert f"--resume from the last good checkpoint ({run / 'checkpoints' / 'step-00000010'})" in message
    assert_loadable_checkpoint(run / "checkpoints" / "step-00000010")
    assert (run / "checkpoints" / "step-00000010" / "model.safetensors").read_bytes() == before
    assert load_run(run) is not None and no_leftovers(run) == []  # the half-written files are gone, space freed
    result = train_in_process(tiny_data, run, "train.max_steps=20", *settings, resume=True)  # space is back
    assert result.step == 20


def test_disk_full_is_recognised_through_library_wrappers() -> None:
    """The shapes measured on a full tmpfs: safetensors' SafetensorError and torch.save's RuntimeError."""
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    with pytest.raises(RuntimeError) as caught:
        full_disk_torch_save(None, open(os.devnull, "wb"))  # noqa: SIM115
    assert is_disk_full(caught.value)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("unexpected pos 704 vs 598"))  # without the OSError behind it
    with pytest.raises(PermissionError), disk_errors("x"):  # other errors pass through untouched
        raise PermissionError(errno.EACCES, "Permission denied")


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A real file system that can be filled up: a tmpfs, where this machine lets us mount one (root, Linux)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def resize(mount_point: Path, size_bytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_bytes // 1024}k", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_really_full_disk_is_reported_and_the_previous_checkpoint_survives(tiny_data: Path, tmp_path: Path,
                                                                             small_tmpfs: Path) -> None:
    run, home = small_tmpfs / "run", tmp_path / "home"
    settings = ("train.save_every=10", "train.eval_every=0")
    first = run_cli(*train_args(tiny_data, run, 10, *settings), env=cli_env(home))
    assert first.returncode == 0, first.stderr
    stat = os.statvfs(small_tmpfs)
    used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    weights = (run / "model.safetensors").stat().st_size
    resize(small_tmpfs, used + weights // 2)  # room for metrics rows, not for another checkpoint
    before = (run / "checkpoints" / "step-00000010" / "optimizer.pt").read_bytes()
    full = run_cli(*train_args(tiny_data, run, 20, *settings), "--resume", env=cli_env(home))
    assert full.returncode == 2
    assert "disk full while writing checkpoint" in full.stderr and "step-00000010" in full.stderr
    assert "Traceback" not in full.stderr and len(full.stderr.strip().splitlines()) == 1
    assert_loadable_checkpoint(run / "checkpoints" / "step-00000010")
    assert (run / "checkpoints" / "step-00000010" / "optimizer.pt").read_bytes() == before
    assert no_leftovers(run) == []  # the half-written checkpoint is gone: the space is free again
    assert load_run(run) is not None


# -------------------------------------------------------------------------------------------- out of memory


def test_cuda_out_of_memory_names_smaller_settings(tiny_data: Path, tmp_path: Path, one_thread,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    forward = LanguageModel.forward
    calls = {"train": 0}

    def out_of_memory(self, *args, **kwargs):
        if self.training:
            calls["train"] += 1
            if calls["train"] == 13:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total)")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LanguageModel, "forward", out_of_memory)
    run = tmp_path / "run"
    with pytest.raises(CogniError) as caught:
        train_in_process(tiny_data, run, "train.max_steps=30", "train.save_every=10")
    message = str(caught.value)
    assert message.startswith("out of memory on cpu with the cpu profile (micro_batch_size=4, max_seq_len=64")
    assert "--set train.micro_batch_size=2 --set train.grad_accum_steps=2 (same tokens per step)" in message
    assert "--set train.grad_checkpointing=true" in message
    assert f"add --resume to continue from {run / 'checkpoints' / 'step-00000010'}" in message
    assert "\n" not in message


def test_out_of_memory_advice_for_gpu_profiles() -> None:
    advice = out_of_memory_advice(get_profile("8gb"), torch.device("cuda"))
    assert "--set train.micro_batch_size=2 --set train.grad_accum_steps=8" in advice
    assert "--set train.grad_checkpointing=true" in advice and "--profile 6gb" in advice
    advice = out_of_memory_advice(get_profile("12gb"), torch.device("cuda"))
    assert "--set train.grad_checkpointing=true" not in advice  # already on: not suggested again
    assert "--profile 8gb" in advice and "--set model.max_seq_len=512" in advice


def test_cpu_allocation_failure_is_reported_like_out_of_memory(tiny_data: Path, tmp_path: Path, one_thread,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(self, *args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 68719476736 bytes")

    monkeypatch.setattr(LanguageModel, "forward", no_memory)
    with pytest.raises(CogniError, match=r"^out of memory on cpu"):
        train_in_process(tiny_data, tmp_path / "run", "train.max_steps=5")
