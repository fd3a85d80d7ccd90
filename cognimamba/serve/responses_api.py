"""The Responses API's objects: a `response` with its output items, and the events that stream it.

One `ResponseBuilder` turns the reply's content and calls (serve/tool_call_stream.py) into output items as
they come, a `message` item for each run of text and a `function_call` item for each call, and returns the
events each step completes; the non-streamed response is the same builder's `response` at the end, so the two
never disagree. The events follow OpenAI's order: `response.created`, `response.in_progress`, then per item
`output_item.added`, its deltas, its `.done` events and `output_item.done`, and last `response.completed`
(or `response.incomplete` when the reply ran out of room, `response.failed` when generation failed), each
with a `sequence_number`, sent as `event: TYPE` and `data: {json}`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cognimamba.serve.responses import INVALID_TOOL_CALL
from cognimamba.serve.tool_call_stream import ArgumentsDelta, CallStarted, ContentDelta, StreamEvent

# The finish reasons of chat completions (serve/responses.py) that leave a response incomplete, and why.
INCOMPLETE_REASONS = {"length": "max_output_tokens", INVALID_TOOL_CALL: INVALID_TOOL_CALL}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def responses_usage(input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": min(cached_tokens, input_tokens)},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def sse_event(event: dict[str, Any]) -> str:
    """One server-sent event as OpenAI sends the Responses API's: named after its type."""
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [output_text(text)] if status != "in_progress" else []
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


@dataclass
class ResponseBuilder:
    """Feed it the reply's stream events with `push`, then `finish` (or `fail`); each returns the API events."""

    model: str
    echo: dict[str, Any]  # the request's settings the response repeats (serve/responses_request.py)
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    output: list[dict[str, Any]] = field(default_factory=list)
    status: str = "in_progress"
    usage: dict[str, Any] | None = None
    incomplete_details: dict[str, str] | None = None
    error: dict[str, str] | None = None
    _sequence: int = 0
    _text: list[str] | None = None  # the open message item's text so far; None when no message is open

    @property
    def response(self) -> dict[str, Any]:
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": self.status,
                "error": self.error, "incomplete_details": self.incomplete_details, "model": self.model,
                "output": [dict(item) for item in self.output], "usage": self.usage, **self.echo}

    def start(self) -> list[dict[str, Any]]:
        return [self._event("response.created", response=self.response),
                self._event("response.in_progress", response=self.response)]

    def push(self, events: list[StreamEvent]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, ContentDelta):
                out += self._text_delta(event.text)
            elif isinstance(event, CallStarted):
                out += self._close_message()
                item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "call_id": event.id,
                        "name": event.name, "arguments": ""}
                self.output.append(item)
                out.append(self._event("response.output_item.added", output_index=len(self.output) - 1,
                                       item=dict(item)))
            elif isinstance(event, ArgumentsDelta):
                out += self._arguments(event.text)
        return out

    def finish(self, reason: str, input_tokens: int, output_tokens: int,
               cached_tokens: int = 0) -> list[dict[str, Any]]:
        """The last events, given the reply's chat finish reason ("stop", "tool_calls", "length", ...)."""
        incomplete = INCOMPLETE_REASONS.get(reason)
        out = self._close_message("incomplete" if incomplete else "completed")
        self.usage = responses_usage(input_tokens, output_tokens, cached_tokens)
        self.status = "incomplete" if incomplete else "completed"
        self.incomplete_details = {"reason": incomplete} if incomplete else None
        return [*out, self._event(f"response.{self.status}", response=self.response)]

    def fail(self, message: str) -> list[dict[str, Any]]:
        self.status, self.error = "failed", {"code": "server_error", "message": message}
        return [self._event("error", code="server_error", message=message, param=None),
                self._event("response.failed", response=self.response)]

    def _text_delta(self, text: str) -> list[dict[str, Any]]:
        out = []
        if self._text is None:
            self._text = []
            item = message_item(new_id("msg"), "", "in_progress")
            self.output.append(item)
            index = len(self.output) - 1
            out += [self._event("response.output_item.added", output_index=index, item=dict(item)),
                    self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                content_index=0, part=output_text(""))]
        self._text.append(text)
        item = self.output[-1]
        out.append(self._event("response.output_text.delta", item_id=item["id"], output_index=len(self.output) - 1,
                               content_index=0, delta=text, logprobs=[]))
        return out

    def _close_message(self, status: str = "completed") -> list[dict[str, Any]]:
        """The open message's .done events, or nothing when none is open."""
        if self._text is None:
            return []
        text, index = "".join(self._text), len(self.output) - 1
        self._text = None
        item = self.output[index] = message_item(self.output[index]["id"], text, status)
        return [self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                            text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                            part=output_text(text)),
                self._event("response.output_item.done", output_index=index, item=dict(item))]

    def _arguments(self, text: str) -> list[dict[str, Any]]:
        """A call's arguments: tool_call_stream sends each call whole, so its delta is also its end."""
        index = len(self.output) - 1
        item = self.output[index]
        item.update(arguments=item["arguments"] + text, status="completed")
        return [self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                            delta=text),
                self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                            arguments=item["arguments"]),
                self._event("response.output_item.done", output_index=index, item=dict(item))]

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event
