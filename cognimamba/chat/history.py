"""Chat history in SQLite under the per-user data dir, shared by the TUI and the line-mode chat.

WAL journaling and one short transaction per change mean a kill at any moment loses at most the reply
being generated (a reply is written once, when it is complete), and several `cogni chat` processes can
use one history file at once: writers wait for each other (busy timeout) instead of failing.

What people type into a chat is private, so, as shells and ssh do with theirs, the history is made for
its user alone: missing directories are created 0700 and a new database 0600 (SQLite gives its -wal and
-shm files the database's permissions). Directories that already exist keep what they have; a database from
before histories were made private is tightened to 0600 when opened, and `notice` says so once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cognimamba.chat.format import ToolCall
from cognimamba.chat.session import ChatSession, Message, settings_from_dict
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.system.paths import user_data_dir

SCHEMA_VERSION = 1
HISTORY_FILE = "history.sqlite3"
BUSY_TIMEOUT_MS = 15_000
PRIVATE_MODE = 0o600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    run TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tool_calls TEXT NOT NULL DEFAULT '[]',
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages(chat_id, id);
"""
# A chat's columns as ChatRecord takes them, with its message count.
_CHAT_ROWS = ("SELECT c.id, c.title, c.run, c.system_prompt, c.settings, c.created_at, c.updated_at, "
              "(SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id) FROM chats c")


def default_history_path() -> Path:
    return user_data_dir() / HISTORY_FILE


@dataclass
class ChatRecord:
    id: int
    title: str
    run: str
    system_prompt: str
    settings: GenerationConfig
    created_at: float
    updated_at: float
    message_count: int = 0


def chat_title(first_message: str, limit: int = 40) -> str:
    """A title from the first user message: its first line, shortened at a word boundary."""
    line = " ".join(first_message.strip().split()) or "New chat"
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut.rstrip(",.;:") + "…"


