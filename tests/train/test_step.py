"""One optimizer step's arithmetic: every trained token weighs the same, however the step is split."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cognimamba.model.loss import IGNORE_INDEX
from cognimamba.model.transformer import LanguageModel
from cognimamba.train.distributed import DistributedContext
from cognimamba.train.optim import build_optimizer
from cognimamba.train.step import accumulate_gradients, clip_gradients
from tests.conftest import tiny_config
from tests.train.two_ranks import run_on_two_ranks

VOCAB = 256
BATCH = 16
PLAIN = contextlib.nullcontext()


def chat_like_batch(seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """16 windows whose trained (assistant) spans differ in length; every fifth window trains on nothing."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (BATCH, seq_len + 1), generator=generator)
    inputs, targets = tokens[:, :-1].clone(), tokens[:, 1:].clone()
    for row in range(BATCH):
        answer = (row % 5) * 7  # 0, 7, 14, 21 or 28 trained targets
        targets[row, : seq_len - answer] = IGNORE_INDEX
    return inputs, targets


def fresh_model() -> LanguageModel:
    torch.manual_seed(0)
    config = tiny_config().model
    return LanguageModel(replace(config, vocab_size=VOCAB, dropout=0.0))


def gradient(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def step_gradient(inputs: torch.Tensor, targets: torch.Tensor, micro_batch_size: int) -> tuple[torch.Tensor, float]:
    model = fresh_model()
    micro_batches = [(inputs[start:start + micro_batch_size], targets[start:start + micro_batch_size])
                     for start in range(0, len(inputs), micro_batch_size)]
    loss = accumulate_gradients(model, micro_batches, PLAIN)
    return gradient(model), loss.mean


def test_step_gradient_is_the_same_for_16x1_4x4_and_1x16_splits() -> None:
    """The loss of a step is the mean over all its trained tokens, not a mean of micro-batch means."""
    inputs, targets = chat_like_batch(seq_len=32)
    reference = fresh_model()
    logits = reference(inputs)
    expected_loss = F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1), ignore_index=IGNORE_INDEX)
    expected_loss.backward()
    for micro_batch_size in (1, 4, 16):  # 16 micro-batches of 1, 4 of 4, 1 of 16
        grad, loss = step_gradient(inputs, targets, micro_batch_size)
        torch.testing.assert_close(grad, gradient(reference), rtol=1e-4, atol=1e-6)
        assert loss == pytest.approx(float(expected_loss), rel=1e-5)


def _ddp_step(context: DistributedContext, tmp_path: Path) -> None:
    """Rank 0 takes windows 0-5 (few trained tokens), rank 1 windows 6-15; each in micro-batches of 2."""
    from torch.nn.parallel import DistributedDataParallel

    inputs, targets = chat_like_batch(seq_len=32)
    rows = range(0, 6) if context.rank == 0 else range(6, BATCH)
    micro_batches = [(inputs[row:row + 2], targets[row:row + 2]) for row in rows[::2]]
    model = DistributedDataParallel(fresh_model())
    loss = accumulate_gradients(model, micro_batches, PLAIN, context=context)
    torch.save({"grad": gradient(model.module), "loss": loss.mean}, tmp_path / f"rank{context.rank}.pt")


@pytest.mark.slow
def test_step_gradient_under_ddp_weighs_tokens_not_ranks(tmp_path: Path) -> None:
    """Two ranks with unequal trained-token counts give the gradient of the whole batch on one process."""
    inputs, targets = chat_like_batch(seq_len=32)
    expected_grad, expected_loss = step_gradient(inputs, targets, BATCH)
    run_on_two_ranks(_ddp_step, tmp_path)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["grad"], expected_grad, rtol=1e-4, atol=1e-6)
        assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)  # every rank logs the whole step's loss


def test_non_finite_gradient_is_reported_without_clipping() -> None:
    """grad_clip = 0 turns clipping off, not the check: an inf gradient must still stop the step."""
    model = fresh_model()
    optimizer = build_optimizer(model, tiny_config().train, torch.device("cpu"))
    for grad_clip in (1.0, 0.0):
        for parameter in model.parameters():
            parameter.grad = torch.zeros_like(parameter)
        model.norm.weight.grad[0] = float("inf")
        assert not math.isfinite(clip_gradients(model, optimizer, None, grad_clip)), grad_clip
