"""A run's ChatModel in a child process: the chat app's reply source, so drawing never slows decoding.

In the app's own process the decoding thread competes with the app's Python work (Markdown, the event loop)
for the interpreter lock (benchmarks/README.md, issue 16). Here the child loads the run and decodes; the
parent only reads text deltas off a pipe. The child is started with "spawn" (the same on Linux, macOS and
Windows, and no forked copy of torch's threads), is a daemon, and also ends when its pipe closes, so it
never outlives the app.

The parent keeps the run's tokenizer (sent by the child once loaded) for `count_tokens`, which the session
calls often and which needs no round trip. Cancelling sets an Event shared with the child, which its decoding
loop checks before each token.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.decode_step import GenerationStats
from cognimamba.inference.decoding import ChatModel, TextModel
from cognimamba.model.tokenizer import encode
from cognimamba.runs.loading import load_run
from cognimamba.system.hardware import pick_device

# The child sends text deltas at most this often, joined: one message per token would wake the parent per token.
# The app draws 15 times a second, so a batch this short is never seen.
SEND_SECONDS = 1 / 60
# How often a streaming parent looks at the caller's cancel flag while no text arrives (prefill, a slow token).
CANCEL_CHECK_SECONDS = 0.01
CLOSE_SECONDS = 5.0  # a child that does not end this long after being asked is terminated


@dataclass(frozen=True)
class LoadRequest:
    """What the child loads: `cogni chat`'s RUN, --device, --compile, --weights and --threads."""

    run: Path
    device: str = "auto"
    compile: bool = False
    weights: str | None = None
    threads: int | None = None

    def load(self) -> ChatModel:
        """The run as a ChatModel, in this process: the child's model, and `cogni chat`'s in-process one."""
        loaded = load_run(self.run, device=pick_device(self.device))
        return ChatModel.from_run(loaded, compile=self.compile, weights=self.weights, threads=self.threads)


@dataclass(frozen=True)
class ModelInfo:
    """What the child says of the loaded model, once."""

    name: str
    context_length: int
    defaults: GenerationConfig
    tokenizer_json: str


@dataclass(frozen=True)
class Progress:
    """The reply so far, sent with each batch of text: the app's status line shows speed and context live."""

    prompt_tokens: int
    generated_tokens: int
    time_to_first_token: float
    decode_seconds: float


