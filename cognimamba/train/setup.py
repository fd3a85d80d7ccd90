"""Everything before the first step: data, model, optimizer, wrappers, run files and the live view."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from tokenizers import Tokenizer
from torch.nn.parallel import DistributedDataParallel

from cognimamba.config.schema import Config, parse_duration, validate
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.errors import CogniError
from cognimamba.model.build import training_flops_per_token
from cognimamba.model.linear import measure_matmul_peak
from cognimamba.model.tokenizer import load_tokenizer
from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.runs.layout import WEIGHTS
from cognimamba.runs.loading import write_run_files
from cognimamba.runs.lora import base_transformer, write_adapter_config
from cognimamba.system.hardware import compiled_if_possible, pick_dtype
from cognimamba.train.display import TrainingDisplay, TrainingStats, training_header
from cognimamba.train.distributed import DistributedContext
from cognimamba.train.fixed_point_phases import phases_for
from cognimamba.train.loggers import open_metrics_log
from cognimamba.train.model_source import StartingPoint, starting_point
from cognimamba.train.optim import build_optimizer
from cognimamba.train.options import TrainOptions
from cognimamba.train.random_state import restore_random_state
from cognimamba.train.state import Clock, TrainState
from cognimamba.train.step import autocast_for


def setup(options: TrainOptions, device: torch.device, context: DistributedContext, console: Console) -> TrainState:
    """The state the first step starts from: fresh, fine-tuned from --init-from, or resumed bit for bit."""
    config, settings, run = options.config, options.config.train, Path(options.out)
    data, tokenizer = open_data(options, config)
    torch.manual_seed(settings.seed + context.rank)
    start = starting_point(options, config, data, context.is_main)
    raw_model = start.model.to(device)
    base_transformer(raw_model).gradient_checkpointing = settings.grad_checkpointing
    compute_dtype = pick_dtype(settings.precision, device)
    optimizer = build_optimizer(raw_model, settings, device)
    scaler = torch.amp.GradScaler(device.type) if compute_dtype == torch.float16 else None
    if start.resume_payload is not None:
        optimizer.load_state_dict(start.resume_payload["optimizer"])
        if scaler is not None and start.resume_payload.get("scaler"):
            scaler.load_state_dict(start.resume_payload["scaler"])
    model, compile_problem = compiled_if_possible(wrap_distributed(raw_model, device, context), device,
                                                  settings.compile)
    train_windows = TokenWindows(data, "train", seed=settings.seed, rank=context.rank,
                                 random_offsets=config.data.chat_windows == "random")
    train_windows.check_fits(config.model.max_seq_len)
    train_windows.check_evaluation_fits(config.model.max_seq_len)  # chat at random offsets still validates whole
    phases = phases_for(options, raw_model, data, train_windows, device, context)  # model.arch = fixed_point
    if context.is_main:
        write_files(run, config, data, tokenizer, raw_model, start, options)
    max_time = parse_duration(settings.max_time, "train.max_time") if settings.max_time else None
    val_windows, val_note = validation_windows(data, config)
    notes = [start.note, window_fit_note(train_windows, config.model.max_seq_len), val_note,
             dropout_note(config, len(train_windows))]
    header = training_header(config, device, compute_dtype, raw_model, context.world_size, max_time, run,
                             compile_problem, [note for note in notes if note])
    counters = start.counters
    state = TrainState(
        config=config, run=run, data_path=Path(options.data), device=device, context=context, model=model,
        raw_model=raw_model, trains_adapters=start.lora is not None, optimizer=optimizer, scaler=scaler,
        autocast=autocast_for(device, compute_dtype), train_windows=train_windows,
        val_windows=val_windows, bytes_per_token=data.bytes_per_token("val"),
        counters=counters, max_time=max_time, clock=Clock(before=counters.elapsed),
        display=TrainingDisplay(console, header, total=max_time or settings.max_steps, by_time=max_time is not None,
                                enabled=options.show_progress and context.is_main),
        stats=TrainingStats(step=counters.step, total_steps=settings.max_steps, tokens_seen=counters.tokens_seen,
                            elapsed=counters.elapsed, val_loss=counters.last_val_loss),
        metrics=open_metrics_log(settings.logger, run, config, context.is_main),
        flops_per_token=training_flops_per_token(config.model, config.model.max_seq_len),
        peak_flops=measure_matmul_peak(device, compute_dtype, seconds=0.25) if options.show_progress else None,
        saved_steps={counters.step} if options.resume else set(), phases=phases)
    if start.resume_payload is not None:  # last, so nothing above (the matmul peak's randn) draws from it
        restore_random_state(start.resume_payload, context, device)
    return state


def open_data(options: TrainOptions, config: Config) -> tuple[DataDir, Tokenizer]:
    """The data dir, the vocabulary it sets, and the run dir's consent: fresh, or --resume."""
    run = Path(options.out)
    data = DataDir.open(options.data)
    tokenizer = load_tokenizer(data.tokenizer_path)
    config.model.vocab_size = tokenizer.get_vocab_size()
    config.data.path = str(Path(options.data).resolve())
    validate(config)
    if options.resume and not run.exists():
        raise CogniError(f"{run}: nothing to resume; start without --resume")
    if not options.resume and ((run / WEIGHTS).exists() or latest_checkpoint(run) is not None):
        raise CogniError(f"{run}: already holds a trained model; pass --resume to continue it or choose another --out")
    return data, tokenizer


