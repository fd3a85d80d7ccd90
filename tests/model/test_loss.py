"""Held-out loss counts trained targets only; with none there is no loss to report."""

from __future__ import annotations

import math

import pytest
import torch

from cognimamba.config.schema import ModelConfig
from cognimamba.model.fixed_point import FixedPointModel
from cognimamba.model.loss import IGNORE_INDEX, evaluate_loss, summed_loss
from cognimamba.model.transformer import LanguageModel
from tests.conftest import tiny_config


def tiny_model() -> LanguageModel:
    torch.manual_seed(0)
    config = tiny_config().model
    config.vocab_size = 64
    return LanguageModel(config)


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


def fixed_point_model() -> FixedPointModel:
    torch.manual_seed(0)
    return FixedPointModel(ModelConfig(vocab_size=64, max_seq_len=64, arch="fixed_point", fixed_point_preset="small",
                                       fixed_point_context_dim=32, fixed_point_hidden_dim=64))


@pytest.mark.parametrize("make_model", [tiny_model, fixed_point_model])
def test_head_on_trained_positions_only_gives_the_full_loss_and_gradients(make_model) -> None:
    """Chat windows train a tenth of their positions: the head skips the rest, and nothing else changes."""
    inputs = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    targets = inputs.roll(-1, dims=1)
    targets[0, :5] = IGNORE_INDEX
    targets[1, 6:] = IGNORE_INDEX
    kept, full = make_model().eval(), make_model().eval()  # no dropout: both see the same network
    kept_loss = summed_loss(kept, inputs, targets)
    logits = full(inputs)
    full_loss = torch.nn.functional.cross_entropy(logits.view(-1, 64), targets.view(-1), ignore_index=IGNORE_INDEX,
                                                  reduction="sum")
    assert kept(inputs, keep=targets != IGNORE_INDEX).shape == (9, 64)
    assert torch.allclose(kept_loss, full_loss, rtol=1e-5)
    kept_loss.backward()
    full_loss.backward()
    for (name, a), b in zip(kept.named_parameters(), full.parameters(), strict=True):
        if b.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name
