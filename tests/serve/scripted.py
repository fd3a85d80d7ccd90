"""A scripted model for server tests: chosen replies, cut at the request's stop strings like a real one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from cognimamba.inference.sampling import SamplingOptions
from cognimamba.serve.engine import ServedModel
from tests.chat.scripts import ScriptedSource


class StoppingScript(ScriptedSource):
    """ScriptedSource that also honours `options.stop` (the decoding engine does; tool_choice "none" uses it)."""

    def stream(self, prompt: str, options: SamplingOptions, cancel: threading.Event | None = None) -> Iterator[str]:
        self._stop = options.stop
        yield from super().stream(prompt, options, cancel)

    def _reply_for(self, prompt: str) -> str:
        text = super()._reply_for(prompt)
        for stop in getattr(self, "_stop", []):
            if stop in text:
                text = text[:text.index(stop)]
        return text


def scripted_model(replies: list[str] | Callable[[str], str], name: str = "scripted", **kwargs) -> ServedModel:
    return ServedModel(StoppingScript(replies, **kwargs), name)
