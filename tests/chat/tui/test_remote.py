"""`cogni chat --url` in the full-screen app, driven with Pilot against our own server."""

from __future__ import annotations

from pathlib import Path

from cognimamba.chat.history import HistoryStore
from cognimamba.chat.remote import RemoteSource
from cognimamba.chat.tui.app import ChatApp
from cognimamba.chat.tui.conversation import AssistantMessage, ToolCallBlock
from cognimamba.serve.engine import load_served_model
from tests.chat.tui.test_app import CALL, SIZE, in_event_loop, ready, send
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server


@in_event_loop
async def test_app_chats_with_the_tiny_model_behind_our_server(tiny_run: Path, tmp_path: Path):
    with running_server(load_served_model(tiny_run, "cpu", name="tiny")) as url:
        app = ChatApp(lambda: RemoteSource(f"{url}/v1", model="tiny"), HistoryStore(tmp_path / "h.db"),
                      run_label=f"{url}/v1")
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            status = app.chat_pane.status
            assert status.model == "tiny" and status.context_length == 64  # from the server's models
            app.session.settings.max_new_tokens = 8
            await send(app, pilot, "Once upon a time")
            finished = app.session.messages[-1]
            assert finished.role == "assistant" and finished.meta["generated_tokens"] > 0  # the server's usage
            assert app.query(AssistantMessage)
            assert app.history.list_chats()  # saved like any chat


@in_event_loop
async def test_app_shows_a_tool_call_the_server_model_makes(tmp_path: Path):
    with running_server(scripted_model([f"Computing.\n{CALL}"])) as url:
        app = ChatApp(lambda: RemoteSource(f"{url}/v1"), HistoryStore(tmp_path / "h.db"), run_label=url)
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            await send(app, pilot, "6*7?")
            (block,) = app.query(ToolCallBlock)
            assert block.call.name == "calculator" and block.call.arguments == {"expression": "6*7"}
