"""`cogni chat --url`: the same chat (full screen, `--plain`, `--prompt`) with a server's model instead of a run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cognimamba.errors import CogniError


def remote_chat(url: str, api_key: str | None, model: str | None, prompt: str | None, system: str | None,
                plain: bool, overrides: dict[str, Any], stop: list[str] | None, tools, history_db: Path | None,
                chat_id: int | None, as_json: bool) -> None:
    """Called by `cogni chat` once its options are checked; the imports stay inside for a fast `cogni --help`."""
    from cognimamba.chat.history import HistoryStore
    from cognimamba.chat.session import ChatSession, settings_with
    from cognimamba.cli.commands.chat import _answer_once, _read_piped_line

    def connect():  # -> RemoteSource
        try:
            from cognimamba.chat.remote import RemoteSource  # httpx is an optional dependency
        except ImportError:
            raise CogniError("`cogni chat --url` needs httpx: pip install 'cognimamba[serve]'") from None
        return RemoteSource(url, api_key, model)

    if prompt is not None:
        text = sys.stdin.read() if prompt == "-" else prompt
        if not text.strip():
            raise CogniError("--prompt: the message is empty")
        source = connect()
        session = ChatSession(system or "", settings_with(source.defaults, overrides, "option"), tools, stop=stop)
        _answer_once(session, source, text.strip(), as_json)
        return
    if not plain and not (sys.stdin.isatty() and sys.stdout.isatty()):
        sys.stderr.write("not a terminal: using the line-mode chat (--plain)\n")
        plain = True
    history = HistoryStore(history_db)
    try:
        record = history.get_chat(chat_id) if chat_id is not None else None
        if plain:
            from cognimamba.chat.plain import LineChat

            source = connect()
            if source.notice:
                sys.stderr.write(source.notice + "\n")
            session = ChatSession(system or "", settings_with(source.defaults, overrides, "option"), tools)
            if record is not None:
                history.load_session(record.id, session)
            read_line = input if sys.stdin.isatty() else _read_piped_line
            LineChat(source, history, session, url, read_line, chat_id=record.id if record else None,
                     title=record.title if record else "").run()
            return
        from cognimamba.chat.tui.app import ChatApp, NewChatDefaults

        app = ChatApp(connect, history, run_label=url, tools=tools, defaults=NewChatDefaults(system or "", overrides),
                      chat_id=chat_id)
        app.run()
        if app.load_error:
            raise CogniError(app.load_error)
    finally:
        history.close()
