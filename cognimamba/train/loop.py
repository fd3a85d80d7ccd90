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

from cognimamba.config.schema import Config, parse_duration, validate
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import IGNORE_INDEX, TokenWindows
from cognimamba.errors import CogniError
from cognimamba.evaluation.loss import evaluate_loss
from cognimamba.model.tokenizer import load_tokenizer
from cognimamba.model.transformer import Transformer, flops_per_token, num_parameters
from cognimamba.runs.checkpoints import latest_checkpoint, recover_best, save_best, save_checkpoint
from cognimamba.runs.layout import OPTIMIZER, STATE, WEIGHTS
from cognimamba.runs.loading import read_config, write_run_files
from cognimamba.runs.lora import LoraSettings, adapter_state, base_transformer
from cognimamba.runs.metrics import append_metrics, trim_metrics
from cognimamba.runs.tensors import load_optimizer, load_state_into, model_state, read_weights
from cognimamba.system.console import human_count
from cognimamba.system.faults import kill_point
from cognimamba.system.hardware import (
    compiled_if_possible,
    cpu_has_native_bf16,
    measure_matmul_peak,
    peak_memory_bytes,
    pick_device,
    pick_dtype,
)
from cognimamba.train.display import TrainingDisplay, TrainingStats
from cognimamba.train.distributed import agree_max, init_distributed, shutdown_distributed
from cognimamba.train.optim import build_optimizer, optimizer_step
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
    lora: LoraSettings | None = None  # with init_from: train LoRA adapters instead of all weights
    model_overrides: dict[str, Any] = field(default_factory=dict)  # model.* the user set; fine-tunes may change some


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
    from cognimamba.system.fileio import read_json

    return checkpoint, read_json(checkpoint / STATE, "trainer state")


