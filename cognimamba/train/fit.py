"""The training loop: schedule, one optimizer step, then log, validate and save on their intervals.

The loop is the same for every model: what a step trains on, where the schedule stands and what a log row adds
come from the run's objective (train/objectives.py).
"""

from __future__ import annotations

import math

from cognimamba.errors import CogniError
from cognimamba.model.dropout import set_dropout
from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.system.faults import kill_point
from cognimamba.system.hardware import peak_memory_bytes
from cognimamba.train.distributed import agree_max
from cognimamba.train.objectives import Objective, objective_for
from cognimamba.train.optim import optimizer_step, set_learning_rate
from cognimamba.train.options import TrainResult
from cognimamba.train.saving import save
from cognimamba.train.schedule import curriculum_seq_len, scheduled_dropout, scheduled_lr
from cognimamba.train.signals import StopSignal, interrupted_error
from cognimamba.train.state import TrainState
from cognimamba.train.step import clip_gradients
from cognimamba.train.validation import validate


def fit(state: TrainState) -> TrainResult:
    """Train to max_steps or max_time; Ctrl+C/SIGTERM stop at a step boundary with a checkpoint."""
    state.model.train()
    objective = objective_for(state)
    with StopSignal() as stop, state.display:
        stopped_by = None
        while stopped_by is None:
            progress = training_progress(state)
            if progress >= 1.0 or state.step >= state.settings.max_steps:
                break
            if train_step(state, objective, progress):
                after_step(state)
            stopped_by = stop.agreed(state.context, state.device)
        if stopped_by is None and state.step not in state.evaluated_steps:
            validate(state)
        saved = save(state) if state.step not in state.saved_steps else latest_checkpoint(state.run)
    if stopped_by is not None:
        raise interrupted_error(stopped_by, state.step, saved, state.data_path, state.run)
    stats = state.stats
    return TrainResult(state.run, state.step, state.last_loss, stats.val_loss, stats.val_bits_per_byte,
                       state.clock.total(), state.counters.tokens_seen)


def training_progress(state: TrainState) -> float:
    """0 -> 1 over training, by steps or by the clock under --max-time, whichever is further (on any rank)."""
    by_steps = state.step / state.settings.max_steps
    by_time = state.clock.total() / state.max_time if state.max_time else 0.0
    return agree_max(max(by_steps, by_time), state.context, state.device)


def train_step(state: TrainState, objective: Objective, progress: float) -> bool:
    """One optimizer step at the scheduled learning rate and sequence length; False for a skipped bad batch."""
    settings, config = state.settings, state.config
    if objective.begin_step(state, progress):  # the loss now measures something new: its smoothing starts over
        state.smoothed_loss = None
        state.stats.loss_history.clear()
    lr = scheduled_lr(settings, objective.schedule_position(state.step, progress))
    set_learning_rate(state.optimizer, lr)
    follow_dropout_schedule(state)
    seq_len = curriculum_seq_len(progress, config.data.seq_len_warmup, config.data.seq_len_warmup_fraction,
                                 config.model.max_seq_len)
    loss = objective.step_loss(state, seq_len)
    state.stats.phase = objective.label()
    state.last_loss = loss.mean
    problem = None if math.isfinite(state.last_loss) else f"loss became {state.last_loss}"
    if problem is None:
        grad_norm = clip_gradients(state.raw_model, state.optimizer, state.scaler, settings.grad_clip)
        if state.scaler is None and not math.isfinite(grad_norm):
            problem = f"gradient norm became {grad_norm}"  # the fp16 scaler skips such steps itself
    if problem is not None:
        skip_bad_step(state, problem)
        return False
    optimizer_step(state.optimizer, state.scaler)
    state.counters.step += 1
    step_tokens = settings.micro_batch_size * seq_len * settings.grad_accum_steps * state.context.world_size
    state.counters.tokens_seen += step_tokens
    state.throughput.tokens += step_tokens
    state.smoothed_loss = (state.last_loss if state.smoothed_loss is None
                           else 0.9 * state.smoothed_loss + 0.1 * state.last_loss)
    stats = state.stats
    stats.step, stats.lr, stats.train_loss, stats.elapsed = state.step, lr, state.smoothed_loss, state.clock.total()
    stats.tokens_seen = state.counters.tokens_seen
    if state.step % settings.log_every == 0 or state.step == 1:
        log_step(state, objective)
    return True


def follow_dropout_schedule(state: TrainState) -> None:
    """The blocks' dropout for the passes made over the training data so far (train.dropout_ramp_passes)."""
    settings = state.settings
    if settings.dropout_ramp_passes <= 0:
        return
    passes = state.counters.tokens_seen / max(len(state.train_windows), 1)
    rate = scheduled_dropout(state.config.model.dropout, passes, settings.dropout_ramp_passes)
    if rate != state.dropout:
        set_dropout(state.raw_model, rate)
        state.dropout = rate


def skip_bad_step(state: TrainState, problem: str) -> None:
    """Drop this step's gradients; past train.max_bad_batches, stop with the last good checkpoint."""
    counters, settings = state.counters, state.settings
    counters.bad_batches += 1
    state.optimizer.zero_grad(set_to_none=True)
    if counters.bad_batches > settings.max_bad_batches:
        good = latest_checkpoint(state.run)
        raise CogniError(f"{problem} at step {state.step + 1}; last good checkpoint: {good or 'none'}; "
                         "lower train.lr, or set train.max_bad_batches=N to skip up to N bad batches")
    state.display.message(f"[yellow]skipping step {state.step + 1}: {problem} "
                          f"({counters.bad_batches}/{settings.max_bad_batches} bad batches allowed)")
    counters.step += 1


def log_step(state: TrainState, objective: Objective) -> None:
    """A metrics row and a log line: this step's loss, tokens/sec over the interval, MFU and memory."""
    stats = state.stats
    stats.tokens_per_second = state.throughput.take()
    stats.loss_history.append(state.last_loss)
    if state.peak_flops:
        stats.mfu = state.flops_per_token * stats.tokens_per_second / state.context.world_size / state.peak_flops
    stats.memory_bytes = peak_memory_bytes(state.device)
    state.metrics.write({"step": state.step, "train_loss": state.last_loss, "lr": stats.lr,
                         "tokens_per_second": stats.tokens_per_second, "elapsed": stats.elapsed,
                         "tokens": stats.tokens_seen, **({"mfu": stats.mfu} if stats.mfu is not None else {}),
                         **({"dropout": state.dropout} if state.dropout is not None else {}),
                         **objective.log_row()})
    state.display.log(stats)


def after_step(state: TrainState) -> None:
    """Validation and checkpoints on their intervals, then the live view."""
    settings = state.settings
    kill_point("after-step", state.step)
    if settings.eval_every and state.step % settings.eval_every == 0:
        validate(state)
    if settings.save_every and state.step % settings.save_every == 0:
        save(state)
    state.display.update(state.stats)

