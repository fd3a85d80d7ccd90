"""`cogni quickstart`: the whole path on a built-in default, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import stderr


def quickstart_command(
    data: Annotated[str | None, typer.Option("--data", help="a corpus (file or named dataset) instead of the built-in stories")] = None,
    max_time: Annotated[str, typer.Option("--max-time", help="training budget")] = "3m",
    out: Annotated[Path | None, typer.Option("--out", help="run dir (default: runs/quickstart)")] = None,
    stories: Annotated[int, typer.Option("--stories", help="how many procedural stories to generate")] = 4000,
) -> None:
    """Generate a story corpus, prepare it, train the cpu profile, test it and print a sample."""
    from cognimamba.cli.quickstart import run_quickstart

    run_quickstart(data=data, max_time=max_time, out=out, stories=stories, console=stderr())
