"""The SQLite chat history: contents, crash safety under SIGKILL, and two processes writing at once."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cognimamba.chat.format import ToolCall
from cognimamba.chat.history import SCHEMA_VERSION, HistoryStore, chat_title, default_history_path
from cognimamba.chat.session import ChatSession, Message
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError

REPO = Path(__file__).resolve().parents[2]


def test_chats_and_messages_round_trip(tmp_path: Path):
    with HistoryStore(tmp_path / "h.db") as store:
        settings = GenerationConfig(temperature=0.3, top_k=7, max_new_tokens=99, seed=4)
        first = store.create_chat("Maths", run="runs/tiny", system_prompt="Be exact.", settings=settings)
        second = store.create_chat("Other")
        store.append_message(first, Message("user", "6*7?"))
        store.append_message(first, Message("assistant", "", [ToolCall("calculator", {"expression": "6*7"})],
                                            {"problems": [], "stop_reason": "stop_token"}))
        store.append_message(first, Message("tool", '{"result": 42}', meta={"name": "calculator", "ok": True}))
        chats = store.list_chats()
        assert [c.id for c in chats] == [first, second]  # the chat with the newest message comes first
        assert chats[0].message_count == 3 and chats[1].message_count == 0
        session = ChatSession()
        record = store.load_session(first, session)
        assert (record.title, record.run, session.system_prompt, session.settings) == (
            "Maths", "runs/tiny", "Be exact.", settings)
        assert session.messages[1].tool_calls == [ToolCall("calculator", {"expression": "6*7"})]
        assert session.messages[2].meta == {"name": "calculator", "ok": True}

        store.update_chat(first, title="Arithmetic", system_prompt="", settings=GenerationConfig(temperature=1.5))
        record = store.get_chat(first)
        assert (record.title, record.system_prompt, record.settings.temperature) == ("Arithmetic", "", 1.5)
        store.clear_chat(first)
        assert store.messages(first) == [] and store.get_chat(first).title == "Arithmetic"
        store.append_message(second, Message("user", "hello"))
        store.delete_chat(second)
        assert [c.id for c in store.list_chats()] == [first]
        assert store._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0  # cascade
        with pytest.raises(CogniError, match="chat 12345 not found"):
            store.get_chat(12345)


def test_search_finds_chats_by_title_or_any_message_ignoring_case(tmp_path: Path):
    with HistoryStore(tmp_path / "h.db") as store:
        dogs = store.create_chat("About dogs")
        store.append_message(dogs, Message("user", "Tell me about the WOLF"))
        clouds = store.create_chat("Lieder")
        store.append_message(clouds, Message("assistant", "Über den Wolken: 100% sure_thing"))
        empty = store.create_chat("Empty")

        def found(query: str) -> list[int]:
            return [record.id for record in store.search_chats(query)]

        assert found("wolf") == [dogs] and found("DOGS") == [dogs]
        assert found("über") == [clouds] and found("ÜBER DEN") == [clouds]  # beyond ASCII, as str.casefold
        assert found("o") == [clouds, dogs]  # newest activity first, like list_chats
        assert found("100%") == [clouds] and found("0%s") == [] and found("e_t") == [clouds]  # % and _ are text
        assert found("e%") == [] and found("_") == [clouds]
        assert found("  ") == [empty, clouds, dogs] and found("cat") == []
        assert store.search_chats("wolf")[0].message_count == 1


def test_store_uses_wal_and_the_per_user_data_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("COGNI_HOME", str(tmp_path / "home"))
    assert default_history_path() == tmp_path / "home" / "data" / "history.sqlite3"
    with HistoryStore() as store:
        assert store.path == default_history_path()
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_history_is_private_to_its_user(tmp_path: Path, monkeypatch):
    """Like a shell's or ssh's: new directories 0700, the database and its WAL and shared-memory files 0600."""
    monkeypatch.setenv("COGNI_HOME", str(tmp_path / "home"))
    previous_umask = os.umask(0o022)  # the usual default, which leaves new files readable by everyone
    try:
        with HistoryStore() as store:
            store.append_message(store.create_chat("secret"), Message("user", "my password is hunter2"))
            files = [store.path, Path(f"{store.path}-wal"), Path(f"{store.path}-shm")]
            assert [mode(path) for path in files] == ["0o600"] * 3
        assert mode(tmp_path / "home") == mode(tmp_path / "home" / "data") == "0o700"

        shared = tmp_path / "shared"  # a directory the user made keeps the permissions they gave it
        shared.mkdir(mode=0o755)
        with HistoryStore(shared / "team.db"):
            assert (mode(shared), mode(shared / "team.db")) == ("0o755", "0o600")
    finally:
        os.umask(previous_umask)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_history_from_before_private_files_is_made_private_with_one_notice(tmp_path: Path):
    """Files made before histories were created 0600 kept their umask's 0644: opening one tightens it, once."""
    old = tmp_path / "old.db"
    HistoryStore(old).close()
    for path in (old, Path(f"{old}-wal"), Path(f"{old}-shm")):
        if path.exists():
            path.chmod(0o644)
    with HistoryStore(old) as store:
        assert mode(old) == "0o600"
        assert store.notice == f"{old}: the chat history was readable by others (0644); made it private (0600)"
        store.append_message(store.create_chat("secret"), Message("user", "hunter2"))
        assert mode(Path(f"{old}-wal")) == mode(Path(f"{old}-shm")) == "0o600"
    with HistoryStore(old) as store:
        assert store.notice is None  # already private: nothing to say


