"""`cogni test-model`'s gradient check asks whether gradients can reach every parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

import cognimamba
from cognimamba.evaluation.checks import ModelReport, check_gradients


@pytest.mark.slow
def test_gradient_check_is_not_fooled_by_dropout(tiny_run: Path) -> None:
    """The blocks' residual dropout is functional (no nn.Dropout module): the check must switch it off too."""
    loaded = cognimamba.load(tiny_run)
    for block in loaded.model.layers:
        block.dropout = 1.0  # drops every residual branch while training
    loaded.model.train()
    report = ModelReport()
    check_gradients(loaded, report)
    (check,) = report.checks
    assert check.passed, check.detail
    assert loaded.model.training  # the mode it was in comes back
