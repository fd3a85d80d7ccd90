"""Checkpoints and best/: each appears by one rename, so a kill at any moment leaves the previous one loadable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from cognimamba.runs.layout import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CONFIG,
    GENERATION,
    OPTIMIZER,
    STATE,
    TOKENIZER,
    weights_file,
)
from cognimamba.runs.manifest import verify_manifest, write_manifest
from cognimamba.runs.tensors import save_optimizer, save_weights
from cognimamba.system.faults import kill_point
from cognimamba.system.fileio import (
    DiskFullError,
    atomic_write,
    atomic_write_json,
    disk_errors,
    fsync_dir,
)


def recover_best(run: Path) -> None:
    """Finish an interrupted swap of best/ (see save_best)."""
    best, old = run / "best", run / ".best-old"
    if not best.exists() and old.exists():
        os.replace(old, best)


def save_checkpoint(run: Path, step: int, weights: dict[str, torch.Tensor], optimizer_payload: dict[str, Any],
                    trainer_state: dict[str, Any], keep_last: int, protected: set[str]) -> Path:
    """Write checkpoints/step-N as one directory rename, then publish its weights at the top level."""
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step-{step:08d}"
    staging = checkpoints / f".tmp-step-{step:08d}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        with disk_errors(f"checkpoint {final}"):
            save_weights(staging / weights_file(run), weights)
            kill_point("during-save", step)
            save_optimizer(staging / OPTIMIZER, optimizer_payload)
            atomic_write_json(staging / STATE, trainer_state)
            write_manifest(staging, [weights_file(run), OPTIMIZER, STATE])
            if final.exists():  # only a damaged one: an intact newer checkpoint would have been resumed from
                shutil.rmtree(final)
            os.replace(staging, final)
            fsync_dir(checkpoints)
            publish(run, final, trainer_state)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, DiskFullError):
            good = latest_checkpoint(run)
            raise DiskFullError(f"disk full while writing checkpoint {final}; free some space, then continue "
                                f"with --resume from the last good checkpoint ({good or 'none yet'}), which is "
                                "untouched") from error
        raise
    prune_checkpoints(checkpoints, keep_last, protected | {final.name})
    return final


def publish(run: Path, checkpoint: Path, trainer_state: dict[str, Any]) -> None:
    """Top-level model.safetensors mirrors the newest checkpoint (hard link where possible, else a copy)."""

    weights_name = weights_file(run)

    def link_or_copy(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(checkpoint / weights_name, tmp)
        except OSError:
            shutil.copyfile(checkpoint / weights_name, tmp)

    atomic_write(run / weights_name, link_or_copy)
    atomic_write_json(run / STATE, trainer_state)
    write_manifest(run, [weights_name, STATE, CONFIG, TOKENIZER, GENERATION, ADAPTER_CONFIG])


def prune_checkpoints(checkpoints: Path, keep_last: int, protected: set[str]) -> None:
    steps = sorted(path for path in checkpoints.glob("step-*") if path.is_dir())
    for path in steps[:-keep_last]:
        if path.name not in protected:
            shutil.rmtree(path, ignore_errors=True)
    for stale in checkpoints.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(run: Path) -> Path | None:
    """Newest checkpoint whose manifest checks out; a damaged newer one is skipped."""
    checkpoints = run / "checkpoints"
    if not checkpoints.is_dir():
        return None
    for path in sorted(checkpoints.glob("step-*"), reverse=True):
        if path.is_dir() and verify_manifest(path) is None:
            return path
    return None


def save_best(run: Path, weights: dict[str, torch.Tensor], trainer_state: dict[str, Any]) -> None:
    """Replace best/ with a complete run dir: build aside, then two renames (recover_best finishes a cut one)."""
    staging, best, old = run / ".best-tmp", run / "best", run / ".best-old"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        with disk_errors(f"{best} (the previous best/ is untouched)"):
            extra = [ADAPTER_CONFIG] if weights_file(run) == ADAPTER_WEIGHTS else []
            for name in (CONFIG, TOKENIZER, GENERATION, *extra):
                shutil.copyfile(run / name, staging / name)
            save_weights(staging / weights_file(run), weights)
            atomic_write_json(staging / STATE, trainer_state)
            write_manifest(staging, [weights_file(run), STATE, CONFIG, TOKENIZER, GENERATION, *extra])
            recover_best(run)
            if old.exists():
                shutil.rmtree(old)
            if best.exists():
                os.replace(best, old)
            kill_point("during-best-swap", int(trainer_state.get("step", 0)))
            os.replace(staging, best)
            fsync_dir(run)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
