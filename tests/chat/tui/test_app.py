"""The chat app driven with Pilot: streaming, Esc, system prompt, settings, reopening chats, tool calls."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import pytest
from textual.widgets import Input, ListView, TextArea

from cognimamba.chat.history import HistoryStore
from cognimamba.chat.session import Message
from cognimamba.chat.sources import LocalSource
from cognimamba.chat.tools import ToolBox
from cognimamba.chat.tui.app import ChatApp, NewChatDefaults
from cognimamba.chat.tui.conversation import AssistantMessage, MalformedToolCall, Notice, ToolCallBlock, UserMessage
from cognimamba.chat.tui.dialogs import ConfirmScreen, HelpScreen, SettingsScreen
from cognimamba.chat.tui.prompt_input import PromptInput
from cognimamba.chat.tui.sidebar import Sidebar
from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.decoding import ChatModel
from cognimamba.runs.loading import load_run
from tests.chat.scripts import ScriptedSource

SIZE = (100, 32)


def in_event_loop(test):
    """Run an async Pilot test with asyncio.run (no pytest-asyncio or anyio plugin needed)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'


def make_app(source, db: Path, **kwargs) -> ChatApp:
    return ChatApp(lambda: source, HistoryStore(db), run_label="runs/scripted", **kwargs)


async def ready(app: ChatApp, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert app.source is not None


async def steady_cursors(app: ChatApp, pilot) -> None:
    """Snapshots draw the focused field's cursor: a blinking one is hidden on every other half second, and a slow
    host reaches the snapshot in either phase."""
    for widget in app.screen.query("*"):
        if hasattr(widget, "cursor_blink"):
            widget.cursor_blink = False
    await pilot.pause()


async def send(app: ChatApp, pilot, text: str, wait: bool = True) -> None:
    app.query_one(PromptInput).focus()
    app.query_one(PromptInput).load_text(text)
    await pilot.press("enter")
    if wait:
        await app.workers.wait_for_complete()
        await pilot.pause()


async def wait_for(pilot, condition, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@in_event_loop
async def test_reply_streams_into_the_conversation(tmp_path: Path):
    source = ScriptedSource(["Hello **world**, this streams in pieces."], pause_after=2)
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "Say hello", wait=False)
        await wait_for(pilot, source.paused.is_set, "the reply to pause mid-stream")
        await pilot.pause()
        reply = app.query_one(AssistantMessage)
        assert reply.raw == "Hello **"  # two chunks of four characters so far
        assert app.chat_pane.generating and "generating" in app.chat_pane.status.state
        source.resume.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert reply.markdown.source == "Hello **world**, this streams in pieces."
        assert app.chat_pane.status.state == "ready" and not app.chat_pane.generating
        assert [w.render().plain for w in app.query(UserMessage)] == ["Say hello"]
        assert app.query_one(PromptInput).text == ""
    with HistoryStore(tmp_path / "h.db") as store:
        (chat,) = store.list_chats()
        assert chat.title == "Say hello"
        assert [(m.role, m.content) for m in store.messages(chat.id)] == [
            ("user", "Say hello"), ("assistant", "Hello **world**, this streams in pieces.")]


@in_event_loop
async def test_real_model_reply_with_speed_and_context(tiny_run, tmp_path: Path):
    model = LocalSource(ChatModel.from_run(load_run(tiny_run)))
    app = ChatApp(lambda: model, HistoryStore(tmp_path / "h.db"), run_label=str(tiny_run),
                  defaults=NewChatDefaults(setting_overrides={"temperature": 0, "max_new_tokens": 10}))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.session.settings.temperature == 0 and app.session.settings.max_new_tokens == 10
        await send(app, pilot, "Once upon a time")
        reply = app.query_one(AssistantMessage)
        assert reply.markdown.source.strip() == app.session.messages[-1].content
        assert app.chat_pane.status.speed.endswith("tok/s")
        assert 0 < app.chat_pane.status.context_used <= 64 and app.chat_pane.status.context_length == 64
        assert "tokens" in reply.footer.render().plain


@in_event_loop
async def test_escape_stops_a_reply(tmp_path: Path):
    source = ScriptedSource(["one two three four five six"], pause_after=2)
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "count", wait=False)
        await wait_for(pilot, source.paused.is_set, "the reply to start")
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.chat_pane.status.state == "stopped" and not app.chat_pane.generating
        message = app.session.messages[-1]
        assert message.content == "one two" and message.meta["stop_reason"] == "cancelled"
        assert "stopped" in app.query_one(AssistantMessage).footer.render().plain
        # The chat goes on after a stop.
        source.pause_after = None
        await send(app, pilot, "again")
        assert len(app.query(AssistantMessage)) == 2
    with HistoryStore(tmp_path / "h.db") as store:
        messages = store.messages(store.list_chats()[0].id)
        assert messages[1].content == "one two" and messages[1].meta["stop_reason"] == "cancelled"


