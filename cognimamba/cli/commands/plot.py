"""`cogni plot RUN`: loss curves in the terminal (plotext), or as a PNG (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import stderr, stdout


def plot_command(
    run: Annotated[Path, typer.Argument(help="run dir")],
    out: Annotated[Path | None, typer.Option("--out", help="write a PNG here instead (needs matplotlib)")] = None,
    width: Annotated[int, typer.Option("--width", min=20, help="terminal chart width, in characters")] = 80,
    height: Annotated[int, typer.Option("--height", min=8, help="terminal chart height, in lines")] = 20,
) -> None:
    """Draw train and val loss against step."""
    from cognimamba.evaluation.plot import loss_series, render_png, render_terminal
    from cognimamba.runs.metrics import read_metrics

    train, val = loss_series(read_metrics(run))
    if out is not None:
        render_png(train, val, out, title=str(run))
        stderr().print(f"wrote {out}")
    else:
        stdout().print(render_terminal(train, val, width, height, title=str(run)), highlight=False, markup=False,
                       soft_wrap=True)
