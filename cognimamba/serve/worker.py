"""The requests' way to the model: a bounded first-come-first-served queue, and one thread that starts each job.

A job starts in arrival order: its forced start (tool_choice) is resolved, then it is handed to the served
model, which decodes it in one of its sequence slots beside the others (inference/batching.py) and delivers
its deltas as they come; a source without slots (a scripted one in tests) decodes one job at a time on this
thread. Past `max_pending` requests running or waiting, a new one is refused (429) rather than left to wait
without bound. Deltas cross back to the request's event loop through a `ReplyChannel`; a request that goes
away sets its `cancel` event, which decoding checks before every token, and a cancelled job that has not
started yet is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import weakref
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


class LoopMailbox:
    """Items for one event loop's queues from other threads, handed over in one wake-up per batch.

    A decoding step of eight slots makes eight deltas at once; waking the loop once for each costs it more
    than the deltas themselves under load, so the first item of a batch schedules the hand-over and the rest
    ride along. Each queue still gets its items in order.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue[Any], Any]] = []

    def post(self, target: asyncio.Queue[Any], item: Any) -> None:
        with self._lock:
            first = not self._pending
            self._pending.append((target, item))
        if first:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server is shutting down
                self.loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for target, item in pending:
            target.put_nowait(item)


_MAILBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopMailbox] = weakref.WeakKeyDictionary()


def mailbox(loop: asyncio.AbstractEventLoop) -> LoopMailbox:
    """The loop's one mailbox (made on the loop's thread, the first time a request there needs it)."""
    if loop not in _MAILBOXES:
        _MAILBOXES[loop] = LoopMailbox(loop)
    return _MAILBOXES[loop]


class ReplyChannel:
    """Carries one job's deltas, then its `Finished` or `Failed`, from the worker thread to the event loop."""

    def __init__(self) -> None:
        self.mailbox = mailbox(asyncio.get_running_loop())
        self.items: asyncio.Queue[Any] = asyncio.Queue()
        self._held: Finished | Failed | None = None  # an end read while joining deltas, returned next

    def deliver(self, item: str | Finished | Failed) -> None:
        self.mailbox.post(self.items, item)

    async def next(self) -> str | Finished | Failed:
        """The next item; deltas already waiting come joined as one (a client behind gets fewer, longer events)."""
        item, self._held = self._held or await self.items.get(), None
        while isinstance(item, str) and not self.items.empty():
            following = self.items.get_nowait()
            if not isinstance(following, str):
                self._held = following
                break
            item += following
        return item


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
            self._start(job)

    def _start(self, job: Job) -> None:
        """Hand the job to the model; `_end` runs when it is over (at once for a skipped or failed one)."""
        if job.cancel.is_set():
            self._end(job, Finished(ReplyStats(0, "cancelled"), ""))
            return
        try:
            forced = job.forced.resolve(self.model, job.prompt)
            if forced:
                job.channel.deliver(forced)

            def done(stats: ReplyStats | None, error: BaseException | None) -> None:
                self._end(job, self._outcome(stats, error, forced))

            self.model.start(job.prompt + forced, job.params, job.max_new_tokens, job.stop, job.cancel,
                             job.channel.deliver, done)
        except Exception as error:  # the request fails with a 500; the server and its worker go on
            self._end(job, self._outcome(None, error, ""))

    @staticmethod
    def _outcome(stats: ReplyStats | None, error: BaseException | None, forced: str) -> Finished | Failed:
        if error is None and stats is not None:
            return Finished(stats, forced)
        log.error("generation failed", exc_info=error)
        return Failed(f"{type(error).__name__}: {error}")

    def _end(self, job: Job, outcome: Finished | Failed) -> None:
        with self._lock:
            self._pending -= 1
        job.channel.deliver(outcome)
