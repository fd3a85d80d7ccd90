"""`cogni train`: data dir -> run dir."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cognimamba.cli.commands.common import ConfigFileOption, ProfileOption, SetOption, stderr

if TYPE_CHECKING:
    from cognimamba.config.schema import Config


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
    lora: Annotated[bool, typer.Option("--lora", help="with --init-from: train LoRA adapters only")] = False,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="rank of the LoRA matrices")] = 8,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha", help="LoRA scale = alpha / rank")] = 16.0,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", help="dropout on the LoRA input")] = 0.05,
    lora_targets: Annotated[str, typer.Option("--lora-targets", help="qkv,proj,gate_up,down or all")] = "all",
) -> None:
    """Train a Llama-style model with live progress; checkpoints, metrics and the best model go to the run dir."""
    from cognimamba.config.overrides import resolve_config
    from cognimamba.config.schema import parse_duration, set_field, validate
    from cognimamba.data.data_dir import DataDir
    from cognimamba.errors import CogniError
    from cognimamba.system.fileio import safe_child
    from cognimamba.system.paths import default_runs_dir

    extra = list(overrides or [])
    if resume and out is not None and (out / "config.json").is_file():
        config = _resumed_config(out, profile, config_file, extra)
    else:
        config = resolve_config(profile, config_file, extra)
    if max_steps is not None:
        set_field(config, "train.max_steps", max_steps, "--max-steps")
    if max_time is not None:
        set_field(config, "train.max_time", max_time, "--max-time")
        parse_duration(max_time, "--max-time")
        if max_steps is None:
            from cognimamba.train.options import UNBOUNDED_STEPS

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
        out = safe_child(default_runs_dir(), f"{config.profile}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and not out.is_dir():
        raise CogniError(f"--out {out}: is a file; give a directory for the run")
    DataDir.open(data_path).tokens("train")  # a wrong or damaged --data is reported before torch is imported
    from cognimamba.train.entry import TrainOptions, train

    lora_settings = None
    if lora:
        from cognimamba.runs.lora import LoraSettings, parse_targets

        lora_settings = LoraSettings(lora_rank, lora_alpha, lora_dropout, parse_targets(lora_targets))
    result = train(TrainOptions(config=config, data=data_path, out=out, resume=resume, init_from=init_from,
                                show_progress=not quiet, lora=lora_settings,
                                model_overrides=_model_overrides(config, config_file, extra),
                                user_set=_user_set(config_file, extra)), stderr())
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    from cognimamba.evaluation.report import write_report_safely

    write_report_safely(result.run, stderr())  # report.md; a failure is one yellow line, the run stands
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    bpb = f" ({result.val_bits_per_byte:.3f} bits/byte)" if result.val_bits_per_byte else ""
    stderr().print(f"[green]done[/]: {result.step} steps in {result.elapsed:.0f}s{val}{bpb} -> {result.run}\n"
                   f"next: cogni test-model {result.run}   |   cogni chat {result.run}", highlight=False)


def _model_overrides(config: Config, config_file: Path | None, overrides: list[str]) -> dict[str, object]:
    """model.* fields the user set (--config, --set): a fine-tune keeps its base's others."""
    from cognimamba.config.overrides import load_toml, parse_override

    names = set(load_toml(config_file).get("model", {})) if config_file else set()
    names |= {key.split(".", 1)[1] for key, _ in map(parse_override, overrides) if key.startswith("model.")}
    return {name: getattr(config.model, name) for name in names if hasattr(config.model, name)}


def _user_set(config_file: Path | None, overrides: list[str]) -> frozenset[str]:
    """`section.field` names set by --config or --set: a fine-tune on chat data chooses the rest to fit the data."""
    from cognimamba.config.overrides import load_toml, parse_override

    file_data = load_toml(config_file) if config_file else {}
    names = {f"{section}.{name}" for section, values in file_data.items() if isinstance(values, dict) for name in values}
    return frozenset(names | {key for key, _ in map(parse_override, overrides)})


def _resumed_config(run: Path, profile: str | None, config_file: Path | None, overrides: list[str]) -> Config:
    """A resumed run keeps the config it was trained with; --config and --set change it on top (e.g. max_steps)."""
    from cognimamba.config.overrides import load_toml, parse_override
    from cognimamba.config.schema import apply_mapping, set_field
    from cognimamba.errors import CogniError
    from cognimamba.runs.loading import read_config

    config, _ = read_config(run)
    if profile is not None and profile != config.profile:
        raise CogniError(f"--profile {profile}: {run} was trained with the {config.profile} profile; "
                         "resume without --profile")
    if config_file is not None:
        apply_mapping(config, load_toml(config_file), str(config_file))
    for text in overrides:
        set_field(config, *parse_override(text))
    return config
