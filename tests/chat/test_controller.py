"""The chat controller: what the TUI, the line mode and a server share (saving, reopening, exporting)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cognimamba.chat.controller import ChatController
from cognimamba.chat.history import HistoryStore
from cognimamba.chat.session import ChatSession, Message, ReplyFinished, TextDelta, ToolRan
from cognimamba.chat.tools import ToolBox
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from tests.chat.scripts import ScriptedSource

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'


@pytest.fixture
def history(tmp_path: Path):
    with HistoryStore(tmp_path / "history.db") as store:
        yield store


def test_the_first_message_creates_the_chat_and_the_reply_is_saved(history):
    chat = ChatController(ChatSession("Be kind."), history, run_label="runs/tiny")
    assert chat.chat_id is None and chat.display_title == "Chat"
    events = list(chat.send("Say hello to the owl", ScriptedSource(["Hello, owl."])))
    assert isinstance(events[-1], ReplyFinished)
    (record,) = history.list_chats()
    assert (record.id, record.title, record.run, record.system_prompt) == (
        chat.chat_id, "Say hello to the owl", "runs/tiny", "Be kind.")
    assert [(m.role, m.content) for m in history.messages(record.id)] == [
        ("user", "Say hello to the owl"), ("assistant", "Hello, owl.")]


def test_without_a_history_it_only_replies(history):
    """How a server uses it: the conversation comes with the request, nothing is written anywhere."""
    session = ChatSession(messages=[Message("user", "hi"), Message("assistant", "Hello."), Message("user", "And?")],
                          settings=GenerationConfig(temperature=0.0), stop=["\n\n"])
    source = ScriptedSource(["And so on."])
    chat = ChatController(session)
    text = "".join(e.text for e in chat.reply(source) if isinstance(e, TextDelta))
    assert text == "And so on." and session.messages[-1].content == "And so on."
    assert source.stops == [["<|im_start|>", "\n\n"]] and chat.chat_id is None
    assert history.list_chats() == []


def test_a_stopped_reply_is_saved_with_its_stop_reason(history):
    source = ScriptedSource(["one two three four"], pause_after=2)
    chat = ChatController(ChatSession(), history)
    cancel = threading.Event()
    for event in chat.send("count", source, cancel):
        if isinstance(event, TextDelta) and event.text == "two ":
            cancel.set()
    saved = history.messages(chat.chat_id)[-1]
    assert saved.content == "one two" and saved.meta["stop_reason"] == "cancelled"


def test_tool_results_are_saved_between_the_replies(history):
    source = ScriptedSource([CALL, "It is 42."])
    chat = ChatController(ChatSession(tools=ToolBox(enabled=True)), history)
    assert sum(isinstance(e, ToolRan) for e in chat.send("6*7?", source)) == 1
    assert [m.role for m in history.messages(chat.chat_id)] == ["user", "assistant", "tool", "assistant"]


def test_settings_system_prompt_and_title_follow_the_saved_chat(history):
    chat = ChatController(ChatSession(), history)
    chat.rename("Owls")  # a chat with a title is worth keeping: renaming saves it
    chat.set_system_prompt("You are an owl.")
    chat.set_settings(GenerationConfig(temperature=0.0, max_new_tokens=9))
    list(chat.send("hoot?", ScriptedSource(["Hoot."])))
    reopened = ChatController.open(history, chat.chat_id, run_label="runs/tiny")
    assert (reopened.title, reopened.session.system_prompt, reopened.session.settings.max_new_tokens) == (
        "Owls", "You are an owl.", 9)
    assert [m.content for m in reopened.session.messages] == ["hoot?", "Hoot."]
    list(reopened.send("again?", ScriptedSource(["Hoot hoot."])))
    assert len(history.messages(chat.chat_id)) == 4 and len(history.list_chats()) == 1


def test_a_reply_still_streaming_is_not_saved_into_a_cleared_or_deleted_chat(history):
    chat = ChatController(ChatSession(), history)
    list(chat.send("first", ScriptedSource(["kept until clear"])))
    events = chat.send("second", ScriptedSource(["late"]))
    next(events)  # the reply has started when the user clears the chat
    chat.clear()
    list(events)
    assert history.messages(chat.chat_id) == [] and chat.session.messages == []
    assert history.get_chat(chat.chat_id).title == "first"  # clear keeps the chat
    events = chat.send("third", ScriptedSource(["late again"]))
    next(events)
    chat.delete()
    list(events)
    assert history.list_chats() == [] and chat.chat_id is None


def test_export_writes_markdown_named_after_the_title(history, tmp_path: Path):
    chat = ChatController(ChatSession(), history, run_label="runs/tiny")
    list(chat.send("What do owls eat?", ScriptedSource(["Mice, mostly."])))
    assert chat.export_name() == "what-do-owls-eat.md"
    written = chat.export(tmp_path / chat.export_name())
    text = written.read_text()
    assert text.startswith("# What do owls eat?\n") and "`runs/tiny`" in text and "Mice, mostly." in text


def test_a_message_that_cannot_fit_leaves_the_session_and_history_as_they_were(history):
    """A failed send must not leave a user turn without a reply (shown twice after a restart) or a new chat."""
    source = ScriptedSource(["ok"], context_length=200)
    chat = ChatController(ChatSession(), history)
    list(chat.send("short", source))
    with pytest.raises(CogniError, match="clear the chat") as error:
        chat.send("x" * 500, source)
    assert "shorten the message" in str(error.value) and "longer context" in str(error.value)
    assert [m.content for m in chat.session.messages] == ["short", "ok"]
    assert [m.content for m in history.messages(chat.chat_id)] == ["short", "ok"]
    list(chat.send("again", source))  # the next message still sees the earlier turns
    assert "short" in source.prompts[-1]


def test_a_failed_first_message_creates_no_chat(history):
    chat = ChatController(ChatSession(), history)
    with pytest.raises(CogniError):
        chat.send("x" * 500, ScriptedSource(["ok"], context_length=100))
    assert history.list_chats() == [] and chat.chat_id is None and chat.title == ""


def test_take_back_and_regenerate_keep_the_history_in_step(history):
    source = ScriptedSource(["first answer", "second answer", "third answer"])
    chat = ChatController(ChatSession(), history)
    list(chat.send("question", source))
    list(chat.regenerate(source))
    reply = chat.session.messages[-1]
    assert reply.content == "second answer"
    assert reply.meta["versions"] == ["first answer", "second answer"] and reply.meta["version"] == 1
    chat.show_version(reply, 0)
    saved = history.messages(chat.chat_id)
    assert [m.content for m in saved] == ["question", "first answer"] and saved[-1].meta["version"] == 0
    assert chat.take_back_last() == "question"
    assert chat.session.messages == [] and history.messages(chat.chat_id) == []


def test_tools_that_fill_the_context_are_refused():
    session = ChatSession()
    with pytest.raises(CogniError, match="keep tools off"):
        session.check_tools_fit(ScriptedSource(["ok"], context_length=256), ToolBox(enabled=True))
    session.check_tools_fit(ScriptedSource(["ok"], context_length=4096), ToolBox(enabled=True))
