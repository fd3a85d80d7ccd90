"""Learning rate: linear warmup, then cosine decay to a floor; and the sequence-length curriculum."""

from __future__ import annotations

import math
from typing import NamedTuple

from cognimamba.config.schema import TrainConfig


class SchedulePosition(NamedTuple):
    """Where the schedule stands: the step and the progress (0 -> 1) within the span it runs over, the whole run
    or one phase of it (the objective says which)."""

    step: int
    progress: float


def learning_rate(step: int, progress: float, peak_lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """`progress` runs 0 -> 1 over training (by steps, or by wall-clock under --max-time)."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    progress = min(max(progress, 0.0), 1.0)
    min_lr = peak_lr * min_lr_ratio
    cosine = min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cosine * warmup


def scheduled_lr(settings: TrainConfig, position: SchedulePosition) -> float:
    """The learning rate at `position`, by the run's peak, warmup and floor."""
    return learning_rate(position.step, position.progress, settings.lr, settings.warmup_steps, settings.min_lr_ratio)


def curriculum_seq_len(progress: float, stages: list[int], fraction: float, max_seq_len: int) -> int:
    """Sequence-length warmup: walk through `stages` during the first `fraction` of training."""
    if not stages or fraction <= 0 or progress >= fraction:
        return max_seq_len
    index = min(int(progress / fraction * len(stages)), len(stages) - 1)
    return min(stages[index], max_seq_len)
