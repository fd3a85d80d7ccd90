"""The blocks' dropout: the same Bernoulli draw as F.dropout, its CPU mask drawn by torch.rand."""

from __future__ import annotations

import pytest
import torch

from cognimamba.config.schema import ModelConfig
from cognimamba.model.build import build_model
from cognimamba.model.dropout import dropout, set_dropout


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_zeroes_a_share_p_and_scales_the_rest_forward_and_backward(p: float) -> None:
    torch.manual_seed(0)
    x = (torch.rand(64, 128, 128) + 1.0).requires_grad_()  # no zeros of its own
    y = dropout(x, p)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.005  # 1M draws: the share is within 0.005 of p
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))


def test_nothing_is_dropped_at_zero_and_seeds_repeat() -> None:
    x = torch.randn(8, 16)
    assert dropout(x, 0.0) is x
    torch.manual_seed(3)
    first = dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.5), first)


def test_keeps_the_dtype_under_bf16() -> None:
    x = torch.randn(32, 32, dtype=torch.bfloat16)
    assert dropout(x, 0.3).dtype == torch.bfloat16


def test_set_dropout_reaches_attention_and_mamba_blocks() -> None:
    config = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=16,
                         dropout=0.3, layer_pattern="AM", mamba_head_dim=16, mamba_state_size=8)
    model = build_model(config).train()
    ids = torch.randint(0, 64, (2, 16))
    torch.manual_seed(0)
    assert not torch.equal(model(ids), model(ids))  # dropout draws a new mask each pass
    set_dropout(model, 0.0)
    assert [block.dropout for block in model.layers] == [0.0, 0.0]
    torch.testing.assert_close(model(ids), model.eval()(ids))  # none left while training
