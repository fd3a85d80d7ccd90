"""One conversation, whatever file or dataset it came from: OpenAI-style messages plus the tools offered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BadRecord(ValueError):
    """A record that cannot become a conversation; prepare skips it and reports the first reason."""


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
