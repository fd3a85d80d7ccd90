"""OpenAI's response and chunk objects, built from the reply's pieces."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from cognimamba.serve.engine import ReplyStats
from cognimamba.serve.tool_call_stream import ArgumentsDelta, CallStarted, StreamedCall, StreamEvent


@dataclass(frozen=True)
class ReplyIds:
    """What every chunk of one reply repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> ReplyIds:
        return cls(f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time()), model)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; `cached_tokens` of the prompt came from a slot's cache (prompt caching)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": min(cached_tokens, prompt_tokens)}}


# Beyond OpenAI's reasons: tool_choice forced a call and what the model wrote in it does not parse. Its text is
# the reply's content; a plain "stop" would pass it off as the answer the client asked not to get.
INVALID_TOOL_CALL = "invalid_tool_call"


def finish_reason(stats: ReplyStats, made_calls: bool, call_forced: bool = False) -> str:
    if stats.ran_out:
        return "length"
    if made_calls:
        return "tool_calls"
    return INVALID_TOOL_CALL if call_forced else "stop"


def chat_delta(event: StreamEvent) -> dict[str, Any]:
    if isinstance(event, CallStarted):
        return {"tool_calls": [{"index": event.index, "id": event.id, "type": "function",
                                "function": {"name": event.name, "arguments": ""}}]}
    if isinstance(event, ArgumentsDelta):
        return {"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]}
    return {"content": event.text}


def chat_chunk(ids: ReplyIds, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    return {"id": ids.id, "object": "chat.completion.chunk", "created": ids.created, "model": ids.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}


def usage_chunk(ids: ReplyIds, kind: str, counts: dict[str, int]) -> dict[str, Any]:
    return {"id": ids.id, "object": kind, "created": ids.created, "model": ids.model, "choices": [],
            "usage": counts}


def chat_completion(ids: ReplyIds, content: str, calls: list[StreamedCall], reason: str,
                    counts: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
    if calls:
        message["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": call.name, "arguments": call.arguments}} for call in calls]
    return {"id": ids.id, "object": "chat.completion", "created": ids.created, "model": ids.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
            "usage": counts}


def completion(ids: ReplyIds, text: str, reason: str | None, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """A whole completion, or (without counts) one streamed chunk of one."""
    body: dict[str, Any] = {"id": ids.id, "object": "text_completion", "created": ids.created, "model": ids.model,
                            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}]}
    if counts is not None:
        body["usage"] = counts
    return body
