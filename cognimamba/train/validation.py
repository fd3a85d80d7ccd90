"""Validation loss at a step: a metrics row, the live view, and best/ when it improves."""

from __future__ import annotations

from cognimamba.model.loss import evaluate_loss
from cognimamba.train.saving import save_best_model
from cognimamba.train.state import TrainState


def validate(state: TrainState) -> None:
    if state.val_windows is None:
        return
    settings, counters, stats = state.settings, state.counters, state.stats
    batches = state.val_windows.eval_batches(settings.eval_batches, settings.micro_batch_size,
                                             state.config.model.max_seq_len, state.device)
    result = evaluate_loss(state.raw_model, batches, state.autocast)
    state.evaluated_steps.add(state.step)
    if result.tokens == 0:  # the same windows come back at every eval, so validation stays off
        state.val_windows = None
        state.display.message(f"[yellow]validation off: the val split's {settings.eval_batches} eval batches hold "
                              "no trained target; raise train.eval_batches or prepare a larger val split")
        return
    stats.val_loss = counters.last_val_loss = result.loss
    stats.val_bits_per_byte = result.bits_per_byte(state.bytes_per_token)
    state.metrics.write({"step": state.step, "val_loss": result.loss, "val_perplexity": result.perplexity,
                         "val_bits_per_byte": stats.val_bits_per_byte, "elapsed": state.clock.total()})
    if counters.best_val_loss is None or result.loss < counters.best_val_loss:
        counters.best_val_loss, counters.best_step = result.loss, state.step
        save_best_model(state)
