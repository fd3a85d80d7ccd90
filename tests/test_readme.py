"""The README's commands run on a fresh clone: they name no file outside the repository, and every `cogni` command
in them parses (its subcommand and options exist and take what is given), so renaming an option fails here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cognimamba.cli.app import cli_command

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
SHELL_BREAKS = {"&&", "||", "|", ";", ")"}


def shell_lines(readme: Path) -> list[str]:
    """Each command of the README's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def cogni_commands(readme: Path) -> list[list[str]]:
    """The arguments of every `cogni ...` in the README's bash blocks, up to the end of its shell command."""
    commands = []
    for line in shell_lines(readme):
        words = shlex.split(line.replace(")", " ) "), comments=True)
        for start, word in enumerate(words):
            if word == "cogni":
                rest = words[start + 1:]
                end = next((index for index, each in enumerate(rest) if each in SHELL_BREAKS), len(rest))
                commands.append(rest[:end])
    return commands


def parse(args: list[str]) -> None:
    """Parse `cogni ARGS` as the CLI would, down to the subcommand's options, with every command's body a no-op."""
    cli = cli_command()
    commands = [cli]
    for command in commands:
        commands.extend(getattr(command, "commands", {}).values())
        if not hasattr(command, "commands"):
            command.callback = lambda *args, **kwargs: None
    cli.main(list(args), prog_name="cogni", standalone_mode=False)


@pytest.mark.parametrize("readme", READMES, ids=lambda path: str(path.relative_to(ROOT)))
def test_readme_names_no_file_outside_the_repository(readme: Path) -> None:
    outside = [line for line in shell_lines(readme) if "../shared" in line or "/work/" in line]
    assert not outside, outside


@pytest.mark.parametrize("readme", READMES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_cogni_command_in_the_readme_parses(readme: Path) -> None:
    commands = cogni_commands(readme)
    assert len(commands) > 5
    broken = []
    for args in commands:
        try:
            parse(args)
        except Exception as error:  # a usage error of typer's click (it vendors its own)
            broken.append(f"cogni {shlex.join(args)}: {getattr(error, 'format_message', error.__str__)()}")
    assert not broken, "\n".join(broken)
