"""What a run trains its model on, behind one seam that the loop (train/fit.py) calls the same way for every model.

An objective supplies each optimizer step's gradients and loss, where the learning-rate schedule stands, what the
live view says about it and the figures it adds to a log row. `NextToken` is the objective of every model with a
next-token head trained end to end (the transformer and its Mamba-2 layers); `FixedPoint` runs the fixed-point
model's two phases (train/fixed_point_phases.py), each with its own warmup and decay, and starts phase 2 when
training has come that far. A new training procedure is a new class here with the same five methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cognimamba.train.fixed_point_phases import FixedPointPhases
from cognimamba.train.schedule import SchedulePosition
from cognimamba.train.state import TrainState
from cognimamba.train.step import StepLoss, accumulate_gradients


class Objective(Protocol):
    def begin_step(self, state: TrainState, progress: float) -> bool:
        """Ready the coming step at `progress`; True when the loss from here on measures something new, so the
        smoothed loss on show starts over."""
        ...

    def schedule_position(self, step: int, progress: float) -> SchedulePosition: ...

    def step_loss(self, state: TrainState, seq_len: int) -> StepLoss:
        """One optimizer step's gradients (on every micro-batch) and its loss."""
        ...

    def label(self) -> str:
        """What the live view says about the objective now; empty for nothing to say."""
        ...

    def log_row(self) -> dict[str, Any]:
        """The objective's own figures for this step's metrics row."""
        ...


class NextToken:
    """Cross-entropy of each next token, on fresh training windows, over the whole run's schedule."""

    def begin_step(self, state: TrainState, progress: float) -> bool:
        return False

    def schedule_position(self, step: int, progress: float) -> SchedulePosition:
        return SchedulePosition(step, progress)

    def step_loss(self, state: TrainState, seq_len: int) -> StepLoss:
        settings = state.settings
        micro_batches = [state.train_windows.random_batch(state.step, micro, settings.micro_batch_size, seq_len,
                                                          state.device)
                         for micro in range(settings.grad_accum_steps)]
        return accumulate_gradients(state.model, micro_batches, state.autocast, state.scaler, state.context)

    def label(self) -> str:
        return ""

    def log_row(self) -> dict[str, Any]:
        return {}


@dataclass
class FixedPoint:
    """model.arch = fixed_point: phase 1 trains the contexts to agree, phase 2 the token head on them, frozen."""

    phases: FixedPointPhases

    def begin_step(self, state: TrainState, progress: float) -> bool:
        return self.phases.begin_step(state.step, progress, state.optimizer, state.display, state.metrics)

    def schedule_position(self, step: int, progress: float) -> SchedulePosition:
        return self.phases.schedule_position(step, progress)

    def step_loss(self, state: TrainState, seq_len: int) -> StepLoss:
        return self.phases.step_loss(state.step, seq_len, state.settings, state.autocast, state.scaler)

    def label(self) -> str:
        return self.phases.label()

    def log_row(self) -> dict[str, Any]:
        return self.phases.row()


def objective_for(state: TrainState) -> Objective:
    """The run's objective: the fixed-point model's phases where setup made them, else next-token loss."""
    return NextToken() if state.phases is None else FixedPoint(state.phases)
