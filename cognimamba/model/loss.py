"""Loss on held-out tokens, as nats/token, perplexity and tokenizer-independent bits per byte."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # the target of a position that takes no loss (prompt tokens, padding)


@dataclass
class EvalResult:
    loss: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))

    def bits_per_byte(self, bytes_per_token: float) -> float | None:
        if bytes_per_token <= 0:
            return None
        return self.loss / math.log(2) / bytes_per_token


def summed_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the trained targets.

    Where some targets take no loss (chat data: prompts, tool definitions, padding), the model's head runs on
    the trained positions only (`keep`): in chat windows that is often a tenth of them, and the vocabulary
    projection is the largest matmul of a small model.
    """
    trained = targets != IGNORE_INDEX
    if bool(trained.all()):
        logits = model(inputs)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), reduction="sum")
    logits = model(inputs, keep=trained)
    return F.cross_entropy(logits.float(), targets[trained], reduction="sum")


def token_loss_sum(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    return summed_loss(model, inputs, targets), int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  autocast: contextlib.AbstractContextManager | None = None) -> EvalResult:
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    try:
        for inputs, targets in batches:
            with autocast or contextlib.nullcontext():
                loss_sum, tokens = token_loss_sum(model, inputs, targets)
            total += loss_sum.double().cpu()
            count += tokens
    finally:
        model.train(was_training)
    # No trained target (a chat split of prompts alone) is no measurement: NaN, never a perfect-looking 0.0.
    return EvalResult(loss=float(total) / count if count else math.nan, tokens=count)