class HistoryStore:
    """All chats and their messages; every public method is one transaction."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_history_path()
        try:
            _create_private_file(self.path)
        except OSError as error:
            raise CogniError(f"{self.path}: cannot create the chat history ({error.strerror or error}); "
                             "pass another --history-db") from error
        self.notice: str | None = _make_private(self.path)  # one line for the front end to show
        self._lock = threading.Lock()  # the TUI reads from its workers too; sqlite3 connections are not thread-safe
        try:
            # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE takes the write lock up front,
            # so two processes never deadlock upgrading a read to a write).
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            # SQLite's LIKE folds ASCII letters only; search_chats folds the others with this.
            self._db.create_function("casefold", 1, _casefold, deterministic=True)
            with self._transaction() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise CogniError(f"{self.path}: chat history from a newer cognimamba (schema {version}); "
                                     "upgrade cognimamba or use another --history-db")
                for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript would commit
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            raise CogniError(f"{self.path}: not a usable chat history ({error}); move the file away to start a "
                             "new history, or pass another --history-db") from error

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------------------------------- chats

    def create_chat(self, title: str, run: str = "", system_prompt: str = "",
                    settings: GenerationConfig | None = None) -> int:
        now = time.time()
        settings_json = json.dumps(dataclasses.asdict(settings or GenerationConfig()))
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO chats (title, run, system_prompt, settings, created_at, updated_at) "
                                "VALUES (?, ?, ?, ?, ?, ?)", (title, run, system_prompt, settings_json, now, now))
            return int(cursor.lastrowid or 0)

    def list_chats(self) -> list[ChatRecord]:
        """Newest activity first."""
        with self._lock:
            rows = self._db.execute(f"{_CHAT_ROWS} ORDER BY c.updated_at DESC, c.id DESC").fetchall()
        return [self._record(row) for row in rows]

    def search_chats(self, query: str) -> list[ChatRecord]:
        """The chats whose title or any message holds `query`, ignoring case, newest activity first (all of them
        for a blank query), found by SQLite in one query."""
        needle = query.strip().casefold()
        if not needle:
            return self.list_chats()
        if needle.isascii():  # LIKE runs in C and folds ASCII letters (though unlike casefold, "ß" is not "ss")
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", needle) + "%"
            title, content = "c.title LIKE ?1 ESCAPE '\\'", "m.content LIKE ?1 ESCAPE '\\'"
        else:  # "Über" holds "über": Python's casefold, called for each row, so only for such queries
            pattern = needle
            title, content = "instr(casefold(c.title), ?1)", "instr(casefold(m.content), ?1)"
        with self._lock:
            rows = self._db.execute(
                f"{_CHAT_ROWS} WHERE {title} OR EXISTS (SELECT 1 FROM messages m WHERE m.chat_id = c.id AND {content}) "
                "ORDER BY c.updated_at DESC, c.id DESC", (pattern,)).fetchall()
        return [self._record(row) for row in rows]

    def get_chat(self, chat_id: int) -> ChatRecord:
        with self._lock:
            row = self._db.execute(f"{_CHAT_ROWS} WHERE c.id = ?", (chat_id,)).fetchone()
        if row is None:
            raise CogniError(f"chat {chat_id} not found in {self.path}; `cogni chat RUN --plain` then /history "
                             "lists the saved chats")
        return self._record(row)

    @staticmethod
    def _record(row: tuple[Any, ...]) -> ChatRecord:
        try:
            settings = settings_from_dict(json.loads(row[4]))
        except json.JSONDecodeError:
            settings = GenerationConfig()
        return ChatRecord(row[0], row[1], row[2], row[3], settings, row[5], row[6], row[7])

    def update_chat(self, chat_id: int, *, title: str | None = None, system_prompt: str | None = None,
                    settings: GenerationConfig | None = None) -> None:
        changes: dict[str, Any] = {"updated_at": time.time()}
        if title is not None:
            changes["title"] = title
        if system_prompt is not None:
            changes["system_prompt"] = system_prompt
        if settings is not None:
            changes["settings"] = json.dumps(dataclasses.asdict(settings))
        assignments = ", ".join(f"{name} = ?" for name in changes)
        with self._transaction() as db:
            db.execute(f"UPDATE chats SET {assignments} WHERE id = ?", (*changes.values(), chat_id))

    def delete_chat(self, chat_id: int) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    def clear_chat(self, chat_id: int) -> None:
        """Remove the messages, keep the chat with its title, system prompt and settings."""
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE chat_id = ?", (chat_id,))
            db.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (time.time(), chat_id))

    # ------------------------------------------------------------------------------------------- messages

    def append_message(self, chat_id: int, message: Message) -> int:
        """Store one complete message (and touch the chat) in one transaction."""
        calls = json.dumps([{"name": call.name, "arguments": call.arguments} for call in message.tool_calls],
                           ensure_ascii=False)
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO messages (chat_id, role, content, tool_calls, meta, created_at) "
                                "VALUES (?, ?, ?, ?, ?, ?)",
                                (chat_id, message.role, message.content, calls,
                                 json.dumps(message.meta, ensure_ascii=False), now))
            db.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (now, chat_id))
            return int(cursor.lastrowid or 0)

    def messages(self, chat_id: int) -> list[Message]:
        with self._lock:
            rows = self._db.execute("SELECT role, content, tool_calls, meta FROM messages WHERE chat_id = ? "
                                    "ORDER BY id", (chat_id,)).fetchall()
        return [Message(role, content, _calls(calls), _object(meta)) for role, content, calls, meta in rows]

    def load_session(self, chat_id: int, session: ChatSession) -> ChatRecord:
        """Fill `session` with a saved chat's messages, system prompt and settings."""
        record = self.get_chat(chat_id)
        session.system_prompt = record.system_prompt
        session.settings = record.settings
        session.messages = self.messages(chat_id)
        return record


def _create_private_file(path: Path) -> None:
    """Create `path` 0600, and its missing directories 0700, unless it exists; the umask can only narrow these."""
    missing = []
    for directory in path.parents:
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _make_private(path: Path) -> str | None:
    """Tighten a database that others may read (made before new ones were 0600), with its -wal and -shm files,
    before SQLite opens it; the notice saying so, or None. A file the user does not own is left as it is."""
    if os.name != "posix":
        return None  # mode bits are POSIX's; Windows keeps who may read a file in its ACLs
    previous = None
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(PRIVATE_MODE)
                previous = mode if previous is None else previous
        except OSError:
            continue  # absent (no -wal yet), or someone else's
    if previous is None:
        return None
    return f"{path}: the chat history was readable by others ({previous:04o}); made it private ({PRIVATE_MODE:04o})"


def _casefold(text: str | None) -> str:
    return text.casefold() if isinstance(text, str) else ""


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _calls(text: str) -> list[ToolCall]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [ToolCall(str(item["name"]), dict(item.get("arguments") or {}))
            for item in items if isinstance(item, dict) and "name" in item] if isinstance(items, list) else []
