"""A reply on its way from the model to the screen: its worker thread queues events, a frame at a time they are drawn.

Drawing each token would compete with decoding for the CPU, so the chat pane draws what has arrived at most every
FRAME_SECONDS (benchmarks/README.md has the app's speed against `--prompt`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from cognimamba.chat.session import ChatEvent, ChatSession, ReplyFinished, ReplySource, ReplyStarted, TextDelta
from cognimamba.chat.tui.conversation import Conversation
from cognimamba.chat.tui.status_line import StatusLine
from cognimamba.errors import CogniError

FRAME_SECONDS = 1 / 15


@dataclass
class Reply:
    """The reply being generated: the chat it belongs to, how to stop it, and when its worker is done."""

    session: ChatSession
    cancel: threading.Event
    done: threading.Event = field(default_factory=threading.Event)


class ReplyStream:
    """The events reply workers queue, drawn a frame at a time into the conversation and the status line."""

    def __init__(self) -> None:
        # (session, event), appended by the worker thread; the session tells which chat the event belongs to.
        self.pending: deque[tuple[ChatSession, ChatEvent]] = deque()
        # The frame timer and a reply's end both draw; one draw at a time, or a later batch (a tool result) can
        # overtake an earlier one still mounting (the call block it belongs in).
        self._drawing = asyncio.Lock()
        self._prompt_tokens = 0  # of the reply streaming now, for the live context count

    def run(self, reply: Reply, events: Iterator[ChatEvent], model_lock: threading.Lock) -> str | None:
        """In the worker thread: run the reply (its controller saves it), queueing its events; the error, if any."""
        try:
            with model_lock:
                try:
                    for event in events:
                        self.pending.append((reply.session, event))
                except CogniError as problem:
                    return str(problem)
                except Exception as problem:  # show it in the chat rather than kill the app mid-conversation
                    return f"generation failed: {type(problem).__name__}: {problem}"
            return None
        finally:
            reply.done.set()

    async def draw(self, conversation: Conversation, status: StatusLine, shown: ChatSession,
                   streaming_from: ReplySource | None) -> None:
        """Show the events of the chat `shown` that arrived since the last frame, consecutive deltas as one, and the
        speed so far (asked of `streaming_from`, the source of a reply still streaming)."""
        async with self._drawing:
            batch = []
            while self.pending:
                batch.append(self.pending.popleft())
            text = ""
            for session, event in batch:
                if session is not shown:
                    continue
                if isinstance(event, TextDelta):
                    text += event.text
                    continue
                await conversation.append_to_reply(text)
                text = ""
                await conversation.show_event(event)
                if isinstance(event, ReplyStarted):
                    status.context_used = self._prompt_tokens = event.prompt_tokens
                elif isinstance(event, ReplyFinished):
                    show_speed(status, event.stats.tokens_per_second, event.context_used)
            await conversation.append_to_reply(text)
            if text and streaming_from is not None:
                stats = streaming_from.stats
                show_speed(status, stats.tokens_per_second, self._prompt_tokens + stats.generated_tokens)


def show_speed(status: StatusLine, tokens_per_second: float, context_used: int) -> None:
    status.speed = f"{tokens_per_second:.1f} tok/s" if tokens_per_second else ""
    status.context_used = context_used
