"""`train(options, console)`: the one entry point, from options to a finished (or safely stopped) run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from cognimamba.config.profiles import PROFILES
from cognimamba.config.schema import Config
from cognimamba.errors import CogniError
from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.system.hardware import pick_device
from cognimamba.system.provenance import provenance
from cognimamba.train.distributed import init_distributed, shutdown_distributed
from cognimamba.train.fit import fit
from cognimamba.train.options import UNBOUNDED_STEPS, TrainOptions, TrainResult
from cognimamba.train.setup import setup

__all__ = ["UNBOUNDED_STEPS", "TrainOptions", "TrainResult", "out_of_memory_advice", "train"]


def train(options: TrainOptions, console: Console | None = None) -> TrainResult:
    """Set up (fresh, --init-from or --resume), then fit; out of memory becomes one line of advice."""
    console = console or Console(stderr=True)
    config = options.config
    device = pick_device(config.train.device)
    context = init_distributed(device.type)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    # config.json keeps how the run was made (command line, code version, machine): the report card reads it
    options = replace(options, extra_run_info={"provenance": provenance(device, context.world_size),
                                               **options.extra_run_info})
    try:
        return fit(setup(options, device, context, console))
    except (torch.OutOfMemoryError, RuntimeError) as error:
        # CPU allocator failures are plain RuntimeErrors saying "can't allocate memory"
        if not isinstance(error, torch.OutOfMemoryError) and "can't allocate memory" not in str(error):
            raise
        advice = out_of_memory_advice(config, device)
        checkpoint = latest_checkpoint(Path(options.out))
        if checkpoint is not None:
            advice += f"; add --resume to continue from {checkpoint}"
        raise CogniError(advice) from error
    finally:
        shutdown_distributed(context)


def out_of_memory_advice(config: Config, device: torch.device) -> str:
    """What to change after an out-of-memory error, from the settings that did not fit."""
    settings, model = config.train, config.model
    tips = []
    if settings.micro_batch_size > 1:
        half = settings.micro_batch_size // 2
        accum = settings.grad_accum_steps * settings.micro_batch_size // half
        same = " (same tokens per step)" if settings.micro_batch_size % 2 == 0 else ""
        tips.append(f"--set train.micro_batch_size={half} --set train.grad_accum_steps={accum}{same}")
    if not settings.grad_checkpointing:
        tips.append("--set train.grad_checkpointing=true")
    names = list(PROFILES)
    if config.profile in names and names.index(config.profile) > 1:  # below 4gb only the cpu profile is left
        tips.append(f"--profile {names[names.index(config.profile) - 1]}")
    if model.max_seq_len > 64:
        tips.append(f"--set model.max_seq_len={model.max_seq_len // 2}")
    return (f"out of memory on {device} with the {config.profile} profile "
            f"(micro_batch_size={settings.micro_batch_size}, max_seq_len={model.max_seq_len}, "
            f"grad_checkpointing={str(settings.grad_checkpointing).lower()}); "
            f"try {' or '.join(tips) or 'a smaller model'}; `cogni profiles` shows what each profile needs")
