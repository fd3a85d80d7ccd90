"""The `cogni` command line: a thin map from commands to library functions.

Command modules import torch and friends inside their functions, so `cogni --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from cognimamba.commands.bench import bench_command
from cognimamba.commands.chat import chat_command
from cognimamba.commands.config_cmd import config_command, profiles_command
from cognimamba.commands.export import export_command
from cognimamba.commands.import_hf import import_hf_command
from cognimamba.commands.merge import merge_command
from cognimamba.commands.plot import plot_command
from cognimamba.commands.prepare import prepare_command
from cognimamba.commands.quickstart import quickstart_command
from cognimamba.commands.test_model import test_model_command
from cognimamba.commands.train import train_command

app = typer.Typer(
    name="cogni",
    help="Train a small conversational language model on the hardware you own, then talk to it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show full tracebacks for errors")) -> None:
    if debug:
        os.environ["COGNI_DEBUG"] = "1"


app.command("quickstart")(quickstart_command)
app.command("prepare")(prepare_command)
app.command("train")(train_command)
app.command("chat")(chat_command)
app.command("test-model")(test_model_command)
app.command("config")(config_command)
app.command("profiles")(profiles_command)
app.command("plot")(plot_command)
app.command("export")(export_command)
app.command("import-hf")(import_hf_command)
app.command("bench")(bench_command)
app.command("merge")(merge_command)


def _error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: user mistakes become one red line and a non-zero exit; --debug shows tracebacks."""
    from cognimamba.errors import CogniError

    debug = "--debug" in sys.argv[1:]
    try:
        result = app(standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except CogniError as error:
        if debug:
            raise
        _error(" ".join(str(error).split("\n")))
        sys.exit(error.exit_code)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.exceptions.Abort:
        _error("aborted")
        sys.exit(130)
    except click.ClickException as error:
        if debug:
            raise
        error.show()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except Exception as error:
        if debug:
            raise
        _error(f"internal error: {type(error).__name__}: {error} (run again with --debug for the traceback)")
        sys.exit(1)
