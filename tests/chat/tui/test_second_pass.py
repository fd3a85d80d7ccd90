"""The chat app's second pass with Pilot: no lost input, edit/regenerate/copy, Ctrl+C, quitting mid-reply,
tools that cannot fit, small terminals, chat list actions, and the token inspector."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Button, DataTable, ListView

from cognimamba.chat.history import HistoryStore
from cognimamba.chat.tools import ToolBox
from cognimamba.chat.tui.conversation import AssistantMessage, SystemNote, UserMessage, Welcome
from cognimamba.chat.tui.dialogs import ConfirmScreen
from cognimamba.chat.tui.inspector import InspectorScreen, remaining_probability
from cognimamba.chat.tui.prompt_input import PromptInput
from cognimamba.chat.tui.sidebar import Sidebar
from cognimamba.chat.tui.status_line import fit_parts
from tests.chat.scripts import ScriptedSource
from tests.chat.tui.test_app import SIZE, in_event_loop, make_app, ready, send, steady_cursors, wait_for


@in_event_loop
async def test_a_failed_send_keeps_the_text_in_the_box_and_the_history_clean(tmp_path: Path):
    source = ScriptedSource(["ok"], context_length=200)
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "hello")
        too_long = "x" * 400
        await send(app, pilot, too_long)
        assert app.query_one(PromptInput).text == too_long  # nothing to paste again
        assert [m.content for m in app.session.messages] == ["hello", "ok"]
        assert [w.render().plain for w in app.query(UserMessage)] == ["hello"]
        assert not app.generating
    with HistoryStore(tmp_path / "h.db") as store:
        assert [m.content for m in store.messages(store.list_chats()[0].id)] == ["hello", "ok"]


@in_event_loop
async def test_up_and_down_recall_earlier_messages(tmp_path: Path):
    app = make_app(ScriptedSource(["ok"]), tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "first")
        await send(app, pilot, "second")
        prompt = app.query_one(PromptInput)
        await pilot.press("d", "r", "a", "f", "t")
        await pilot.press("up")
        assert prompt.text == "second"
        await pilot.press("up")
        assert prompt.text == "first"
        await pilot.press("down", "down")
        assert prompt.text == "draft"  # back to what was being typed


@in_event_loop
async def test_edit_the_last_message_and_resend(tmp_path: Path):
    source = ScriptedSource(["first reply", "second reply"])
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "Wht is a cat")
        await pilot.press("f6")
        await pilot.pause()
        prompt = app.query_one(PromptInput)
        assert prompt.text == "Wht is a cat" and app.session.messages == []
        assert len(app.query(UserMessage)) == 0 and len(app.query(AssistantMessage)) == 0
        await send(app, pilot, "What is a cat")
        assert [m.content for m in app.session.messages] == ["What is a cat", "second reply"]
    with HistoryStore(tmp_path / "h.db") as store:
        assert [m.content for m in store.messages(store.list_chats()[0].id)] == ["What is a cat", "second reply"]


@in_event_loop
async def test_regenerate_keeps_both_replies_reachable_and_copy(tmp_path: Path):
    source = ScriptedSource(["first\n\n```python\nprint(1)\n```", "second"])
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "question")
        await pilot.press("alt+c")
        assert app.clipboard == "print(1)"
        await pilot.press("f5")
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        (reply,) = app.query(AssistantMessage)
        assert reply.markdown.source == "second" and "2/2" in str(reply.border_title)
        await pilot.press("f7")
        assert app.clipboard == "second"
        await pilot.press("alt+left")
        await pilot.pause()
        assert "1/2" in str(reply.border_title) and reply.markdown.source.startswith("first")
        assert app.session.messages[-1].content.startswith("first")  # the chat goes on from the shown one


@in_event_loop
async def test_ctrl_c_stops_a_reply_and_a_second_one_quits(tmp_path: Path):
    source = ScriptedSource(["one two three four five six"], pause_after=2)
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "count", wait=False)
        await wait_for(pilot, source.paused.is_set, "the reply to start")
        await pilot.press("ctrl+c")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.status.state == "stopped" and app.session.messages[-1].meta["stop_reason"] == "cancelled"
        assert app.is_running
        app._last_interrupt = 0  # a while later: the first Ctrl+C only says how to quit
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert app.is_running
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_code == 0


@in_event_loop
async def test_quitting_during_a_reply_keeps_the_partial_reply(tmp_path: Path):
    source = ScriptedSource(["one two three four five six"], pause_after=2)
    app = make_app(source, tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "count", wait=False)
        await wait_for(pilot, source.paused.is_set, "the reply to start")
        await pilot.press("ctrl+q")
        await pilot.pause()
    with HistoryStore(tmp_path / "h.db") as store:
        saved = store.messages(store.list_chats()[0].id)
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[1].content == "one two" and saved[1].meta["stop_reason"] == "cancelled"


@in_event_loop
async def test_tools_that_cannot_fit_are_refused_with_the_reason(tmp_path: Path):
    app = make_app(ScriptedSource(["ok"], context_length=256), tmp_path / "h.db", tools=ToolBox())
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert not app.tools.enabled and "tools off" in app.status.render().plain
        (note,) = [n for n in app._notifications if n.severity == "error"]
        assert "tools do not fit" in note.message and "keep tools off" in note.message


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
async def test_the_inspector_shows_each_token_with_alternatives_summing_to_one(tmp_path: Path):
    source = ScriptedSource(["Hello there"])
    app = make_app(source, tmp_path / "h.db", tools=ToolBox(enabled=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(app, pilot)
        assert source.top_alternatives == 5  # the app asks the source for probabilities
        await send(app, pilot, "hi")
        await pilot.press("f10")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, InspectorScreen)
        choices = screen.inspection.choices
        assert [choice.token for choice in choices] == ["Hell", "o th", "ere"]
        for choice in choices:
            total = sum(p for _, p in choice.alternatives) + remaining_probability(choice)
            assert total == pytest.approx(1.0) and choice.alternatives[0] == (choice.token, choice.probability)
        table = screen.query_one("#tokens", DataTable)
        assert table.row_count == 3 and str(table.get_row_at(0)[-1]) == "0.100"
        assert "<tools>" in screen.inspection.prompt and screen.inspection.prompt.endswith("assistant\n")


@in_event_loop
async def test_welcome_text_system_prompt_and_narrow_terminals(tmp_path: Path):
    from cognimamba.chat.tui.app import NewChatDefaults

    app = make_app(ScriptedSource(["ok"]), tmp_path / "h.db", defaults=NewChatDefaults(system_prompt="Be brief."))
    async with app.run_test(size=(60, 15)) as pilot:
        await ready(app, pilot)
        assert len(app.query(Welcome)) == 1 and "Be brief." in str(app.query_one(SystemNote).render())
        assert not app.query_one(Sidebar).display  # collapsed below SIDEBAR_MIN_WIDTH
        await pilot.press("ctrl+b")
        assert app.query_one(Sidebar).display
        for key in ("f3", "f4"):
            await pilot.press(key)
            await pilot.pause()
            for button in app.screen.query(Button):
                assert app.screen.region.contains_region(button.region), (key, button.id)
            await pilot.press("escape")
            await pilot.pause()


def test_the_status_line_drops_whole_parts_to_fit():
    parts = ["ready", "120.5 tok/s", "context 28/256 (11%)", "tools off", "run", "temperature 0.8, top-k 50"]
    assert fit_parts(parts, 200) == " · ".join(parts)
    assert fit_parts(parts, 50) == "ready · 120.5 tok/s · context 28/256 (11%)"
    assert fit_parts(parts, 75).endswith(" · temperature…") and len(fit_parts(parts, 75)) <= 75


# ------------------------------------------------------------------------------------------------ snapshots


@pytest.mark.parametrize("size", [(80, 24), (60, 15)])
@pytest.mark.parametrize("key", ["f3", "f4", "ctrl+l"])
def test_snapshot_dialogs_keep_their_buttons_in_small_terminals(snap_compare, tmp_path: Path, size, key):
    app = make_app(ScriptedSource(["unused"]), tmp_path / "h.db")

    async def run_before(pilot) -> None:
        await ready(app, pilot)
        await pilot.press(key)
        await pilot.pause()
        await steady_cursors(app, pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


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
