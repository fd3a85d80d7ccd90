"""Loss curves from metrics.jsonl: a character plot for the terminal and a PNG through matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cognimamba.errors import CogniError

Series = list[tuple[int, float]]


def loss_series(rows: list[dict[str, Any]]) -> tuple[Series, Series]:
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if "train_loss" in r]
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if "val_loss" in r]
    if not train and not val:
        raise CogniError("metrics.jsonl has no loss rows yet")
    return train, val


def render_terminal(train: Series, val: Series, width: int = 72, height: int = 16) -> str:
    """A plain-text chart: '.' train loss, 'o' val loss, axes labelled with step and loss."""
    points = train + val
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    low_step, high_step = min(steps), max(steps)
    low, high = min(losses), max(losses)
    span_step, span = max(high_step - low_step, 1), max(high - low, 1e-9)
    grid = [[" "] * width for _ in range(height)]
    for marker, series in ((".", train), ("o", val)):
        for step, value in series:
            column = round((step - low_step) / span_step * (width - 1))
            row = height - 1 - round((value - low) / span * (height - 1))
            grid[row][column] = marker
    label_width = 8
    lines = []
    for index, row in enumerate(grid):
        value = high - index / (height - 1) * span
        label = f"{value:7.3f}" if index in (0, height // 2, height - 1) else ""
        lines.append(f"{label:>{label_width}} |" + "".join(row))
    lines.append(" " * label_width + " +" + "-" * width)
    lines.append(" " * label_width + f"  step {low_step}" + f"step {high_step}".rjust(width - len(f"step {low_step}")))
    lines.append(" " * label_width + "  . train loss   o val loss")
    return "\n".join(lines)


def render_png(train: Series, val: Series, out: Path, title: str = "") -> None:
    try:
        import matplotlib  # noqa: PLC0415 (optional: cognimamba[plot])

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 (optional: cognimamba[plot])
    except ImportError as error:
        raise CogniError("--out PNG needs matplotlib: pip install 'cognimamba[plot]'") from error
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    if train:
        axes.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if val:
        axes.plot(*zip(*val, strict=True), "o-", label="val loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats/token)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