@in_event_loop
async def test_shift_enter_and_ctrl_j_insert_newlines(tmp_path: Path):
    app = make_app(ScriptedSource(["ok"]), tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("a", "ctrl+j", "b", "shift+enter", "c")
        assert app.query_one(PromptInput).text == "a\nb\nc"
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        assert app.session.messages[0].content == "a\nb\nc"


@in_event_loop
async def test_system_prompt_editor_changes_the_prompt(tmp_path: Path):
    source = ScriptedSource(["Meow."])
    app = make_app(source, tmp_path / "h.db", defaults=NewChatDefaults(system_prompt="You are a dog."))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "Who are you?")
        assert source.prompts[0].startswith("<|im_start|>system\nYou are a dog.<|im_end|>\n")
        await pilot.press("f3")
        await pilot.pause()
        editor = app.screen.query_one("#system-prompt", TextArea)
        assert editor.text == "You are a dog."
        editor.load_text("You are a cat.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.session.system_prompt == "You are a cat."
        await send(app, pilot, "And now?")
        assert source.prompts[1].startswith("<|im_start|>system\nYou are a cat.<|im_end|>\n")
        chat_id = app.chat_id
    with HistoryStore(tmp_path / "h.db") as store:
        assert store.get_chat(chat_id).system_prompt == "You are a cat."


@in_event_loop
async def test_settings_screen_validates_and_applies(tmp_path: Path):
    source = ScriptedSource(["ok"])
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        screen.query_one("#setting-temperature", Input).value = "-2"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "too small" in str(screen.query_one("#settings-error").render())
        screen.query_one("#setting-temperature", Input).value = "0.25"
        screen.query_one("#setting-max_new_tokens", Input).value = "33"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, SettingsScreen)
        assert (app.session.settings.temperature, app.session.settings.max_new_tokens) == (0.25, 33)
        await send(app, pilot, "hi")
        assert (source.options[0].temperature, source.options[0].max_new_tokens) == (0.25, 33)
        assert "temperature 0.25" in app.chat_pane.status.settings


@in_event_loop
async def test_reopen_a_saved_chat_in_a_fresh_app(tmp_path: Path):
    db = tmp_path / "h.db"
    first = make_app(ScriptedSource(["First answer."]), db, defaults=NewChatDefaults(system_prompt="Be brief."))
    async with first.run_test(size=SIZE) as pilot:
        await ready(first, pilot)
        await send(first, pilot, "First question")
        await pilot.press("f4")
        await pilot.pause()
        first.screen.query_one("#setting-top_k", Input).value = "3"
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("ctrl+n")  # a second, newer chat
        await send(first, pilot, "Second question")
    second = make_app(ScriptedSource(["unused"]), db)
    async with second.run_test(size=SIZE) as pilot:
        await ready(second, pilot)
        chat_list = second.query_one("#chat-list", ListView)
        assert [item.chat_id for item in chat_list.children] == [2, 1]  # type: ignore[attr-defined]
        assert len(second.query(AssistantMessage)) == 0  # a new chat until one is chosen
        await pilot.press("ctrl+o", "down", "enter")
        await pilot.pause()
        assert second.chat_id == 1 and second.sub_title == "First question"
        assert second.session.system_prompt == "Be brief." and second.session.settings.top_k == 3
        assert [w.render().plain for w in second.query(UserMessage)] == ["First question"]
        assert second.query_one(AssistantMessage).markdown.source == "First answer."


@in_event_loop
async def test_tool_calls_valid_and_malformed_are_rendered_and_not_run_when_off(tmp_path: Path):
    reply = f'Let me compute.\n{CALL}\n<tool_call>{{"name": "calculator", "arguments": oops}}</tool_call>'
    source = ScriptedSource([reply, "unused"])
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "What is 6*7?")
        answer = app.query_one(AssistantMessage)
        assert answer.markdown.source == "Let me compute."
        (block,) = app.query(ToolCallBlock)
        assert block.title == "tool call · calculator"
        assert json.loads(str(block.arguments.render())) == {"expression": "6*7"}
        assert "not run: tool execution is off" in str(block.result.render())
        (malformed,) = app.query(MalformedToolCall)
        texts = [str(widget.render()) for widget in malformed.query("Static")]
        assert texts[0].startswith("⚠ malformed tool call: tool call is not valid JSON")
        assert texts[1] == '<tool_call>{"name": "calculator", "arguments": oops}</tool_call>'
        assert len(source.prompts) == 1  # nothing was fed back


