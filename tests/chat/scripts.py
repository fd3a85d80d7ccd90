"""A scripted model for chat and server tests: replies are given text, streamed a few characters at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

from cognimamba.chat.sources import LocalSource
from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.decode_step import GenerationStats, TokenChoice
from cognimamba.inference.decoding import TextModel

# What the scripted "model" says of each chunk it streams, when asked (top_alternatives): the chunk had
# probability 0.5, the four others below it, and 0.1 is left for the rest of the vocabulary.
SCRIPTED_ALTERNATIVES = (("a", 0.2), ("b", 0.1), ("c", 0.06), ("d", 0.04))


class ScriptedModel(TextModel):
    """A `TextModel` without a model, so tests choose exactly what the "model" says (serve's tests use it).

    `replies` is a list (one per generation, the last one repeats) or a function of the prompt. With
    `pause_after=N` the stream stops after N chunks until `resume` is set or the reply is cancelled, so
    tests can look at a half-streamed reply or press Esc in the middle of one.
    """

    name = "scripted"

    def __init__(self, replies: list[str] | Callable[[str], str], context_length: int = 4096, chunk: int = 4,
                 pause_after: int | None = None) -> None:
        self.replies = replies
        self.chunk = chunk
        self.pause_after = pause_after
        self.defaults = GenerationConfig()
        self.prompts: list[str] = []
        self.options: list[GenerationConfig] = []
        self.stops: list[list[str]] = []
        self.paused = threading.Event()
        self.resume = threading.Event()
        self._context_length = context_length
        self._stats = GenerationStats()

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def stats(self) -> GenerationStats:
        return self._stats

    def count_tokens(self, text: str) -> int:
        return len(text)  # one "token" per character: easy to reason about in context tests

    def _reply_for(self, prompt: str) -> str:
        if callable(self.replies):
            return self.replies(prompt)
        index = min(len(self.prompts) - 1, len(self.replies) - 1)
        return self.replies[index]

    def stream(self, prompt: str, settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        self.prompts.append(prompt)
        self.options.append(settings)
        self.stops.append(list(stop))
        text = self._reply_for(prompt)
        stats = self._stats = GenerationStats(prompt_tokens=len(prompt), stop_reason="stop_token")
        chunks = [text[i:i + self.chunk] for i in range(0, len(text), self.chunk)]
        for index, chunk in enumerate(chunks):
            if index == self.pause_after:
                self.paused.set()
                while not self.resume.is_set() and not (cancel is not None and cancel.is_set()):
                    self.resume.wait(0.01)
            if cancel is not None and cancel.is_set():
                stats.stop_reason = "cancelled"
                return
            stats.generated_tokens += 1
            if self.top_alternatives:
                stats.token_choices.append(TokenChoice(chunk, 0.5, ((chunk, 0.5), *SCRIPTED_ALTERNATIVES)))
            yield chunk


class ScriptedSource(LocalSource):
    """A chat's `ReplySource` for a `ScriptedModel`: chats are rendered to ChatML for it as for a run, so
    `prompts` holds exactly what a real model would have been given."""

    def __init__(self, replies: list[str] | Callable[[str], str], context_length: int = 4096, chunk: int = 4,
                 pause_after: int | None = None) -> None:
        super().__init__(ScriptedModel(replies, context_length, chunk, pause_after))
        self.model: ScriptedModel

    @property
    def prompts(self) -> list[str]:
        return self.model.prompts

    @property
    def options(self) -> list[GenerationConfig]:
        return self.model.options

    @property
    def stops(self) -> list[list[str]]:
        return self.model.stops

    @property
    def paused(self) -> threading.Event:
        return self.model.paused

    @property
    def resume(self) -> threading.Event:
        return self.model.resume

    @property
    def pause_after(self) -> int | None:
        return self.model.pause_after

    @pause_after.setter
    def pause_after(self, chunks: int | None) -> None:
        self.model.pause_after = chunks
