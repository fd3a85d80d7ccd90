"""Loss curves from metrics.jsonl: a text chart for the terminal (plotext) and a PNG (matplotlib)."""

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


def render_terminal(train: Series, val: Series, width: int = 80, height: int = 20, title: str = "") -> str:
    """The chart as plain text, drawn by plotext: '•' train loss, 'o' val loss, against step."""
    import plotext  # noqa: PLC0415 (pure Python, but only `cogni plot` draws in the terminal)

    figure = plotext.figure  # plotext draws on one module-wide figure: clear it, then draw ours
    figure.clear()
    for series, marker, label in ((train, "dot", "train loss"), (val, "o", "val loss")):
        if series:
            steps, losses = zip(*series, strict=True)
            figure.draw(figure.signal(list(steps), list(losses), marker=marker).label(label).lines())
    figure.plot_size(width, height)
    points = train + val  # the legend goes top right, in data units: loss falls, so that corner stays empty
    figure.legend(x=max(step for step, _ in points), y=max(loss for _, loss in points), ha="right", va="top",
                  relative=True)
    figure.title(title)
    figure.label("step", axis=0)
    figure.label("loss (nats/token)", axis=1)
    chart = figure.build().string(colorless=True)
    figure.clear()
    return "\n".join(line.rstrip() for line in chart.splitlines())


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
