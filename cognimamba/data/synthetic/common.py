"""What the synthetic conversation generators share: messages as records, and how a number is written.

Every generator builds its conversations from these, so a message, a tool call and a number read the same
in `synthetic-tools`, `synthetic-chat` and `synthetic-functions`.
"""

from __future__ import annotations

import random
from typing import Any

Message = dict[str, Any]  # OpenAI style: {"role", "content", "tool_calls"?}


def say(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def exchange(question: str, answer: str) -> list[Message]:
    """A user turn and the assistant's plain-text answer."""
    return [say("user", question), say("assistant", answer)]


def call(name: str, arguments: dict[str, Any]) -> Message:
    """An assistant turn that calls one tool and says nothing else."""
    return {"role": "assistant", "content": "", "tool_calls": [{"name": name, "arguments": arguments}]}


def pick(rng: random.Random, options: list[str], **values: Any) -> str:
    """One of `options`, its {placeholders} filled from `values`."""
    return rng.choice(options).format(**values)


def number_text(value: float) -> str:
    """A number as a person writes it: whole numbers without a point, others to at most two decimals."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0").rstrip(".")