class ModelProcess(TextModel):
    """A ChatModel served by a child process, as the same `TextModel`. Loading errors come back as the
    CogniError the in-process load gives. One request at a time; `close` ends the child."""

    def __init__(self, request: LoadRequest) -> None:
        context = multiprocessing.get_context("spawn")
        _start_resource_tracker()
        self._cancel = context.Event()
        self._connection, child_end = context.Pipe()
        self._process = context.Process(target=serve, args=(child_end, self._cancel, request), daemon=True,
                                        name=f"cogni-model-{Path(request.run).name}")
        self._process.start()
        child_end.close()  # the child holds the only other end: its death reads as EOF here
        self._lock = threading.Lock()
        self._stats = GenerationStats()
        self.notice: str | None = None
        self.top_alternatives = 0
        kind, payload = self._receive()
        if kind != "ready":
            self._process.join(CLOSE_SECONDS)
            self._connection.close()
            raise CogniError(payload)
        info: ModelInfo = payload
        self.name = info.name
        self.defaults = info.defaults
        self.tokenizer = Tokenizer.from_str(info.tokenizer_json)
        self._context_length = info.context_length

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def stats(self) -> GenerationStats:
        return self._stats

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.is_alive()

    def count_tokens(self, text: str) -> int:
        return len(encode(self.tokenizer, text))

    def warm_up(self) -> None:
        """Compile the child's decoding step now (with --compile); a failure becomes `notice`."""
        with self._lock:
            self._connection.send(("warm_up",))
            _, self.notice = self._receive()

    def stream(self, prompt: str, settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        """Text deltas of the reply as the child sends them; `stats` follows along and is exact at the end."""
        with self._lock:
            self._cancel.clear()
            self._stats = GenerationStats(prompt_tokens=self.count_tokens(prompt))
            self._connection.send(("stream", prompt, settings, list(stop), self.top_alternatives))
            finished = False
            try:
                while True:
                    if cancel is not None and cancel.is_set():
                        self._cancel.set()
                    if not self._connection.poll(CANCEL_CHECK_SECONDS):
                        continue
                    kind, payload = self._receive()
                    if kind == "text":
                        text, progress = payload
                        self._follow(progress)
                        yield text
                    elif kind == "done":
                        finished = True
                        self._stats = payload
                        return
                    else:  # "error": what the child's decoding raised, raised here
                        finished = True
                        raise payload
            finally:
                if not finished and self._process.is_alive():  # the caller stopped reading early
                    self._cancel.set()  # the child stops; its last messages are read so the next reply starts clean
                    while self._receive()[0] == "text":
                        pass

    def close(self) -> None:
        """End the child (a reply still streaming stops first); safe to call twice."""
        self._cancel.set()
        # A reply stops within a token once cancelled; a stream its reader left suspended never lets go of the lock.
        locked = self._lock.acquire(timeout=CLOSE_SECONDS)
        try:
            if self._process.is_alive() and locked:
                with contextlib.suppress(OSError):
                    self._connection.send(("close",))
                self._process.join(CLOSE_SECONDS)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(CLOSE_SECONDS)
            self._connection.close()
        finally:
            if locked:
                self._lock.release()

    def __enter__(self) -> ModelProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self, progress: Progress) -> None:
        self._stats.prompt_tokens = progress.prompt_tokens
        self._stats.generated_tokens = progress.generated_tokens
        self._stats.time_to_first_token = progress.time_to_first_token
        self._stats.decode_seconds = progress.decode_seconds

    def _receive(self) -> tuple[str, Any]:
        try:
            return self._connection.recv()
        except (EOFError, OSError):
            self._process.join(CLOSE_SECONDS)
            raise CogniError(f"the model process ended unexpectedly (exit code {self._process.exitcode}); "
                             "try again, or `cogni chat RUN --in-process` to see the error") from None


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (POSIX: it cleans up the Event's semaphore) with the real stderr.

    Inside a Textual app sys.stderr is a stand-in whose fileno() is -1, and the tracker's start passes that
    descriptor on and fails ("bad value(s) in fds_to_keep"); once it runs, nothing else reads sys.stderr.
    """
    if sys.platform == "win32":
        return
    shown = sys.stderr
    sys.stderr = sys.__stderr__
    try:
        resource_tracker.ensure_running()
    finally:
        sys.stderr = shown


# ------------------------------------------------------------------------------------------- the child


def serve(connection: Connection, cancel: Any, request: LoadRequest) -> None:
    """The child's main: load the run, then answer requests until told to close or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C belongs to the app, which cancels through `cancel`
    _silence_output()
    if request.threads is not None:
        torch.set_num_threads(request.threads)  # as `cogni chat --threads` does in its own process
    try:
        model = request.load()
    except CogniError as error:
        connection.send(("failed", str(error)))
        return
    except Exception as error:  # a broken run dir can fail in many ways; the user gets one line, as in the app
        connection.send(("failed", f"could not load the model: {type(error).__name__}: {error}"))
        return
    connection.send(("ready", ModelInfo(model.name, model.context_length, model.defaults,
                                        model.tokenizer.to_str())))
    try:
        while True:
            message = connection.recv()
            if message[0] == "close":
                return
            if message[0] == "warm_up":
                model.warm_up()
                connection.send(("warmed", model.notice))
            elif message[0] == "stream":
                _send_reply(connection, model, cancel, *message[1:])
    except (EOFError, OSError):  # the parent is gone
        return


def _send_reply(connection: Connection, model: ChatModel, cancel: Any, prompt: str, settings: GenerationConfig,
                stop: list[str], top_alternatives: int) -> None:
    """Stream one reply as ("text", (deltas, progress)) batches, then ("done", stats) or ("error", exception)."""
    model.top_alternatives = top_alternatives
    pending: list[str] = []

    def flush() -> None:
        if pending:
            connection.send(("text", ("".join(pending), _progress(model.stats))))
            pending.clear()

    sent_at = 0.0
    try:
        for delta in model.stream(prompt, settings, cancel, stop):
            pending.append(delta)
            now = time.perf_counter()
            if now - sent_at >= SEND_SECONDS:
                flush()
                sent_at = now
    except Exception as error:  # the parent raises it, as an in-process stream would have
        flush()
        connection.send(("error", _picklable(error)))
        return
    flush()
    connection.send(("done", model.stats))


def _progress(stats: GenerationStats) -> Progress:
    return Progress(stats.prompt_tokens, stats.generated_tokens, stats.time_to_first_token, stats.decode_seconds)


def _picklable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _silence_output() -> None:
    """Whatever the child prints (a library's warning) would land on the app's screen: send it nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for descriptor in (1, 2):  # stdout, stderr
        os.dup2(devnull, descriptor)
    os.close(devnull)
