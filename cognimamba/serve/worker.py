"""One generation thread behind a first-come-first-served queue: the event loop never decodes.

Requests queue fairly behind the one model (no batching): each waits its turn in FIFO order, and past
`max_pending` (running + waiting) a new one is refused (429) rather than left to wait without bound.
Deltas cross back to the request's event loop through a `ReplyChannel`; a request that goes away sets its
`cancel` event, which the decoding loop checks before every token, and a cancelled job that has not
started yet is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from cognimamba.serve.engine import ReplyStats, ServedModel
from cognimamba.serve.prompting import ForcedStart
from cognimamba.serve.schemas import SamplingParams

log = logging.getLogger("cognimamba.serve")


class Busy(Exception):
    """The queue is full."""


@dataclass(frozen=True)
class Finished:
    stats: ReplyStats
    forced: str  # the text tool_choice put at the reply's start (already delivered as the first delta)


@dataclass(frozen=True)
class Failed:
    message: str


class ReplyChannel:
    """Carries one job's deltas, then its `Finished` or `Failed`, from the worker thread to the event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.items: asyncio.Queue[Any] = asyncio.Queue()

    def deliver(self, item: str | Finished | Failed) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server is shutting down
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)

    async def next(self) -> str | Finished | Failed:
        return await self.items.get()


@dataclass
class Job:
    prompt: str
    params: SamplingParams
    max_new_tokens: int
    channel: ReplyChannel
    forced: ForcedStart = field(default_factory=ForcedStart)
    stop: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)


class GenerationWorker:
    def __init__(self, model: ServedModel, max_pending: int) -> None:
        self.model = model
        self.max_pending = max_pending
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cogni-serve-generation", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests running or waiting."""
        return self._pending

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._pending >= self.max_pending:
                raise Busy
            self._pending += 1
        self._jobs.put(job)

    def close(self, timeout: float = 5.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._generate(job)
            finally:
                with self._lock:
                    self._pending -= 1

    def _generate(self, job: Job) -> None:
        if job.cancel.is_set():
            job.channel.deliver(Finished(ReplyStats(0, "cancelled"), ""))
            return
        try:
            forced = job.forced.resolve(self.model, job.prompt)
            if forced:
                job.channel.deliver(forced)
            for delta in self.model.stream(job.prompt + forced, job.params, job.max_new_tokens, job.stop, job.cancel):
                job.channel.deliver(delta)
            job.channel.deliver(Finished(self.model.last_stats(), forced))
        except Exception as error:  # the request fails with a 500; the server and its worker go on
            log.exception("generation failed")
            job.channel.deliver(Failed(f"{type(error).__name__}: {error}"))
