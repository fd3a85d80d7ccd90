"""`cogni train`: data dir -> run dir."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cognimamba.commands.common import ConfigFileOption, ProfileOption, SetOption, stderr


def train_command(
    data: Annotated[Path | None, typer.Option("--data", help="prepared data dir (cogni prepare)")] = None,
    profile: ProfileOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="run dir (default: runs/PROFILE-TIMESTAMP)")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="optimizer steps to train")] = None,
    max_time: Annotated[str | None, typer.Option("--max-time", help="wall-clock budget, e.g. 10m; the schedule follows it")] = None,
    config_file: ConfigFileOption = None,
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last checkpoint")] = False,
    init_from: Annotated[Path | None, typer.Option("--init-from", help="start from this run's weights (fine-tuning)")] = None,
    logger: Annotated[str | None, typer.Option("--logger", help="also log to tensorboard or wandb")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no live progress")] = False,
) -> None:
    """Train a Llama-style model with live progress; checkpoints, metrics and the best model go to the run dir."""
    from cognimamba.config import resolve_config, set_field, validate
    from cognimamba.errors import CogniError
    from cognimamba.paths import default_runs_dir
    from cognimamba.train.loop import TrainOptions, train

    extra = list(overrides or [])
    config = resolve_config(profile, config_file, extra)
    if max_steps is not None:
        set_field(config, "train.max_steps", max_steps, "--max-steps")
    if max_time is not None:
        set_field(config, "train.max_time", max_time, "--max-time")
        if max_steps is None:
            from cognimamba.train.loop import UNBOUNDED_STEPS

            config.train.max_steps = UNBOUNDED_STEPS
    if logger is not None:
        set_field(config, "train.logger", logger, "--logger")
    if device is not None:
        set_field(config, "train.device", device, "--device")
    validate(config)
    data_path = data or (Path(config.data.path) if config.data.path else None)
    if data_path is None:
        raise CogniError("no data: pass --data DIR (from `cogni prepare`) or set data.path in the config")
    if out is None:
        if resume:
            raise CogniError("--resume needs --out RUN (the run dir to continue)")
        out = default_runs_dir() / f"{config.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = train(TrainOptions(config=config, data=data_path, out=out, resume=resume, init_from=init_from,
                                show_progress=not quiet), stderr())
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    bpb = f" ({result.val_bits_per_byte:.3f} bits/byte)" if result.val_bits_per_byte else ""
    stderr().print(f"[green]done[/]: {result.step} steps in {result.elapsed:.0f}s{val}{bpb} -> {result.run}\n"
                   f"next: cogni test-model {result.run}   |   cogni chat {result.run}", highlight=False)
