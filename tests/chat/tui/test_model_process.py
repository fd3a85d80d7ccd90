"""The chat app with its model in a child process (`cogni chat RUN`): replies, the inspector, and the child's end."""

from __future__ import annotations

from pathlib import Path

import pytest

from cognimamba.chat.controller import ChatController
from cognimamba.chat.history import HistoryStore
from cognimamba.chat.session import ChatSession, ReplyFinished
from cognimamba.chat.sources import LocalSource
from cognimamba.chat.tui.app import INSPECTED_ALTERNATIVES, ChatApp, NewChatDefaults
from cognimamba.chat.tui.conversation import AssistantMessage
from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.decoding import ChatModel
from cognimamba.inference.model_process import LoadRequest, ModelProcess
from cognimamba.runs.loading import load_run
from tests.chat.scripts import ScriptedSource
from tests.chat.tui.test_app import SIZE, in_event_loop, make_app, ready, send

GREEDY = {"temperature": 0, "max_new_tokens": 10}


def in_process_reply(run: Path, text: str) -> str:
    session = ChatSession(settings=GenerationConfig(temperature=0.0, max_new_tokens=10))
    events = ChatController(session).send(text, LocalSource(ChatModel.from_run(load_run(run))))
    return next(event for event in events if isinstance(event, ReplyFinished)).message.content


@pytest.mark.slow  # starts a child process
@in_event_loop
async def test_the_app_replies_through_a_model_process(tiny_run, tmp_path: Path):
    loaded: list[LocalSource] = []

    def load() -> LocalSource:
        loaded.append(LocalSource(ModelProcess(LoadRequest(tiny_run, device="cpu"))))
        return loaded[0]

    app = ChatApp(load, HistoryStore(tmp_path / "h.db"), run_label=str(tiny_run),
                  defaults=NewChatDefaults(setting_overrides=GREEDY))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await ready(app, pilot)
            assert app.source is loaded[0] and app.chat_pane.status.context_length == 64
            await send(app, pilot, "Once upon a time")
            reply = app.query_one(AssistantMessage)
            assert app.session.messages[-1].content == in_process_reply(tiny_run, "Once upon a time")
            assert reply.markdown.source.strip() == app.session.messages[-1].content
            stats = loaded[0].stats  # the child's figures reach the status line (no speed for a one-token reply)
            status = app.chat_pane.status
            assert stats.generated_tokens >= 1 and 0 < status.context_used <= 64
            assert status.speed == (f"{stats.tokens_per_second:.1f} tok/s" if stats.tokens_per_second else "")
            choices = reply.inspection.choices  # the token inspector's rows came back from the child
            assert choices and len(choices[0].alternatives) == INSPECTED_ALTERNATIVES
            assert "<|im_start|>user\nOnce upon a time" in reply.inspection.prompt
    finally:
        loaded[0].close()
    assert not loaded[0].model.running


class ClosingSource(ScriptedSource):
    closed = False

    def close(self) -> None:
        self.closed = True


@in_event_loop
async def test_a_source_replaced_by_another_run_is_closed(tmp_path: Path):
    first, second = ClosingSource(["first"]), ClosingSource(["second"])
    app = make_app(first, tmp_path / "h.db", open_run=lambda run: second, runs_folder=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await send(app, pilot, "hello")
        app.load_model(tmp_path / "other")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert app.source is second and first.closed and not second.closed
