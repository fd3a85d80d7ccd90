"""A scripted model for server tests: chosen replies, cut at the request's stop strings like a real one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

from cognimamba.config.schema import GenerationConfig
from cognimamba.serve.engine import ServedModel
from tests.chat.scripts import ScriptedModel


class StoppingScript(ScriptedModel):
    """ScriptedModel that also honours the stop strings (the decoding engine does; tool_choice "none" uses it)."""

    def stream(self, prompt: str, options: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        self._stop = list(stop)
        yield from super().stream(prompt, options, cancel, stop)

    def _reply_for(self, prompt: str) -> str:
        text = super()._reply_for(prompt)
        for stop in getattr(self, "_stop", []):
            if stop in text:
                text = text[:text.index(stop)]
        return text


def scripted_model(replies: list[str] | Callable[[str], str], name: str = "scripted", **kwargs) -> ServedModel:
    return ServedModel(StoppingScript(replies, **kwargs), name)