def wrap_distributed(model: torch.nn.Module, device: torch.device, context: DistributedContext) -> torch.nn.Module:
    if not context.enabled:
        return model

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def validation_windows(data: DataDir, config: Config) -> tuple[TokenWindows | None, str]:
    """The val split, when it holds more than one sequence; for chat data, when some conversation fits a
    window (else validation is off, and the note says why, rather than failing at the first eval)."""
    if not data.has_split("val"):
        return None, ""
    windows = TokenWindows(data, "val")
    fit = windows.alignment(config.model.max_seq_len)
    if fit is not None and fit.skipped == fit.conversations:
        return None, (f"[yellow]validation off: no held-out conversation fits the {config.model.max_seq_len}-token "
                      "context; raise model.max_seq_len to validate[/]")
    return (windows if len(windows) > config.model.max_seq_len else None), ""


def dropout_note(config: Config, train_tokens: int) -> str:
    """Where train.dropout_ramp_passes schedules dropout, when it starts and what it rises to."""
    peak, ramp = config.model.dropout, config.train.dropout_ramp_passes
    if ramp <= 0 or peak <= 0:
        return ""
    return (f"[dim]dropout: none in the first pass over the {train_tokens:,} training tokens, then rising to "
            f"{peak:g} over {ramp:g} more (train.dropout_ramp_passes)[/]")


def window_fit_note(windows: TokenWindows, seq_len: int) -> str:
    """For chat data, how the training conversations fit the context (trimmed and skipped ones counted)."""
    fit = windows.alignment(seq_len)
    if fit is None:
        return ""
    if not windows.aligned:
        return "[dim]chat windows: at random offsets (data.chat_windows = random), not whole conversations[/]"
    return f"[dim]chat windows: {fit.describe(seq_len)}[/]"


def write_files(run: Path, config: Config, data: DataDir, tokenizer: Tokenizer, raw_model: torch.nn.Module,
                start: StartingPoint, options: TrainOptions) -> None:
    """config.json, tokenizer.json and friends (rank 0), and the adapter config for LoRA."""
    write_run_files(run, config, base_transformer(raw_model), tokenizer,
                    {"data_meta": data.meta, **options.extra_run_info, **start.run_info})
    if start.lora is not None:
        write_adapter_config(run, raw_model, start.run_info["lora"]["base_run"])
