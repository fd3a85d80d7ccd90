"""The reply's text split, as it streams, into content and tool calls: OpenAI's deltas, built incrementally.

A call the model writes as `<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>` (chat.format's
shape) becomes a `CallStarted` (id and name) as soon as its name is complete, then `ArgumentsDelta`s as the
arguments object grows; a small JSON scanner finds where that object ends, so neither the call's closing
brace nor any tag reaches a client. Text may arrive in any pieces (one decoding step can yield several
tokens, a tag and JSON together). A call in another shape (keys swapped, arguments as a string) is parsed
whole at `</tool_call>` with chat.format's own parser. The non-streamed response folds these same events,
so streamed and non-streamed answers cannot disagree.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from cognimamba.chat.format import parse_tool_call
from cognimamba.model.tokenizer import TOOL_CALL, TOOL_CALL_END

# The head of a call in chat.format's key order, up to the `{` that opens its arguments.
CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\{)')


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallStarted:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


StreamEvent = ContentDelta | CallStarted | ArgumentsDelta


@dataclass
class StreamedCall:
    id: str
    name: str
    arguments: str = ""


@dataclass
class ArgumentsScanner:
    """Where a JSON value that starts with `{` ends: depth outside strings, escapes inside them."""

    depth: int = 0
    in_string: bool = False
    escaped: bool = False

    def end_of_value(self, text: str) -> int | None:
        """The index just past the value's closing brace in `text`, or None if it goes on."""
        for index, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return index + 1
        return None


@dataclass
class ToolCallStream:
    """Feed it the reply's text deltas with `push`, then `finish`; each returns the events they complete.

    Whitespace around calls and at the end is dropped (held back until text follows it), as chat.format's
    parser drops it. Malformed calls are left out of content and calls alike; `problems` says why.
    """

    calls: list[StreamedCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _state: str = "content"  # content -> head -> arguments -> tail -> content
    _buffer: str = ""
    _scanner: ArgumentsScanner = field(default_factory=ArgumentsScanner)
    _after_call: bool = False  # drop the whitespace that follows a call
    _separator: str = ""  # content after a call starts on a new line, as chat.format joins it
    _emitted_content: bool = False

    def push(self, text: str) -> list[StreamEvent]:
        self._buffer += text
        events: list[StreamEvent] = []
        while True:
            step = {"content": self._content, "head": self._head, "arguments": self._arguments,
                    "tail": self._tail}[self._state](events)
            if not step:
                return events

    def finish(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self._state == "content" and self._buffer.strip():
            self._emit(events, self._buffer.rstrip())
        elif self._state == "head":
            self.problems.append(f"unclosed {TOOL_CALL} (the reply ended before {TOOL_CALL_END})")
        self._buffer = ""
        return events

    def _content(self, events: list[StreamEvent]) -> bool:
        if self._after_call:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                return False
            self._after_call = False
            self._separator = "\n" if self._emitted_content else ""
        start = self._buffer.find(TOOL_CALL)
        if start >= 0:
            before = self._buffer[:start].rstrip()
            if before:
                self._emit(events, before)
            self._buffer = self._buffer[start + len(TOOL_CALL):]
            self._state = "head"
            return True
        safe = len(self._buffer)
        for length in range(min(len(TOOL_CALL) - 1, safe), 0, -1):  # a tag cut in two waits for its rest
            if self._buffer.endswith(TOOL_CALL[:length]):
                safe -= length
                break
        safe = len(self._buffer[:safe].rstrip())  # so does trailing whitespace: a call or the end may follow
        if safe > 0:
            self._emit(events, self._buffer[:safe])
            self._buffer = self._buffer[safe:]
        return False

    def _emit(self, events: list[StreamEvent], text: str) -> None:
        events.append(ContentDelta(self._separator + text))
        self._separator = ""
        self._emitted_content = True

    def _head(self, events: list[StreamEvent]) -> bool:
        match = CALL_HEAD.match(self._buffer)
        end = self._buffer.find(TOOL_CALL_END)
        if match and (end < 0 or match.end() < end):
            self._start_call(events, json.loads(f'"{match.group(1)}"'))
            self._buffer = self._buffer[match.end():]
            self._scanner = ArgumentsScanner()
            self._state = "arguments"
            return True
        if end < 0:
            return False
        call, problem = parse_tool_call(self._buffer[:end].strip())  # another shape: parse the whole call
        if call is not None and problem is None:
            self._start_call(events, call.name)
            self._add_arguments(events, json.dumps(call.arguments, ensure_ascii=False))
        else:
            self.problems.append(problem or "malformed tool call")
        self._close_call(end)
        return True

    def _arguments(self, events: list[StreamEvent]) -> bool:
        end = self._scanner.end_of_value(self._buffer)
        if end is None:
            self._add_arguments(events, self._buffer)
            self._buffer = ""
            return False
        self._add_arguments(events, self._buffer[:end])
        self._buffer = self._buffer[end:]
        self._state = "tail"
        return True

    def _tail(self, events: list[StreamEvent]) -> bool:
        end = self._buffer.find(TOOL_CALL_END)
        if end < 0:
            return False
        self._close_call(end)
        return True

    def _start_call(self, events: list[StreamEvent], name: str) -> None:
        call = StreamedCall(f"call_{uuid.uuid4().hex[:24]}", name)
        self.calls.append(call)
        events.append(CallStarted(len(self.calls) - 1, call.id, name))

    def _add_arguments(self, events: list[StreamEvent], text: str) -> None:
        if text:
            self.calls[-1].arguments += text
            events.append(ArgumentsDelta(len(self.calls) - 1, text))

    def _close_call(self, end: int) -> None:
        self._buffer = self._buffer[end + len(TOOL_CALL_END):]
        self._state = "content"
        self._after_call = True


def fold(events: list[StreamEvent]) -> str:
    """The content the events carry (the calls are on the stream's `calls`)."""
    return "".join(event.text for event in events if isinstance(event, ContentDelta))
