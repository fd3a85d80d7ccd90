"""What `train` is asked to do, and what it hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cognimamba.config.schema import Config

if TYPE_CHECKING:  # runs.lora imports torch; the CLI reads UNBOUNDED_STEPS from here before it needs torch
    from cognimamba.runs.lora import LoraSettings

UNBOUNDED_STEPS = 10**12  # max_steps under --max-time alone: the clock ends training


@dataclass
class TrainOptions:
    config: Config
    data: Path
    out: Path
    resume: bool = False
    init_from: Path | None = None
    show_progress: bool = True
    extra_run_info: dict[str, Any] = field(default_factory=dict)
    lora: LoraSettings | None = None  # with init_from: train LoRA adapters instead of all weights
    model_overrides: dict[str, Any] = field(default_factory=dict)  # model.* the user set; fine-tunes may change some
    # `section.field` names the user set (--config, --set): a fine-tune on chat data chooses the others to fit
    # the data (train/finetune_defaults.py). None: the config is taken as given.
    user_set: frozenset[str] | None = None


@dataclass
class TrainResult:
    run: Path
    step: int
    train_loss: float
    val_loss: float | None
    val_bits_per_byte: float | None
    elapsed: float
    tokens_seen: int
