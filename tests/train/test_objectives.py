"""The training loop's one seam: the run's objective supplies each step's loss, the schedule position and the log
figures, whatever the model; the schedule itself only schedules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from cognimamba.model.loss import summed_loss
from cognimamba.runs.layout import CONTEXT_CACHE
from cognimamba.train import context_cache
from cognimamba.train.distributed import DistributedContext
from cognimamba.train.objectives import FixedPoint, NextToken, objective_for
from cognimamba.train.options import TrainOptions
from cognimamba.train.schedule import SchedulePosition, learning_rate, scheduled_lr
from cognimamba.train.setup import setup
from cognimamba.train.state import TrainState
from tests.conftest import tiny_config

FIXED_POINT = ["model.arch=fixed_point", "model.fixed_point_preset=small", "model.fixed_point_context_dim=32",
               "model.fixed_point_hidden_dim=64", "model.fixed_point_phase1_fraction=0.5"]


def state_for(data: Path, run: Path, *settings: str) -> TrainState:
    config = tiny_config("train.max_steps=10", "model.dropout=0", *settings)
    options = TrainOptions(config=config, data=data, out=run, show_progress=False)
    return setup(options, torch.device("cpu"), DistributedContext(), Console(quiet=True))


def test_the_schedule_only_schedules() -> None:
    """Same position, same rate, and nothing else: warmup and decay by the run's settings."""
    settings = tiny_config().train
    for step, progress in [(0, 0.0), (3, 0.2), (40, 0.9)]:
        expected = learning_rate(step, progress, settings.lr, settings.warmup_steps, settings.min_lr_ratio)
        assert scheduled_lr(settings, SchedulePosition(step, progress)) == expected
    assert scheduled_lr(settings, SchedulePosition(0, 0.0)) == pytest.approx(settings.lr / settings.warmup_steps)


@pytest.mark.slow
def test_next_token_trains_the_step_windows_over_the_whole_run(tiny_data: Path, tmp_path: Path) -> None:
    state = state_for(tiny_data, tmp_path / "run")
    objective = objective_for(state)
    assert isinstance(objective, NextToken)
    assert objective.begin_step(state, 0.99) is False  # one objective from start to end
    assert objective.schedule_position(7, 0.3) == SchedulePosition(7, 0.3)

    settings = state.settings
    windows = [state.train_windows.random_batch(state.step, micro, settings.micro_batch_size, 64, state.device)
               for micro in range(settings.grad_accum_steps)]
    with torch.no_grad():
        expected_sum = sum(summed_loss(state.model, inputs, targets) for inputs, targets in windows)
    loss = objective.step_loss(state, 64)
    assert loss.mean == pytest.approx(float(expected_sum) / int(loss.tokens), rel=1e-5)
    assert all(parameter.grad is not None for parameter in state.raw_model.parameters())
    assert objective.label() == "" and objective.log_row() == {}


@pytest.mark.slow
def test_fixed_point_moves_to_phase_2_once_and_schedules_each_phase_on_its_own(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context_cache, "MAX_CACHED_BYTES", 32 * 64 * 32 * 2)  # a few windows: quick to solve
    run = tmp_path / "run"
    state = state_for(tiny_data, run, *FIXED_POINT)
    objective = objective_for(state)
    assert isinstance(objective, FixedPoint)

    assert objective.begin_step(state, 0.2) is False
    assert objective.schedule_position(2, 0.2) == SchedulePosition(2, pytest.approx(0.4))  # within phase 1's half
    loss = objective.step_loss(state, 64)
    assert loss.mean > 0
    assert objective.label().startswith("1/2 contexts:")
    assert {"phase", "convergence_rate", "mean_iterations", "fixed_point_loss"} <= set(objective.log_row())

    state.counters.step = 5
    assert objective.begin_step(state, 0.5) is True  # the switch: contexts frozen, solved and cached
    assert (run / CONTEXT_CACHE).is_file()
    assert objective.begin_step(state, 0.6) is False  # and only once
    position = objective.schedule_position(5, 0.5)
    assert position == SchedulePosition(0, 0.0)  # phase 2 warms up again from its first step
    assert scheduled_lr(state.settings, position) == pytest.approx(state.settings.lr / state.settings.warmup_steps)
    assert objective.schedule_position(7, 0.75) == SchedulePosition(2, pytest.approx(0.5))
    assert objective.label().startswith("2/2") and objective.log_row() == {"phase": 2}
    assert 0 < objective.step_loss(state, 64).mean < 10
