"""The `cogni` command line: a thin map from commands to library functions.

Command modules import torch and friends inside their functions, so `cogni --help` stays fast.
"""

from __future__ import annotations

import os
import sys
import typing
from pathlib import Path
from typing import Any

import click
import typer

from cognimamba.cli.commands.bench import bench_command
from cognimamba.cli.commands.chat import chat_command
from cognimamba.cli.commands.config_cmd import config_command, profiles_command
from cognimamba.cli.commands.eval import eval_command
from cognimamba.cli.commands.export import export_command
from cognimamba.cli.commands.import_hf import import_hf_command
from cognimamba.cli.commands.merge import merge_command
from cognimamba.cli.commands.plot import plot_command
from cognimamba.cli.commands.prepare import prepare_command
from cognimamba.cli.commands.quickstart import quickstart_command
from cognimamba.cli.commands.recipe import recipe_app
from cognimamba.cli.commands.report import report_command
from cognimamba.cli.commands.serve import serve_command  # FastAPI and uvicorn load only when it runs
from cognimamba.cli.commands.test_model import test_model_command
from cognimamba.cli.commands.train import train_command
from cognimamba.system.openmp import set_openmp_waiting

app = typer.Typer(
    name="cogni",
    help="Train a small conversational language model on the hardware you own, then talk to it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _print_version(value: bool) -> None:
    if value:
        from cognimamba.system.version import VERSION

        typer.echo(f"cogni {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show full tracebacks for errors"),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="print the version and exit")) -> None:
    if debug:
        os.environ["COGNI_DEBUG"] = "1"


app.command("quickstart")(quickstart_command)
app.command("prepare")(prepare_command)
app.command("train")(train_command)
app.command("chat")(chat_command)
app.command("test-model")(test_model_command)
app.command("eval")(eval_command)
app.command("config")(config_command)
app.command("profiles")(profiles_command)
app.command("plot")(plot_command)
app.command("report")(report_command)
app.command("export")(export_command)
app.command("import-hf")(import_hf_command)
app.command("bench")(bench_command)
app.command("merge")(merge_command)
app.command("serve")(serve_command)
app.add_typer(recipe_app, name="recipe")


# What help shows for an option's value, by its annotation, instead of typer's Python types (`<str>`, `<int>`).
METAVARS: dict[Any, str] = {int: "N", float: "NUMBER", str: "TEXT", Path: "PATH"}


def _metavar(param: click.Parameter) -> str | None:
    """A flag takes no value: nothing. An argument: its name (RUN). An option: its kind (N, TEXT, PATH)."""
    if getattr(param, "is_flag", False):
        return ""
    if param.param_type_name == "argument":
        return (param.name or "value").upper()
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    element = (typing.get_args(annotation) or (annotation,))[0]  # list[str] -> str: a repeatable option
    return METAVARS.get(element)


def cli_command() -> click.Command:
    """`app` as the click command `main` runs, with conventional value names in help (`--threads N`)."""
    group = typer.main.get_command(app)
    commands = [group]
    for command in commands:  # grows as it goes: `recipe`'s own commands too
        commands.extend(getattr(command, "commands", {}).values())
        help_option = command.get_help_option(command.context_class(command))  # made (and cached) now
        for param in [*command.params, help_option]:
            if param is not None and param.metavar is None:
                param.metavar = _metavar(param)
            if param is not None and param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None  # typer adds `<path>` after RUN; the name says it
    return group


def _error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _click_errors() -> tuple[type[Exception], ...]:
    """Usage errors: click's, and the copy of click that typer vendors (typer._click) since typer 0.2x."""
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:
        return (click.ClickException,)
    return (click.ClickException, VendoredClickException)


def main() -> None:
    """Entry point: user mistakes become one red line and a non-zero exit; --debug shows tracebacks."""
    from cognimamba.errors import CogniError

    # Idle OpenMP workers spin briefly, then sleep (set before torch loads; an exported value wins): see
    # system/openmp.py for why both matter.
    set_openmp_waiting()
    if sys.platform == "linux":
        # The CUDA caching allocator grows segments in place instead of leaving gaps between fixed ones, which
        # otherwise reserve more than the tensors take (benchmarks/RESULTS.md): room a 12 GB card cannot spare.
        # (Windows has no expandable segments.)
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    debug = "--debug" in sys.argv[1:]
    try:
        result = cli_command()(standalone_mode=False, prog_name="cogni")  # also under `python -m cognimamba`
        sys.exit(result if isinstance(result, int) else 0)
    except CogniError as error:
        if debug:
            raise
        _error(" ".join(str(error).split("\n")))
        sys.exit(error.exit_code)
    except (click.exceptions.Exit, typer.Exit) as exit_:
        sys.exit(exit_.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        _error("aborted")
        sys.exit(130)
    except _click_errors() as error:
        if debug:
            raise
        if type(error).__name__ == "NoArgsIsHelpError":  # `cogni` alone: the help is the message
            error.show()
            sys.exit(error.exit_code)
        context = getattr(error, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        _error(f"{error.format_message()}{hint}")
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except OSError as error:  # permissions, missing dirs, read-only disks: the user's to fix, not a bug
        if debug:
            raise
        where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name)
        _error(f"{where + ': ' if where else ''}{error.strerror or error} (run again with --debug for the traceback)")
        sys.exit(1)
    except Exception as error:
        if debug:
            raise
        _error(f"internal error: {type(error).__name__}: {error} (run again with --debug for the traceback)")
        sys.exit(1)
