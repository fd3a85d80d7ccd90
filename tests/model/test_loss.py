"""Held-out loss counts trained targets only; with none there is no loss to report."""

from __future__ import annotations

import math

import torch

from cognimamba.model.loss import IGNORE_INDEX, evaluate_loss
from cognimamba.model.transformer import Transformer
from tests.conftest import tiny_config


def tiny_model() -> Transformer:
    torch.manual_seed(0)
    config = tiny_config().model
    config.vocab_size = 64
    return Transformer(config)


def test_loss_is_the_mean_over_trained_targets() -> None:
    inputs = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    targets = inputs.roll(-1, dims=1)
    targets[0, :5] = IGNORE_INDEX
    result = evaluate_loss(tiny_model(), [(inputs, targets)])
    logits = tiny_model().eval()(inputs)
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 64), targets.view(-1), ignore_index=IGNORE_INDEX)
    assert result.tokens == 11 and math.isclose(result.loss, float(expected), rel_tol=1e-5)


def test_no_trained_target_is_no_loss_not_zero() -> None:
    """A chat val split whose windows hold no assistant token: 0.0 would look perfect (and win best/)."""
    inputs = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    targets = torch.full_like(inputs, IGNORE_INDEX)
    result = evaluate_loss(tiny_model(), [(inputs, targets)])
    assert result.tokens == 0
    assert math.isnan(result.loss) and math.isnan(result.perplexity)
