"""One chat as every front end drives it: the session, where it is saved, and its reply loop.

The TUI, the line-mode chat and `--prompt` (and an HTTP server) do not talk to the history store
themselves: they send a message through a ChatController and show the session's events as they come,
while the controller keeps the history in step (the chat is created on its first message, a reply is
saved once it is finished or stopped). Without a HistoryStore nothing is kept on disk, which is what a
server answering self-contained requests wants: build a session from the request, then `reply`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

from cognimamba.chat.history import HistoryStore, chat_title
from cognimamba.chat.session import (
    ChatEvent,
    ChatSession,
    Message,
    ReplyFinished,
    ReplySource,
    ToolRan,
    conversation_markdown,
)
from cognimamba.chat.tools import ToolBox
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.system.fileio import atomic_write_text


class ChatController:
    """A ChatSession and, optionally, the saved chat it mirrors (`chat_id` is None until there is one).

    `reply` may run on a worker thread while the UI thread renames, clears or deletes the chat: a lock
    keeps a save and a delete apart, and a reply whose session was cleared away is no longer saved.
    """

    def __init__(self, session: ChatSession, history: HistoryStore | None = None, run_label: str = "",
                 chat_id: int | None = None, title: str = "", untitled: str = "Chat") -> None:
        self.session = session
        self.history = history
        self.run_label = run_label  # saved with the chat and named in exports: which run it talked to
        self.chat_id = chat_id
        self.title = title
        self.untitled = untitled  # what a chat without a title is called in exports and headers
        self._lock = threading.Lock()

    @classmethod
    def open(cls, history: HistoryStore, chat_id: int, tools: ToolBox | None = None, run_label: str = "",
             untitled: str = "Chat") -> ChatController:
        """A saved chat with its messages, system prompt and settings (CogniError if there is no such chat)."""
        session = ChatSession(tools=tools)
        record = history.load_session(chat_id, session)
        return cls(session, history, run_label, record.id, record.title, untitled)

    @property
    def display_title(self) -> str:
        return self.title or self.untitled

    # ------------------------------------------------------------------------------------------- messages

    def send(self, text: str, source: ReplySource, cancel: threading.Event | None = None) -> Iterator[ChatEvent]:
        """Add the user's message now (saving it, and the chat if new); the reply comes as you iterate.

        A message that cannot fit the context raises CogniError here and leaves the session and the history
        as they were, so the front end can give the text back to the user to shorten.
        """
        self.session.add_user(text)
        try:
            self.session.plan_prompt(source)
        except CogniError:
            self.session.messages.pop()
            raise
        self.session.messages.pop()
        self.add_user(text)
        return self.reply(source, cancel)

    def add_user(self, text: str) -> Message:
        message = self.session.add_user(text)
        if not self.title:
            self.title = chat_title(text)
        if self.history is not None:
            with self._lock:
                if self.chat_id is None:
                    self._create()
                assert self.chat_id is not None
                self.history.append_message(self.chat_id, message)
        return message

    def reply(self, source: ReplySource, cancel: threading.Event | None = None,
              earlier_replies: list[str] | None = None) -> Iterator[ChatEvent]:
        """The session's reply events; each finished reply (a stopped one too) and tool result is saved first.

        `earlier_replies` (from `regenerate`) go into the first reply's meta as its other versions.
        """
        session = self.session
        for event in session.reply(source, cancel):
            if isinstance(event, ReplyFinished) and earlier_replies:
                event.message.meta["versions"] = [*earlier_replies, event.message.content]
                event.message.meta["version"] = len(earlier_replies)
                earlier_replies = None
            if isinstance(event, ReplyFinished | ToolRan):
                self._save(session, event.message)
            yield event

    # ------------------------------------------------------------------------------------------- edit, retry

    def last_user_index(self) -> int | None:
        indexes = [i for i, message in enumerate(self.session.messages) if message.role == "user"]
        return indexes[-1] if indexes else None

    def take_back_last(self) -> str | None:
        """Remove the last user message and everything after it; its text comes back to be edited and resent."""
        index = self.last_user_index()
        if index is None:
            return None
        text = self.session.messages[index].content
        del self.session.messages[index:]
        self._rewrite()
        return text

    def regenerate(self, source: ReplySource, cancel: threading.Event | None = None) -> Iterator[ChatEvent]:
        """Answer the last user message again; the replies it had stay reachable as the new one's `versions`."""
        index = self.last_user_index()
        if index is None:
            raise CogniError("there is no message to answer again yet")
        answers = [m for m in self.session.messages[index + 1:] if m.role == "assistant"]
        earlier = list(answers[0].meta.get("versions") or [answers[0].content]) if answers else []
        del self.session.messages[index + 1:]
        self._rewrite()
        return self.reply(source, cancel, earlier)

    def show_version(self, message: Message, version: int) -> None:
        """Make version `version` of a regenerated reply the one the chat continues from."""
        versions = message.meta.get("versions") or [message.content]
        version %= len(versions)
        message.content = versions[version]
        message.tool_calls = []  # the calls belonged to the version that is now hidden
        message.meta["version"] = version
        self._rewrite()

    def _rewrite(self) -> None:
        """Save the session's messages again in full (after an edit took some away)."""
        with self._lock:
            if self.history is not None and self.chat_id is not None:
                self.history.clear_chat(self.chat_id)
                for message in self.session.messages:
                    self.history.append_message(self.chat_id, message)

    def _save(self, session: ChatSession, message: Message) -> None:
        with self._lock:
            if self.history is not None and self.chat_id is not None and session is self.session:
                self.history.append_message(self.chat_id, message)

    def _create(self) -> None:
        assert self.history is not None
        self.chat_id = self.history.create_chat(self.display_title, self.run_label, self.session.system_prompt,
                                                self.session.settings)

    # ------------------------------------------------------------------------------------------- the chat

    def set_system_prompt(self, text: str) -> None:
        self.session.system_prompt = text
        if self.history is not None and self.chat_id is not None:
            self.history.update_chat(self.chat_id, system_prompt=text)

    def set_settings(self, settings: GenerationConfig) -> None:
        self.session.settings = settings
        if self.history is not None and self.chat_id is not None:
            self.history.update_chat(self.chat_id, settings=settings)

    def rename(self, title: str) -> None:
        """Give the chat a title; a chat not saved yet is saved now, so the title has somewhere to live."""
        self.title = title
        if self.history is None:
            return
        with self._lock:
            if self.chat_id is None:
                self._create()
            else:
                self.history.update_chat(self.chat_id, title=title)

    def clear(self) -> None:
        """Remove the messages and keep the chat, its title, system prompt and settings.

        The session is replaced, not emptied, so a reply still streaming for the old one lands nowhere.
        """
        with self._lock:
            if self.history is not None and self.chat_id is not None:
                self.history.clear_chat(self.chat_id)
            old = self.session
            self.session = ChatSession(old.system_prompt, old.settings, old.tools,
                                       max_tool_rounds=old.max_tool_rounds, stop=old.stop)

    def delete(self) -> None:
        """Delete the saved chat; the controller goes on as an unsaved one, and a late reply is not saved."""
        with self._lock:
            if self.history is not None and self.chat_id is not None:
                self.history.delete_chat(self.chat_id)
            self.chat_id = None

    # ------------------------------------------------------------------------------------------- export

    def markdown(self) -> str:
        return conversation_markdown(self.display_title, self.session, self.run_label)

    def export_name(self) -> str:
        """A file name for the export, from the title: `my-chat.md`."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.display_title).strip("-").lower()[:40] or "chat"
        return f"{slug}.md"

    def export(self, path: Path) -> Path:
        """Write the chat as Markdown (crash-safe); returns the absolute path written."""
        path = Path(path).expanduser()
        atomic_write_text(path, self.markdown())
        return path.resolve()
