"""Loss curves: the terminal chart (plotext) and the PNG (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cognimamba.errors import CogniError
from cognimamba.evaluation.plot import loss_series, render_png, render_terminal

ROWS = [{"step": step, "train_loss": 6.0 - step / 20} for step in range(1, 60)] + \
       [{"step": step, "val_loss": 5.5 - step / 25, "val_bits_per_byte": 2.5} for step in (20, 40)]


def test_loss_series_splits_train_and_val_rows() -> None:
    train, val = loss_series(ROWS)
    assert train[0] == (1, 5.95) and val == [(20, 4.7), (40, 3.9)]
    with pytest.raises(CogniError, match="no loss rows"):
        loss_series([{"step": 1, "lr": 0.1}])


def test_terminal_chart_fits_its_size_and_names_both_curves() -> None:
    chart = render_terminal(*loss_series(ROWS), width=70, height=18, title="tiny")
    lines = chart.splitlines()
    assert len(lines) == 18 and max(map(len, lines)) <= 70
    assert "tiny" in lines[0] and "• train loss" in chart and "o val loss" in chart and "step" in lines[-1]
    assert "\x1b[" not in chart  # plain text: no colour codes in a file or a pipe


def test_terminal_chart_of_train_loss_alone() -> None:
    chart = render_terminal(*loss_series(ROWS[:10]))
    assert "train loss" in chart and "val loss" not in chart


def test_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    render_png(*loss_series(ROWS), tmp_path / "loss.png", title="tiny")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
