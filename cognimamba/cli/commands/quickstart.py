"""`cogni quickstart`: the whole path on a built-in default, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import stderr


def quickstart_command(
    data: Annotated[str | None, typer.Option("--data", help="a corpus (file or named dataset) instead of the built-in stories")] = None,
    max_time: Annotated[str | None, typer.Option("--max-time", help="training budget (default: 3m, with "
                                                 "--chat 5m)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run dir (default: runs/quickstart-DATE)")] = None,
    stories: Annotated[int, typer.Option("--stories", help="how many procedural stories to generate")] = 4000,
    chat: Annotated[bool, typer.Option("--chat", help="train a chat model that calls the built-in calculator "
                                       "and clock, on procedural conversations")] = False,
    conversations: Annotated[int, typer.Option("--conversations", min=100, help="with --chat: how many "
                                               "procedural conversations to generate")] = 8000,
    eval_conversations: Annotated[int, typer.Option("--eval-conversations", min=1, help="with --chat: held-out "
                                                    "conversations for the chat eval")] = 100,
) -> None:
    """Generate a story corpus (or, with --chat, conversations), prepare it, train the cpu profile and test it."""
    if chat:
        from cognimamba.errors import CogniError

        if data is not None:
            raise CogniError("--data and --chat do not go together; --chat trains on built-in conversations")
        from cognimamba.cli.quickstart import run_chat_quickstart

        run_chat_quickstart(max_time=max_time or "5m", out=out, conversations=conversations,
                            held_out_count=eval_conversations, console=stderr())
        return
    from cognimamba.cli.quickstart import run_quickstart

    run_quickstart(data=data, max_time=max_time or "3m", out=out, stories=stories, console=stderr())
