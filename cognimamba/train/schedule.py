"""Learning rate: linear warmup, then cosine decay to a floor; dropout by the passes over the data; and the
sequence-length curriculum."""

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


# Dropout moves in steps of this size, so a compiled model (which guards on the rate) recompiles a few times at
# most, and the blocks are not rewritten every step.
DROPOUT_STEP = 0.01


def scheduled_dropout(peak: float, passes: float, ramp_passes: float) -> float:
    """The blocks' dropout after `passes` passes over the training data: none in the first (nothing has repeated
    yet, so there is nothing to memorise and dropout only slows learning), then rising linearly to `peak` over the
    next `ramp_passes`. `ramp_passes` 0: `peak` throughout.

    Why by the passes: ten minutes of the `cpu` profile on the 944 KB TinyStories slice (about 14 passes) wanted
    0.3 (none: 1.364 against 1.234 bits/byte), on the 2 MiB slice (about 6) 0.1 beat 0.3, so the dropout that
    pays rises with how often the data repeats (benchmarks/RESULTS.md, issue 32)."""
    if ramp_passes <= 0:
        return peak
    share = min(max((passes - 1.0) / ramp_passes, 0.0), 1.0)
    return round(peak * share / DROPOUT_STEP) * DROPOUT_STEP


def curriculum_seq_len(progress: float, stages: list[int], fraction: float, max_seq_len: int) -> int:
    """Sequence-length warmup: walk through `stages` during the first `fraction` of training."""
    if not stages or fraction <= 0 or progress >= fraction:
        return max_seq_len
    index = min(int(progress / fraction * len(stages)), len(stages) - 1)
    return min(stages[index], max_seq_len)
