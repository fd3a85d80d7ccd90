"""One optimizer step's arithmetic: forward, masked loss and backward per micro-batch, then clip.

`cogni train`, `cogni bench --train` and benchmarks/compare_hf.py all run these functions, so the step that
is timed is the step that trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cognimamba.model.loss import IGNORE_INDEX, summed_loss
from cognimamba.train.distributed import DistributedContext, sum_over_ranks
from cognimamba.train.optim import optimizer_step

Batch = tuple[torch.Tensor, torch.Tensor]  # inputs, targets (IGNORE_INDEX where no loss is taken)
SINGLE_PROCESS = DistributedContext()


@dataclass
class StepLoss:
    """The summed loss over the step's trained tokens and their count, both left on the device."""

    loss_sum: torch.Tensor
    tokens: torch.Tensor

    @property
    def mean(self) -> float:
        return float(self.loss_sum / self.tokens.clamp(min=1))


def autocast_for(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision in `dtype`; fp32 runs as it is."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def trained_tokens(targets: torch.Tensor) -> torch.Tensor:
    return (targets != IGNORE_INDEX).sum()


def micro_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
               autocast: contextlib.AbstractContextManager, divisor: torch.Tensor | float,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """Forward, summed cross-entropy over trained targets, backward of that sum / `divisor`; returns the sum."""
    with autocast:
        loss_sum = summed_loss(model, inputs, targets)
    loss = loss_sum / divisor
    (scaler.scale(loss) if scaler else loss).backward()
    return loss_sum.detach()


def accumulate_gradients(model: nn.Module, micro_batches: Sequence[Batch],
                         autocast: contextlib.AbstractContextManager, scaler: torch.amp.GradScaler | None = None,
                         context: DistributedContext = SINGLE_PROCESS) -> StepLoss:
    """Gradients of one optimizer step: the mean over every trained token of the step, on all ranks together.

    Dividing each micro-batch by the whole step's trained-token count (not by its own) weighs every token
    the same however the batch is split, as Hugging Face fixed gradient accumulation; a micro-batch with no
    trained token adds nothing instead of diluting the rest. Under DDP only the last micro-batch syncs.
    """
    tokens = sum_over_ranks(sum(trained_tokens(targets) for _, targets in micro_batches), context)
    divisor = tokens.clamp(min=1) / context.world_size  # DDP averages over ranks; this turns it into the sum
    loss_sum = torch.zeros((), device=tokens.device)
    for index, (inputs, targets) in enumerate(micro_batches):
        sync = contextlib.nullcontext()
        if context.enabled and index < len(micro_batches) - 1:
            sync = model.no_sync()  # type: ignore[operator]
        with sync:
            loss_sum += micro_step(model, inputs, targets, autocast, divisor, scaler)
    loss_sum = sum_over_ranks(loss_sum, context)
    return StepLoss(loss_sum, tokens)


def clip_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                   grad_clip: float) -> float:
    """Unscale (fp16), clip to `grad_clip` when it is > 0; the total gradient norm either way (inf/NaN: bad)."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip > 0:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batches: Sequence[Batch],
                  autocast: contextlib.AbstractContextManager, grad_clip: float,
                  scaler: torch.amp.GradScaler | None = None) -> StepLoss:
    """A whole optimizer step with no checks, as benchmarks time it: accumulate, clip, apply."""
    loss = accumulate_gradients(model, micro_batches, autocast, scaler)
    clip_gradients(model, optimizer, scaler, grad_clip)
    optimizer_step(optimizer, scaler)
    return loss
