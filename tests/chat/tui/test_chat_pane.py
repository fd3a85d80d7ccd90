"""The chat pane with Pilot: no lost input, recall, edit/regenerate/copy, Ctrl+C, quitting mid-reply, tools that
cannot fit, the welcome text, dialogs in small terminals, and the token inspector."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.widgets import Button, DataTable, ListView

from cognimamba.chat.history import HistoryStore
from cognimamba.chat.session import ReplyFinished
from cognimamba.chat.tools import ToolBox
from cognimamba.chat.tui.conversation import AssistantMessage, SystemNote, ToolCallBlock, UserMessage, Welcome
from cognimamba.chat.tui.inspector import InspectorScreen, remaining_probability
from cognimamba.chat.tui.prompt_input import PromptInput
from cognimamba.chat.tui.sidebar import Sidebar
from cognimamba.chat.tui.status_line import fit_parts
from tests.chat.scripts import ScriptedSource
from tests.chat.tui.test_app import CALL, SIZE, in_event_loop, make_app, ready, send, steady_cursors, wait_for


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
        assert not app.chat_pane.generating
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
        assert app.chat_pane.status.state == "stopped" and app.session.messages[-1].meta["stop_reason"] == "cancelled"
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
        assert not app.tools.enabled and "tools off" in app.chat_pane.status.render().plain
        (note,) = [n for n in app._notifications if n.severity == "error"]
        assert "tools do not fit" in note.message and "keep tools off" in note.message


@in_event_loop
async def test_reply_keys_and_palette_commands_work_while_the_chat_list_has_the_focus(tmp_path: Path):
    app = make_app(ScriptedSource(["the answer"]), tmp_path / "h.db")
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "question")
        await pilot.press("ctrl+o")
        assert isinstance(app.focused, ListView)
        await pilot.press("f7")
        assert app.clipboard == "the answer"
        app.copy_to_clipboard("")
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Copy reply")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.clipboard == "the answer"
        await pilot.press("f10")
        await pilot.pause()
        assert isinstance(app.screen, InspectorScreen)


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


@in_event_loop
async def test_events_arriving_while_a_frame_is_still_drawing_wait_for_it(tmp_path: Path):
    """The frame timer and the reply's end both draw pending events; a second draw must not overtake the first.

    Seen in a terminal with the model in its own process: the tool result arrived while the first reply's call
    block was still being mounted, so it was lost ("waiting for the result…"), and the answer after it was drawn
    into the first reply's box.
    """
    source = ScriptedSource(lambda prompt: "It is 42." if "<tool_response>" in prompt else CALL)
    app = make_app(source, tmp_path / "h.db", tools=ToolBox(enabled=True))
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        events = list(app.chat.send("What is 6*7?", source))
        first_reply_ends = next(i for i, event in enumerate(events) if isinstance(event, ReplyFinished)) + 1
        app.chat_pane.stream.pending.extend((app.session, event) for event in events[:first_reply_ends])
        first_frame = asyncio.create_task(app.chat_pane.draw_pending())
        await asyncio.sleep(0)  # the first frame has taken its events and is mounting the call block
        app.chat_pane.stream.pending.extend((app.session, event) for event in events[first_reply_ends:])
        await asyncio.gather(first_frame, app.chat_pane.draw_pending())
        (block,) = app.query(ToolCallBlock)
        assert json.loads(str(block.result.render()).removeprefix("result:\n")) == {"result": 42}
        replies = app.query(AssistantMessage)
        assert len(replies) == 2 and replies[1].markdown.source == "It is 42."


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