@in_event_loop
async def test_calculator_runs_only_after_tools_are_enabled(tmp_path: Path):
    second_call = CALL.replace("6*7", "1+1")
    source = ScriptedSource(lambda prompt: "It is 42." if "<tool_response>" in prompt else CALL + second_call)
    app = make_app(source, tmp_path / "h.db", tools=ToolBox())
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert "tools off" in app.chat_pane.status.render().plain
        await pilot.press("ctrl+t")
        assert app.tools.enabled and "tools on" in app.chat_pane.status.render().plain
        await send(app, pilot, "What is 6*7?")
        results = [json.loads(str(b.result.render()).removeprefix("result:\n")) for b in app.query(ToolCallBlock)]
        assert results == [{"result": 42}, {"result": 2}]  # each result lands in its own call's block
        replies = app.query(AssistantMessage)
        assert len(replies) == 2 and replies[1].markdown.source == "It is 42."
        assert "<tools>" in source.prompts[0] and '{"result": 42}' in source.prompts[1]
        chat_id = app.chat_id
    with HistoryStore(tmp_path / "h.db") as store:
        assert [m.role for m in store.messages(chat_id)] == ["user", "assistant", "tool", "tool", "assistant"]
    reopened = make_app(ScriptedSource(["unused"]), tmp_path / "h.db", chat_id=chat_id)
    async with reopened.run_test(size=SIZE) as pilot:
        await ready(reopened, pilot)
        assert not reopened.tools.enabled  # tool execution is off again in a new session
        blocks = reopened.query(ToolCallBlock)
        assert ['"result": 42' in str(b.result.render()) for b in blocks] == [True, False]
        assert '"result": 2' in str(blocks[1].result.render())