def _init_from(base_path: Path, config: Config, data: DataDir, lora: LoraSettings | None,
               overrides: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The base run's weights (its architecture; a longer context allowed), LoRA-wrapped when asked."""
    from cognimamba.model.tokenizer import tokenizer_hash
    from cognimamba.runs.loading import load_run
    from cognimamba.runs.lora import apply_lora, is_lora_run, lora_run_info, tuned_model_config

    base = load_run(base_path)
    if base.config.model.vocab_size != config.model.vocab_size or (
            data.meta.get("tokenizer_hash") not in (None, tokenizer_hash(base.tokenizer))):
        raise CogniError(f"{data.path}: tokenized with a different tokenizer than {base_path} (vocab "
                         f"{config.model.vocab_size} vs {base.config.model.vocab_size}); prepare the data with "
                         f"--tokenizer {base_path}/tokenizer.json")
    config.model = tuned_model_config(base.config.model, overrides, base_path)
    model = Transformer(config.model)
    load_state_into(model, model_state(base.model), Path(base_path))
    run_info: dict[str, Any] = {"init_from": str(Path(base_path).resolve())}
    if lora is None:
        return model, run_info
    if is_lora_run(Path(base_path)):
        raise CogniError(f"{base_path}: is a LoRA run; merge it first (cogni merge BASE {base_path} --out DIR), "
                         "then train adapters on the merged run")
    run_info["lora"] = lora_run_info(lora, Path(base_path))
    return apply_lora(model, lora), run_info


def _fine_tune_of(run: Path, config: Config, lora: LoraSettings | None) -> tuple[Any, LoraSettings | None, dict]:
    """A fine-tuned run resumes with its own model settings and, for LoRA, its adapter settings."""
    if not (run / "config.json").is_file():
        return config.model, lora, {}
    saved_config, payload = read_config(run)
    saved_lora = LoraSettings.from_dict(payload["lora"]) if "lora" in payload else None
    if lora is not None and saved_lora is None:
        raise CogniError(f"--lora: {run} was not trained with LoRA; resume it without --lora")
    run_info = {key: payload[key] for key in ("init_from", "lora") if key in payload}
    if not run_info:
        return config.model, lora, {}
    return saved_config.model, saved_lora, run_info


def _resume_weights(model: torch.nn.Module, checkpoint: Path, lora: LoraSettings | None,
                    run_info: dict[str, Any]) -> torch.nn.Module:
    if lora is None:
        load_state_into(model, read_weights(checkpoint / WEIGHTS), checkpoint / WEIGHTS)  # type: ignore[arg-type]
        return model
    from cognimamba.runs.layout import ADAPTER_WEIGHTS
    from cognimamba.runs.loading import load_run
    from cognimamba.runs.lora import apply_lora, check_base_fingerprint, load_adapter_state

    base_path = Path(run_info["lora"]["base_run"])
    check_base_fingerprint(run_info["lora"], base_path, checkpoint)
    load_state_into(model, model_state(load_run(base_path).model), base_path)  # type: ignore[arg-type]
    wrapped = apply_lora(model, lora)  # type: ignore[arg-type]
    load_adapter_state(wrapped, read_weights(checkpoint / ADAPTER_WEIGHTS), checkpoint / ADAPTER_WEIGHTS)
    return wrapped


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
    from cognimamba.config.profiles import PROFILES

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
    if not options.resume and ((run / WEIGHTS).exists() or latest_checkpoint(run) is not None):
        raise CogniError(f"{run}: already holds a trained model; pass --resume to continue it or choose another --out")

    torch.manual_seed(settings.seed + context.rank)
    run_info: dict[str, Any] = {}
    lora = options.lora
    if options.resume:
        config.model, lora, run_info = _fine_tune_of(run, config, lora)
    model: torch.nn.Module = Transformer(config.model)
    state: dict[str, Any] = {"step": 0, "tokens_seen": 0, "elapsed": 0.0, "best_val_loss": None,
                             "best_step": None, "last_val_loss": None, "bad_batches": 0}
    resume_payload = None
    if options.resume:
        recover_best(run)
        checkpoint, state = _resume_state(run, config)
        if context.is_main:
            trim_metrics(run, state["step"])  # rows logged after the checkpoint are logged again, identically
        model = _resume_weights(model, checkpoint, lora, run_info)
        resume_payload = load_optimizer(checkpoint / OPTIMIZER)
    elif options.init_from is not None:
        model, run_info = _init_from(options.init_from, config, data, lora, options.model_overrides)
    elif lora is not None:
        raise CogniError("--lora trains adapters on a trained model: add --init-from RUN")
    if not options.resume and context.is_main:
        trim_metrics(run, 0)  # rows of an earlier attempt that died before its first checkpoint

    model.to(device)
    transformer = base_transformer(model)
    transformer.gradient_checkpointing = settings.grad_checkpointing
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
    model, compile_problem = compiled_if_possible(model, device, settings.compile)

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
    total_params, non_embedding = num_parameters(transformer)  # counts LoRA matrices too, when present
    trainable = sum(p.numel() for p in raw_model.parameters() if p.requires_grad)
    flops_token = flops_per_token(config.model, config.model.max_seq_len)
    peak_flops = measure_matmul_peak(device, compute_dtype, seconds=0.25) if options.show_progress else None

    if context.is_main:
        write_run_files(run, config, transformer, tokenizer,
                        {"data_meta": data.meta, **options.extra_run_info, **run_info})
        if lora is not None:
            from cognimamba.runs.lora import write_adapter_config

            write_adapter_config(run, raw_model, run_info["lora"]["base_run"])

    def weights_to_save() -> dict[str, torch.Tensor]:
        return adapter_state(raw_model) if lora is not None else model_state(raw_model)
    budget = f"{max_time:.0f}s" if max_time else f"{max_steps} steps"
    dtype_name = str(compute_dtype).replace("torch.", "")
    step_tokens_total = tokens_per_micro * settings.grad_accum_steps * context.world_size
    header = (f"[bold]cogni train[/] {config.profile} profile on {device.type} ({dtype_name}): "
              f"{human_count(total_params)} parameters ({human_count(non_embedding)} non-embedding, "
              f"{human_count(trainable)} trainable), {human_count(step_tokens_total)} "
              f"tokens/step, {budget} -> {run}")
    if compile_problem:
        header += f"\n[yellow]train.compile: {compile_problem}; training runs eagerly[/]"
    elif settings.compile:
        header += "\n[dim]torch.compile: the first step compiles the model (about a minute)[/]"
    if device.type == "cpu" and compute_dtype == torch.float32 and cpu_has_native_bf16():
        header += "\n[dim]this CPU has native bf16: --set train.precision=bf16 trains 1.2-1.4x faster[/]"
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
        saved_steps.add(step)
        return save_checkpoint(run, step, weights_to_save(), payload, snapshot_state(),
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
        evaluated.add(step)
        if state["best_val_loss"] is None or result.loss < state["best_val_loss"]:
            state["best_val_loss"], state["best_step"] = result.loss, step
            if context.is_main:
                save_best(run, weights_to_save(), snapshot_state())

    step = state["step"]
    evaluated: set[int] = set()
    saved_steps = {step} if options.resume else set()
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
                        # Sum over trained targets, then divide: a chat window with no assistant token gives
                        # 0, not the NaN of a mean over nothing.
                        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1),
                                               ignore_index=IGNORE_INDEX, reduction="sum")
                        loss = loss / (targets != IGNORE_INDEX).sum().clamp(min=1) / settings.grad_accum_steps
                    (scaler.scale(loss) if scaler else loss).backward()
                loss_sum += loss.detach()
            last_loss = float(loss_sum)
            problem = None if math.isfinite(last_loss) else f"loss became {last_loss}"
            if problem is None:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if settings.grad_clip > 0:
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), settings.grad_clip))
                    if scaler is None and not math.isfinite(grad_norm):  # the fp16 scaler skips such steps itself
                        problem = f"gradient norm became {grad_norm}"
            if problem is not None:
                state["bad_batches"] += 1
                optimizer.zero_grad(set_to_none=True)
                if state["bad_batches"] > settings.max_bad_batches:
                    good = latest_checkpoint(run)
                    raise CogniError(f"{problem} at step {step + 1}; last good checkpoint: {good or 'none'}; "
                                     "lower train.lr, or set train.max_bad_batches=N to skip up to N bad batches")
                display.message(f"[yellow]skipping step {step + 1}: {problem} "
                                f"({state['bad_batches']}/{settings.max_bad_batches} bad batches allowed)")
                step += 1
                continue
            optimizer_step(optimizer, scaler)
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
            kill_point("after-step", step)
            if settings.eval_every and step % settings.eval_every == 0:
                run_eval()
            if settings.save_every and step % settings.save_every == 0:
                save("periodic")
            display.update(stats)
            if stop.received is not None:
                break

        interrupted = stop.received
        if interrupted is None and step not in evaluated:
            run_eval()
        saved = save("final") if step not in saved_steps else latest_checkpoint(run)
    if interrupted is not None:
        code = 130 if interrupted == signal.SIGINT else 143
        name = "Ctrl+C" if interrupted == signal.SIGINT else "SIGTERM"
        raise TrainingInterrupted(f"{name}: stopped at step {step}, checkpoint saved to {saved}; continue with "
                                  f"`cogni train --data {options.data} --out {run} --resume`", exit_code=code)
    return TrainResult(run, step, last_loss, stats.val_loss, stats.val_bits_per_byte, elapsed_total(),
                       stats.tokens_seen)


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