def test_unusable_files_are_clear_errors(tmp_path: Path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CogniError, match="not a usable chat history"):
        HistoryStore(garbage)
    newer = tmp_path / "newer.db"
    connection = sqlite3.connect(newer)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(CogniError, match="newer cognimamba"):
        HistoryStore(newer)
    with pytest.raises(CogniError, match="cannot create the chat history"):
        HistoryStore(garbage / "inside-a-file.db")


def test_chat_title():
    assert chat_title("  Hello   there\nfriend ") == "Hello there friend"
    assert chat_title("word " * 30) == "word word word word word word word word…"
    assert chat_title("") == "New chat"


WRITER = textwrap.dedent("""
    import sys
    import time
    from pathlib import Path
    from cognimamba.chat.session import Message
    from cognimamba.chat.history import HistoryStore

    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = HistoryStore(path)
    chat = store.create_chat(name)
    shared = int(sys.argv[4]) if len(sys.argv) > 4 else None
    print("ready", flush=True)
    while not Path(path + ".go").exists():  # start together, so the writes really interleave
        time.sleep(0.01)
    for index in range(count):
        store.append_message(chat, Message("user", f"{name} message {index} " + "x" * 2000))
        if shared is not None:
            store.append_message(shared, Message("assistant", f"{name} shared {index}"))
        if index == 5:
            print("writing", flush=True)
        if shared is not None and index == count // 2:  # meet halfway, so the writes interleave on any machine
            Path(f"{path}.{name}.half").touch()
            while len(list(Path(path).parent.glob(Path(path).name + ".*.half"))) < 2:
                time.sleep(0.01)
    print("done", flush=True)
""")


def start_writer(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def test_two_processes_write_one_history_at_once(tmp_path: Path):
    path = tmp_path / "shared.db"
    with HistoryStore(path) as store:
        shared = store.create_chat("shared")
    writers = [start_writer(str(path), name, "150", str(shared)) for name in ("alpha", "beta")]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    Path(f"{path}.go").touch()
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert out.split() == ["writing", "done"]
    with HistoryStore(path) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = {chat.title: chat.message_count for chat in store.list_chats()}
        assert counts == {"alpha": 150, "beta": 150, "shared": 300}
        shared_texts = [m.content for m in store.messages(shared)]
        assert shared_texts[:150] != [f"alpha shared {i}" for i in range(150)]  # they did interleave
        assert shared_texts[:150] != [f"beta shared {i}" for i in range(150)]
        for name in ("alpha", "beta"):  # each writer's messages arrive complete and in its order
            assert [t for t in shared_texts if t.startswith(name)] == [f"{name} shared {i}" for i in range(150)]


def test_a_kill_mid_write_leaves_a_consistent_history(tmp_path: Path):
    path = tmp_path / "killed.db"
    writer = start_writer(str(path), "victim", "100000")
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    Path(f"{path}.go").touch()
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    with HistoryStore(path) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (chat,) = store.list_chats()
        messages = store.messages(chat.id)
        assert len(messages) >= 6
        assert [m.content for m in messages] == [f"victim message {i} " + "x" * 2000 for i in range(len(messages))]
        store.append_message(chat.id, Message("user", "after the crash"))  # and it stays writable
        assert store.messages(chat.id)[-1].content == "after the crash"
