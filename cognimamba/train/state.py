"""Everything training carries from step to step, in one dataclass passed along (no closures)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cognimamba.config.schema import Config, TrainConfig
from cognimamba.data.loader import TokenWindows
from cognimamba.runs.lora import adapter_state
from cognimamba.runs.tensors import model_state
from cognimamba.train.display import TrainingDisplay, TrainingStats
from cognimamba.train.distributed import DistributedContext
from cognimamba.train.fixed_point_phases import FixedPointPhases
from cognimamba.train.loggers import MetricsLog


@dataclass
class Counters:
    """What trainer_state.json holds: enough to continue at the very step."""

    step: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0  # seconds trained before this process started
    best_val_loss: float | None = None
    best_step: int | None = None
    last_val_loss: float | None = None
    bad_batches: int = 0

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Counters:
        names = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in names})


@dataclass
class Clock:
    """Training seconds across resumes: those before this process plus this process's own."""

    before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def total(self) -> float:
        return self.before + time.perf_counter() - self.started


@dataclass
class Throughput:
    """Tokens since the last log row, for tokens/sec over the log interval."""

    started: float = field(default_factory=time.perf_counter)
    tokens: int = 0

    def take(self) -> float:
        now = time.perf_counter()
        rate = self.tokens / max(now - self.started, 1e-9)
        self.started, self.tokens = now, 0
        return rate


@dataclass
class TrainState:
    config: Config
    run: Path
    data_path: Path
    device: torch.device
    context: DistributedContext
    model: nn.Module  # what the step calls: DDP- and torch.compile-wrapped where they apply
    raw_model: nn.Module  # the parameters themselves (LoRA-wrapped when training adapters)
    trains_adapters: bool
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: contextlib.AbstractContextManager
    train_windows: TokenWindows
    val_windows: TokenWindows | None
    bytes_per_token: float
    counters: Counters
    display: TrainingDisplay
    stats: TrainingStats
    metrics: MetricsLog
    max_time: float | None  # seconds, under --max-time
    flops_per_token: float
    peak_flops: float | None  # measured matmul FLOP/s, for MFU
    clock: Clock = field(default_factory=Clock)
    throughput: Throughput = field(default_factory=Throughput)
    evaluated_steps: set[int] = field(default_factory=set)
    saved_steps: set[int] = field(default_factory=set)
    phases: FixedPointPhases | None = None  # model.arch = fixed_point: its two phases drive each step
    dropout: float | None = None  # the blocks' rate now, where train.dropout_ramp_passes schedules it
    smoothed_loss: float | None = None
    last_loss: float = float("nan")

    @property
    def settings(self) -> TrainConfig:
        return self.config.train

    @property
    def step(self) -> int:
        return self.counters.step

    def weights_to_save(self) -> dict[str, torch.Tensor]:
        return adapter_state(self.raw_model) if self.trains_adapters else model_state(self.raw_model)

    def trainer_state(self) -> dict[str, Any]:
        """trainer_state.json as of now."""
        return {**asdict(self.counters), "elapsed": self.clock.total(), "world_size": self.context.world_size}
