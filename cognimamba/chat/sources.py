"""The model a chat talks to, opened from `SourceOptions`: a run on this machine (`LocalSource`, decoding in
this process or in a model process) or an OpenAI-compatible server (`chat.remote.RemoteSource`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from cognimamba.chat.options import SourceOptions
from cognimamba.chat.session import ReplySource
from cognimamba.chat.templates import CHATML, PromptFormat, run_prompt_format
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.decode_step import GenerationStats
from cognimamba.inference.decoding import TextModel
from cognimamba.inference.model_process import LoadRequest, ModelProcess


class LocalSource(ReplySource):
    """A model on this machine (`ChatModel`, or `ModelProcess` decoding in a child) as a reply source: the
    chat is rendered in the run's prompt format (chat/templates.py): ChatML (chat.format), the format runs
    trained here learn, or an imported checkpoint's own chat template."""

    def __init__(self, model: TextModel, prompt_format: PromptFormat = CHATML) -> None:
        self.model = model
        self.prompt_format = prompt_format

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def defaults(self) -> GenerationConfig:
        return self.model.defaults

    @property
    def notice(self) -> str | None:
        return self.model.notice

    @property
    def top_alternatives(self) -> int:
        return self.model.top_alternatives

    @top_alternatives.setter
    def top_alternatives(self, count: int) -> None:
        self.model.top_alternatives = count

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def stats(self) -> GenerationStats:
        return self.model.stats

    def count_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                     add_generation_prompt: bool = False) -> int:
        try:
            text = self.prompt_format.render(messages, tools, add_generation_prompt)
        except CogniError:  # a piece of a chat (one turn, no turn yet) that a template renders only in context
            text = CHATML.render(messages, tools, add_generation_prompt)  # the estimate the session trims by
        return self.model.count_tokens(text)

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        return self.prompt_format.render(messages, tools, add_generation_prompt=True)

    def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
               settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        # A model that skips its end-of-turn token would go on to write the next turn: the format's stops end it.
        return self.model.stream(self.render(messages, tools), settings, cancel, [*self.prompt_format.stop, *stop])

    def warm_up(self) -> None:
        self.model.warm_up()

    def close(self) -> None:
        self.model.close()


def open_source(options: SourceOptions, separate_process: bool = False) -> ReplySource:
    """The source `options` name, ready for a first reply (a compiled decoding step compiled: see `notice`).

    With `separate_process` a run decodes in a child process (the full-screen app: its drawing would otherwise
    compete with decoding for the interpreter lock); `options.check()` has told a wrong RUN already.
    """
    if options.url is not None:
        try:
            from cognimamba.chat.remote import RemoteSource  # noqa: PLC0415 (optional: httpx, cognimamba[serve])
        except ImportError:
            raise CogniError("`cogni chat --url` needs httpx: pip install 'cognimamba[serve]'") from None
        return RemoteSource(options.url, options.api_key, options.model)
    assert options.run is not None
    if options.threads is not None:
        torch.set_num_threads(options.threads)  # for reading the prompt; the decoding step takes its own
    request = LoadRequest(options.run, options.device, options.compile, options.weights, options.threads)
    prompt_format = run_prompt_format(options.run)
    source = LocalSource(ModelProcess(request) if separate_process else request.load(), prompt_format)
    source.warm_up()
    return source