@in_event_loop
async def test_user_tool_definitions_are_shown_and_rendered_but_never_run(tmp_path: Path):
    lookup = {"name": "lookup", "description": "Look a word up",
              "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}
    source = ScriptedSource(['<tool_call>{"name": "lookup", "arguments": {"word": "cat"}}</tool_call>'])
    app = make_app(source, tmp_path / "h.db", tools=ToolBox([lookup]))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("f9")
        await pilot.pause()
        listed = [str(widget.render()) for widget in app.screen.query(".tool-name")]
        assert listed == ["calculator — built in: off", "current_time — built in: off",
                          "lookup — from --tools: shown to the model, never executed"]
        await pilot.press("escape")
        await pilot.press("ctrl+t")  # even with execution on, a --tools definition is not run
        await send(app, pilot, "define cat")
        assert '"name": "lookup"' in source.prompts[0].split("<tools>")[1]
        (block,) = app.query(ToolCallBlock)
        assert "never executed" in str(block.result.render())
        assert len(source.prompts) == 1


@in_event_loop
async def test_context_trimming_is_announced(tmp_path: Path):
    source = ScriptedSource(["x" * 100], context_length=400)
    app = make_app(source, tmp_path / "h.db", defaults=NewChatDefaults(system_prompt="Keep me.",
                                                                      setting_overrides={"max_new_tokens": 50}))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        for index in range(3):
            await send(app, pilot, f"question {index}")
        notices = [str(n.render()) for n in app.query(Notice)]
        assert notices and "oldest message(s) were left out" in notices[-1]
        assert source.prompts[-1].startswith("<|im_start|>system\nKeep me.<|im_end|>\n")


@in_event_loop
async def test_help_palette_rename_export_clear_delete(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(ScriptedSource(["An answer."]), tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.keys)
        assert keys["escape"] == "Stop reply" and keys["shift+enter, ctrl+j"] == "new line in the message"
        await pilot.press("escape")
        await send(app, pilot, "A question")
        # Rename through the command palette.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Rename chat")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        answer = app.screen.query_one("#answer", Input)
        answer.value = "Renamed"
        await pilot.press("enter")
        await pilot.pause()
        assert app.sub_title == "Renamed" and app.history.get_chat(app.chat_id).title == "Renamed"
        # Export.
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen.query_one("#answer", Input).value == "renamed.md"
        await pilot.press("enter")
        await pilot.pause()
        exported = (tmp_path / "renamed.md").read_text()
        assert exported.startswith("# Renamed\n") and "## User\n\nA question" in exported
        # Clear keeps the chat, delete removes it.
        await pilot.press("ctrl+l")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert app.session.messages == [] and app.history.messages(app.chat_id) == []
        assert len(app.query(UserMessage)) == 0
        await pilot.press("f8")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert app.history.list_chats() == [] and app.chat_id is None


@in_event_loop
async def test_a_load_failure_ends_the_app_with_the_error(tmp_path: Path):
    from cognimamba.errors import CogniError

    def broken():
        raise CogniError("runs/x/model.safetensors: truncated or corrupted safetensors file")

    app = ChatApp(broken, HistoryStore(tmp_path / "h.db"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.load_error is not None, "the load to fail")
    assert app.load_error == "runs/x/model.safetensors: truncated or corrupted safetensors file"
    assert app.return_code == 2


@in_event_loop
async def test_chat_list_actions_apply_to_the_highlighted_chat_and_search(tmp_path: Path):
    db = tmp_path / "h.db"
    with HistoryStore(db) as store:
        older = store.create_chat("About dogs")
        from cognimamba.chat.session import Message

        store.append_message(older, Message("user", "Tell me about the wolf"))
    app = make_app(ScriptedSource(["ok"]), db)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "About cats")
        open_chat = app.chat_id
        await pilot.press("ctrl+o")  # the list: the open chat is first, then the older one
        await pilot.press("down")
        await pilot.press("f8")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "About dogs" in app.screen.question
        await pilot.press("y")
        await pilot.pause()
        with HistoryStore(db) as store:
            assert [record.id for record in store.list_chats()] == [open_chat]
        assert app.chat_id == open_chat and len(app.query(UserMessage)) == 1  # the open chat is untouched
        items = app.query_one("#chat-list", ListView).children
        assert "2 messages" in str(items[0].query("Label").last().render())  # titles come with a date
        app.query_one(Sidebar).post_message(Sidebar.SearchChanged("nothing like this"))
        await pilot.pause()
        assert len(app.query_one("#chat-list", ListView).children) == 0


@in_event_loop
async def test_the_run_picker_opens_another_run_and_keeps_the_chat(tiny_run, tmp_path: Path):
    opened: list[Path] = []

    def open_run(path: Path) -> ScriptedSource:
        opened.append(path)
        return ScriptedSource(["from the other run"])

    app = make_app(ScriptedSource(["first"]), tmp_path / "h.db", open_run=open_run, runs_folder=tiny_run.parent)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "hello")
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert "MB" in str(app.screen.query_one("#runs").get_option_at_index(0).prompt)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(opened) == 1 and opened[0] in (tiny_run, tiny_run / "best")  # newest first
        assert app.chat.run_label == str(opened[0])
        await send(app, pilot, "and you?")
        assert [m.content for m in app.session.messages] == ["hello", "first", "and you?", "from the other run"]


# ------------------------------------------------------------------------------------------------ snapshots


def snapshot_db(path: Path) -> Path:
    """A saved chat with Markdown, a code block, a tool call with its result and a malformed call."""
    with HistoryStore(path) as store:
        store.create_chat("Older chat about dogs")
        chat = store.create_chat("Arithmetic with tools", system_prompt="You can use tools.")
        store.append_message(chat, Message("user", "What is 6*7? Show Python too."))
        from cognimamba.chat.format import ToolCall

        store.append_message(chat, Message("assistant", "Let me compute that.",
                                           [ToolCall("calculator", {"expression": "6*7"})],
                                           {"generated_tokens": 31, "tokens_per_second": 120.5,
                                            "time_to_first_token": 0.02, "stop_reason": "stop_token",
                                            "problems": ["tool call is not valid JSON (JSONDecodeError: ...)"],
                                            "raw_calls": ['<tool_call>{"name": oops}</tool_call>']}))
        store.append_message(chat, Message("tool", '{"result": 42}', meta={"name": "calculator", "ok": True}))
        store.append_message(chat, Message("assistant", "It is **42**.\n\n```python\nprint(6 * 7)\n```",
                                           meta={"generated_tokens": 12, "tokens_per_second": 99.0,
                                                 "time_to_first_token": 0.01, "stop_reason": "stop_token"}))
    return path


def test_snapshot_new_chat(snap_compare, tmp_path: Path):
    app = make_app(ScriptedSource(["unused"]), tmp_path / "h.db")

    async def run_before(pilot) -> None:
        await ready(app, pilot)
        await steady_cursors(app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_reopened_chat_with_tool_calls(snap_compare, tmp_path: Path):
    db = snapshot_db(tmp_path / "h.db")
    app = make_app(ScriptedSource(["unused"]), db, chat_id=2)

    async def run_before(pilot) -> None:
        await ready(app, pilot)
        await steady_cursors(app, pilot)

    assert snap_compare(app, terminal_size=(110, 48), run_before=run_before)


@pytest.mark.parametrize("settings", [GenerationConfig()])
def test_snapshot_settings_screen(snap_compare, tmp_path: Path, settings):
    app = make_app(ScriptedSource(["unused"]), tmp_path / "h.db")

    async def run_before(pilot) -> None:
        await ready(app, pilot)
        await pilot.press("f4")
        await pilot.pause()
        await steady_cursors(app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
