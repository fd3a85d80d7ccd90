"""`cogni report RUN`: write the run's report card (RUN/report.md) again, e.g. after `cogni eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import stderr, stdout


def report_command(
    run: Annotated[Path, typer.Argument(help="run dir, or the OUT dir of `cogni recipe chat`")],
    sample: Annotated[bool, typer.Option("--sample/--no-sample", help="decode a short greedy sample (loads the "
                                         "model)")] = True,
    show: Annotated[bool, typer.Option("--print", help="also print the report")] = False,
) -> None:
    """Write report.md into the run dir: how it was made, data, model, training, every evaluation, a sample."""
    from cognimamba.recipes.report import is_recipe_dir, write_recipe_report
    from cognimamba.runs.layout import check_run_path

    if is_recipe_dir(run):
        path = write_recipe_report(run, sample=sample)
    else:
        from cognimamba.evaluation.report import write_report

        path = write_report(check_run_path(run), sample=sample)
    if show:
        stdout().print(path.read_text(encoding="utf-8"), highlight=False, markup=False, soft_wrap=True)
    stderr().print(f"wrote {path}", highlight=False, soft_wrap=True)
