"""`cogni merge RUN ADAPTER --out DIR`: fold a LoRA adapter into its base run, giving a plain run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import stderr, stdout


def merge_command(
    run: Annotated[Path, typer.Argument(help="the base run the adapter was trained on")],
    adapter: Annotated[Path, typer.Argument(help="a LoRA run dir (cogni train --lora) or a PEFT adapter dir")],
    out: Annotated[Path, typer.Option("--out", help="new run dir for the merged model")],
) -> None:
    """Merge LoRA weights into the base model: the result loads, chats and exports like any run."""
    from cognimamba.runs.merge import merge_to_run

    merged = merge_to_run(run, adapter, out)
    stderr().print(f"[green]merged[/] {adapter} into {run} -> {merged}\nnext: cogni chat {merged}", highlight=False)
    stdout().print(str(merged), highlight=False, soft_wrap=True)
