"""Checkpoints and best/ from the training state; rank 0 writes, every rank takes part."""

from __future__ import annotations

from pathlib import Path

from cognimamba.runs.checkpoints import save_best, save_checkpoint
from cognimamba.train.random_state import random_states
from cognimamba.train.state import TrainState


def save(state: TrainState) -> Path | None:
    """checkpoints/step-N (weights, optimizer, scaler, random state, counters); the path on rank 0."""
    payload = {"optimizer": state.optimizer.state_dict(),
               "scaler": state.scaler.state_dict() if state.scaler else None,
               **random_states(state.context, state.device)}
    state.saved_steps.add(state.step)
    if not state.context.is_main:
        return None
    best_step = state.counters.best_step
    protected = {f"step-{best_step:08d}"} if best_step is not None else set()
    return save_checkpoint(state.run, state.step, state.weights_to_save(), payload, state.trainer_state(),
                           state.settings.keep_last, protected)


def save_best_model(state: TrainState) -> None:
    if state.context.is_main:
        save_best(state.run, state.weights_to_save(), state.trainer_state())
