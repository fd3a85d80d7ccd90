"""The training loop: plain PyTorch, one function, readable top to bottom."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console

from cognimamba.config import Config, parse_duration, validate
from cognimamba.console import human_count
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import IGNORE_INDEX, TokenWindows
from cognimamba.errors import CogniError
from cognimamba.evaluate import evaluate_loss
from cognimamba.hardware import measure_matmul_peak, peak_memory_bytes, pick_device, pick_dtype
from cognimamba.model import Transformer, flops_per_token, num_parameters
from cognimamba.run_dir import (OPTIMIZER, STATE, WEIGHTS, append_metrics, latest_checkpoint, load_optimizer,
                                load_state_into, model_state, read_config, read_weights, save_best, save_checkpoint,
                                write_run_files)
from cognimamba.tokenizer import load_tokenizer
from cognimamba.train.display import TrainingDisplay, TrainingStats
from cognimamba.train.distributed import agree_max, init_distributed, shutdown_distributed
from cognimamba.train.optim import build_optimizer
from cognimamba.train.schedule import curriculum_seq_len, learning_rate

UNBOUNDED_STEPS = 10**12


class TrainingInterrupted(CogniError):
    """Ctrl+C or SIGTERM: a checkpoint was saved; exit 130 / 143."""


@dataclass
class TrainOptions:
    config: Config
    data: Path
    out: Path
    resume: bool = False
    init_from: Path | None = None
    show_progress: bool = True
    extra_run_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    run: Path
    step: int
    train_loss: float
    val_loss: float | None
    val_bits_per_byte: float | None
    elapsed: float
    tokens_seen: int


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so saving never races training."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second Ctrl+C stops at once
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _resume_state(run: Path, config: Config) -> tuple[Path, dict[str, Any]]:
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise CogniError(f"{run}: no intact checkpoint to resume from; start without --resume")
    saved_config, _ = read_config(run)
    if saved_config.model != config.model:
        raise CogniError(f"{run}: the model settings differ from the checkpoint's; resume with the same "
                         "--profile/--config, or start a new --out")
    from cognimamba.fileio import read_json

    return checkpoint, read_json(checkpoint / STATE, "trainer state")


def train(options: TrainOptions, console: Console | None = None) -> TrainResult:
    console = console or Console(stderr=True)
    config = options.config
    settings = config.train
    device = pick_device(settings.device)
    context = init_distributed(device.type)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    try:
        return _train(options, config, device, context, console)
    finally:
        shutdown_distributed(context)


def _train(options: TrainOptions, config: Config, device: torch.device, context: Any, console: Console) -> TrainResult:
    settings = config.train
    run = Path(options.out)
    data = DataDir.open(options.data)
    tokenizer = load_tokenizer(data.tokenizer_path)
    config.model.vocab_size = tokenizer.get_vocab_size()
    config.data.path = str(Path(options.data).resolve())
    validate(config)
    if options.resume and not run.exists():
        raise CogniError(f"{run}: nothing to resume; start without --resume")
    if not options.resume and (run / WEIGHTS).exists():
        raise CogniError(f"{run}: already holds a trained model; pass --resume to continue it or choose another --out")

    torch.manual_seed(settings.seed + context.rank)
    model = Transformer(config.model)
    state: dict[str, Any] = {"step": 0, "tokens_seen": 0, "elapsed": 0.0, "best_val_loss": None,
                             "best_step": None, "last_val_loss": None, "bad_batches": 0}
    resume_payload = None
    if options.resume:
        checkpoint, state = _resume_state(run, config)
        load_state_into(model, read_weights(checkpoint / WEIGHTS), checkpoint / WEIGHTS)
        resume_payload = load_optimizer(checkpoint / OPTIMIZER)
    elif options.init_from is not None:
        from cognimamba.run_dir import load_run

        base = load_run(options.init_from)
        if base.config.model.vocab_size != config.model.vocab_size:
            raise CogniError(f"{options.init_from}: its vocab ({base.config.model.vocab_size}) differs from the "
                             f"data's tokenizer ({config.model.vocab_size}); prepare the data with "
                             f"--tokenizer {options.init_from}/tokenizer.json")
        config.model = base.config.model
        model = Transformer(config.model)
        model.load_state_dict(base.model.state_dict())

    model.to(device)
    model.gradient_checkpointing = settings.grad_checkpointing
    compute_dtype = pick_dtype(settings.precision, device)
    optimizer = build_optimizer(model, settings, device)
    scaler = torch.amp.GradScaler(device.type) if compute_dtype == torch.float16 else None
    if resume_payload is not None:
        optimizer.load_state_dict(resume_payload["optimizer"])
        if scaler is not None and resume_payload.get("scaler"):
            scaler.load_state_dict(resume_payload["scaler"])
        torch.set_rng_state(resume_payload["torch_rng"])
    raw_model = model
    if context.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if settings.compile:
        model = torch.compile(model)

    train_windows = TokenWindows(data, "train", seed=settings.seed, rank=context.rank)
    train_windows.check_fits(config.model.max_seq_len)
    val_windows = TokenWindows(data, "val") if data.has_split("val") else None
    if val_windows is not None and len(val_windows) <= config.model.max_seq_len:
        val_windows = None
    bytes_per_token = data.bytes_per_token("val")
    autocast = _autocast(device, compute_dtype)

    max_time = parse_duration(settings.max_time, "train.max_time") if settings.max_time else None
    max_steps = settings.max_steps
    tokens_per_micro = settings.micro_batch_size * config.model.max_seq_len
    total_params, non_embedding = num_parameters(raw_model)
    trainable = sum(p.numel() for p in raw_model.parameters() if p.requires_grad)
    flops_token = flops_per_token(config.model, config.model.max_seq_len)
    peak_flops = measure_matmul_peak(device, compute_dtype, seconds=0.25) if options.show_progress else None

    if context.is_main:
        write_run_files(run, config, raw_model, tokenizer, {"data_meta": data.meta, **options.extra_run_info})
    budget = f"{max_time:.0f}s" if max_time else f"{max_steps} steps"
    header = (f"[bold]cogni train[/] {config.profile} profile on {device.type} ({str(compute_dtype).replace('torch.', '')}): "
              f"{human_count(total_params)} parameters ({human_count(non_embedding)} non-embedding, "
              f"{human_count(trainable)} trainable), {human_count(tokens_per_micro * settings.grad_accum_steps * context.world_size)} "
              f"tokens/step, {budget} -> {run}")
    display = TrainingDisplay(console, header, total=max_time or max_steps, by_time=max_time is not None,
                              enabled=options.show_progress and context.is_main)
    stats = TrainingStats(step=state["step"], total_steps=max_steps, tokens_seen=state["tokens_seen"],
                          elapsed=state["elapsed"], val_loss=state.get("last_val_loss"))
    logger = _open_logger(settings.logger, run, config) if context.is_main else None

    def snapshot_state() -> dict[str, Any]:
        return {**state, "step": step, "tokens_seen": stats.tokens_seen, "elapsed": elapsed_total(),
                "world_size": context.world_size}

    def save(reason: str) -> Path | None:
        if not context.is_main:
            return None
        protected = {f"step-{state['best_step']:08d}"} if state.get("best_step") is not None else set()
        payload = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                   "torch_rng": torch.get_rng_state()}
        return save_checkpoint(run, step, model_state(raw_model), payload, snapshot_state(),
                               settings.keep_last, protected)

    def run_eval() -> None:
        if val_windows is None:
            return
        result = evaluate_loss(raw_model, val_windows.eval_batches(settings.eval_batches, settings.micro_batch_size,
                                                                   config.model.max_seq_len, device), autocast)
        stats.val_loss = state["last_val_loss"] = result.loss
        stats.val_bits_per_byte = result.bits_per_byte(bytes_per_token)
        row = {"step": step, "val_loss": result.loss, "val_perplexity": result.perplexity,
               "val_bits_per_byte": stats.val_bits_per_byte, "elapsed": elapsed_total()}
        if context.is_main:
            append_metrics(run, row)
            if logger:
                logger(row)
        if state["best_val_loss"] is None or result.loss < state["best_val_loss"]:
            state["best_val_loss"], state["best_step"] = result.loss, step
            if context.is_main:
                save_best(run, model_state(raw_model), snapshot_state())

    step = state["step"]
    start_time = time.perf_counter()
    elapsed_before = state["elapsed"]

    def elapsed_total() -> float:
        return elapsed_before + time.perf_counter() - start_time

    def progress_fraction() -> float:
        by_steps = step / max_steps
        by_time = elapsed_total() / max_time if max_time else 0.0
        return agree_max(max(by_steps, by_time), context, device)

    model.train()
    window_start, window_tokens = time.perf_counter(), 0
    smoothed: float | None = None
    last_loss = float("nan")
    with StopSignal() as stop, display:
        while True:
            progress = progress_fraction()
            if progress >= 1.0 or step >= max_steps:
                break
            lr = learning_rate(step, progress, settings.lr, settings.warmup_steps, settings.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            seq_len = curriculum_seq_len(progress, config.data.seq_len_warmup, config.data.seq_len_warmup_fraction,
                                         config.model.max_seq_len)
            loss_sum = torch.zeros((), device=device)
            for micro in range(settings.grad_accum_steps):
                inputs, targets = train_windows.random_batch(step, micro, settings.micro_batch_size, seq_len, device)
                sync = contextlib.nullcontext()
                if context.enabled and micro < settings.grad_accum_steps - 1:
                    sync = model.no_sync()
                with sync:
                    with autocast:
                        logits = model(inputs)
                        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1),
                                               ignore_index=IGNORE_INDEX)
                        loss = loss / settings.grad_accum_steps
                    (scaler.scale(loss) if scaler else loss).backward()
                loss_sum += loss.detach()
            last_loss = float(loss_sum)
            if not math.isfinite(last_loss):
                state["bad_batches"] += 1
                optimizer.zero_grad(set_to_none=True)
                if state["bad_batches"] > settings.max_bad_batches:
                    good = latest_checkpoint(run)
                    raise CogniError(f"loss became {last_loss} at step {step}; last good checkpoint: "
                                     f"{good or 'none'}; lower train.lr or raise train.max_bad_batches to skip bad batches")
                display.message(f"[yellow]skipping step {step}: loss {last_loss} "
                                f"({state['bad_batches']}/{settings.max_bad_batches} bad batches allowed)")
                step += 1
                continue
            if scaler is not None:
                scaler.unscale_(optimizer)
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), settings.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            step_tokens = settings.micro_batch_size * seq_len * settings.grad_accum_steps * context.world_size
            stats.tokens_seen += step_tokens
            window_tokens += step_tokens
            smoothed = last_loss if smoothed is None else 0.9 * smoothed + 0.1 * last_loss
            stats.step, stats.lr, stats.train_loss, stats.elapsed = step, lr, smoothed, elapsed_total()

            if step % settings.log_every == 0 or step == 1:
                now = time.perf_counter()
                stats.tokens_per_second = window_tokens / max(now - window_start, 1e-9)
                window_start, window_tokens = now, 0
                stats.loss_history.append(last_loss)
                if peak_flops:
                    stats.mfu = flops_token * stats.tokens_per_second / context.world_size / peak_flops
                stats.memory_bytes = peak_memory_bytes(device)
                row = {"step": step, "train_loss": last_loss, "lr": lr, "tokens_per_second": stats.tokens_per_second,
                       "elapsed": stats.elapsed, "tokens": stats.tokens_seen}
                if context.is_main:
                    append_metrics(run, row)
                    if logger:
                        logger(row)
                display.log(stats)
            if settings.eval_every and step % settings.eval_every == 0:
                run_eval()
            if settings.save_every and step % settings.save_every == 0:
                save("periodic")
            display.update(stats)
            if stop.received is not None:
                break

        interrupted = stop.received
        if interrupted is None:
            run_eval()
        saved = save("final")
    if interrupted is not None:
        code = 130 if interrupted == signal.SIGINT else 143
        name = "Ctrl+C" if interrupted == signal.SIGINT else "SIGTERM"
        raise TrainingInterrupted(f"{name}: stopped at step {step}, checkpoint saved to {saved}; continue with "
                                  f"`cogni train --data {options.data} --out {run} --resume`", exit_code=code)
    return TrainResult(run, step, last_loss, stats.val_loss, stats.val_bits_per_byte, elapsed_total(), stats.tokens_seen)


def _open_logger(kind: str, run: Path, config: Config) -> Any:
    """Optional TensorBoard / Weights & Biases sinks for the same rows as metrics.jsonl."""
    if kind == "none":
        return None
    if kind == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise CogniError("--logger tensorboard needs the tensorboard package: pip install tensorboard") from error
        writer = SummaryWriter(log_dir=str(run / "tensorboard"))

        def log_tensorboard(row: dict[str, Any]) -> None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    writer.add_scalar(key, value, row["step"])
            writer.flush()

        return log_tensorboard
    try:
        import wandb
    except ImportError as error:
        raise CogniError("--logger wandb needs the wandb package: pip install wandb") from error
    wandb_run = wandb.init(project="cognimamba", name=run.name, config=config.to_dict())

    def log_wandb(row: dict[str, Any]) -> None:
        wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    return log_wandb
