"""Option types and helpers shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

ConfigFileOption = Annotated[Path | None, typer.Option("--config", help="TOML config file (see `cogni config`)")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="override one field: section.field=value (repeatable)")]
ProfileOption = Annotated[str | None, typer.Option("--profile", help="cpu, 4gb, 6gb, 8gb, 12gb or auto")]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object for scripts")]


def stdout() -> Console:
    return Console()


def stderr() -> Console:
    return Console(stderr=True)
