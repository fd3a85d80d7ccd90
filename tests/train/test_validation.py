"""Validation during training: a metrics row, and best/ only for a real improvement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from rich.console import Console

from cognimamba.data.loader import TokenWindows
from cognimamba.model.loss import IGNORE_INDEX
from cognimamba.runs.metrics import read_metrics
from cognimamba.train.distributed import DistributedContext
from cognimamba.train.entry import TrainOptions
from cognimamba.train.setup import setup
from cognimamba.train.validation import validate
from tests.conftest import tiny_config


class AnswerlessWindows:
    """The val split of chat data whose windows hold no assistant token: every target is masked."""

    def __init__(self, windows: TokenWindows) -> None:
        self.windows = windows

    def eval_batches(self, *args: object, **kwargs: object) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for inputs, targets in self.windows.eval_batches(*args, **kwargs):
            yield inputs, torch.full_like(targets, IGNORE_INDEX)


def test_validation_with_no_trained_target_neither_logs_nor_wins_best(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    options = TrainOptions(config=tiny_config("train.max_steps=2"), data=tiny_data, out=run, show_progress=False)
    state = setup(options, torch.device("cpu"), DistributedContext(), Console(quiet=True))
    state.val_windows = AnswerlessWindows(state.val_windows)
    validate(state)
    assert state.counters.best_val_loss is None and state.stats.val_loss is None
    assert not (run / "best").exists()
    assert not (run / "metrics.jsonl").exists()  # no row, and no val_loss 0.0


def test_validation_logs_a_row_and_saves_best(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    options = TrainOptions(config=tiny_config("train.max_steps=2"), data=tiny_data, out=run, show_progress=False)
    state = setup(options, torch.device("cpu"), DistributedContext(), Console(quiet=True))
    validate(state)
    (row,) = [row for row in read_metrics(run) if "val_loss" in row]
    assert row["step"] == 0 and row["val_loss"] == state.counters.best_val_loss > 0
    assert (run / "best" / "model.safetensors").is_file()
