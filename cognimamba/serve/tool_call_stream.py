"""The reply's text split, as it streams, into content and tool calls: OpenAI's deltas, built incrementally.

Content goes out as it arrives. A call (`<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>` in
chat.format's shape, or any other its parser reads) is held until its closing tag, then goes out whole as a
`CallStarted` and one `ArgumentsDelta`: a delta cannot be taken back, and until `</tool_call>` nothing says
the call will be well formed (Ollama streams calls whole too). Only a call chat.format's parser accepts, to a
tool the request offered, is a call; anything else between the tags (JSON that does not parse, a name never
offered, a call the reply never closed) goes out as content, as the model wrote it, with the reason in
`problems` and the log, as vLLM and llama-server return a call they cannot parse as text. The result is
`parse_assistant(text, offered, keep_failed_calls=True)` however the text is cut
(tests/serve/test_tool_call_agreement.py); the non-streamed response folds these same events.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field

from cognimamba.chat.format import UNCLOSED_CALL, ToolCall, parse_tool_call
from cognimamba.model.tokenizer import TOOL_CALL, TOOL_CALL_END

log = logging.getLogger("cognimamba.serve")


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
class ContentPieces:
    """Content as chat.format joins it, let out as soon as no later text can change it.

    The pieces between calls lose the newlines at their ends, blank pieces are dropped, one newline joins the
    rest and the whole is stripped; so whitespace waits until text follows it in the same piece (or, for the
    end of a piece, in a later one).
    """

    emitted: bool = False  # some content went out: the next piece starts with the joining newline
    piece_has_text: bool = False
    held: str = ""  # whitespace that only the text after it lets out
    gap: str = ""  # the end of the last piece with text, as the join keeps it

    def add(self, text: str) -> str:
        """More of the current piece; returns what can go out now."""
        body = text.rstrip()
        if not body:
            self.held += text
            return ""
        body, self.held = self.held + body, text[len(body):]
        if self.piece_has_text:
            return body
        self.piece_has_text = True
        if not self.emitted:
            self.emitted = True
            return body.lstrip()
        return self.gap + "\n" + body.lstrip("\n")

    def end_piece(self) -> None:
        """A call ends the current piece."""
        if self.piece_has_text:
            self.gap = self.held.rstrip("\n")
        self.held, self.piece_has_text = "", False


@dataclass
class ToolCallStream:
    """Feed it the reply's text deltas with `push`, then `finish`; each returns the events they complete.

    `offered` is the tool names a call may have: the request's tools (none for tool_choice "none").
    """

    offered: frozenset[str]
    calls: list[StreamedCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _content: ContentPieces = field(default_factory=ContentPieces)
    _buffer: str = ""  # in content, a tail that may be the start of <tool_call>; in a call, its text so far
    _in_call: bool = False
    _searched: int = 0  # how much of an open call's text has no </tool_call> (so each delta is searched once)

    def push(self, text: str) -> list[StreamEvent]:
        self._buffer += text
        events: list[StreamEvent] = []
        while self._read_call(events) if self._in_call else self._read_content(events):
            pass
        return events

    def finish(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self._in_call:
            self._problem(UNCLOSED_CALL)
            self._add_content(events, TOOL_CALL + self._buffer)
        else:
            self._add_content(events, self._buffer)
        self._buffer, self._in_call = "", False
        return events  # the reply's trailing whitespace never goes out

    def _read_content(self, events: list[StreamEvent]) -> bool:
        start = self._buffer.find(TOOL_CALL)
        if start < 0:
            safe = len(self._buffer) - partial_tag(self._buffer)  # a tag cut in two waits for its rest
            self._add_content(events, self._buffer[:safe])
            self._buffer = self._buffer[safe:]
            return False
        self._add_content(events, self._buffer[:start])
        self._buffer = self._buffer[start + len(TOOL_CALL):]
        self._in_call, self._searched = True, 0
        return True

    def _read_call(self, events: list[StreamEvent]) -> bool:
        end = self._buffer.find(TOOL_CALL_END, max(0, self._searched - len(TOOL_CALL_END) + 1))
        if end < 0:
            self._searched = len(self._buffer)
            return False
        body = self._buffer[:end]
        self._buffer = self._buffer[end + len(TOOL_CALL_END):]
        self._in_call = False
        call, problem = parse_tool_call(body.strip(), self.offered)
        arguments = ""
        if call is not None and problem is None:
            arguments, problem = arguments_json(call)
        if call is None or problem is not None:
            self._problem(problem or "malformed tool call")
            self._add_content(events, f"{TOOL_CALL}{body}{TOOL_CALL_END}")
            return True
        self._content.end_piece()
        streamed = StreamedCall(f"call_{uuid.uuid4().hex[:24]}", call.name, arguments)
        self.calls.append(streamed)
        events.append(CallStarted(len(self.calls) - 1, streamed.id, streamed.name))
        events.append(ArgumentsDelta(len(self.calls) - 1, arguments))
        return True

    def _add_content(self, events: list[StreamEvent], text: str) -> None:
        out = self._content.add(text)
        if out:
            events.append(ContentDelta(out))

    def _problem(self, problem: str) -> None:
        self.problems.append(problem)
        log.warning("a tool call went back as text: %s", problem)


def partial_tag(text: str) -> int:
    """How many characters at the end of `text` could be the start of <tool_call>."""
    for length in range(min(len(TOOL_CALL) - 1, len(text)), 0, -1):
        if text.endswith(TOOL_CALL[:length]):
            return length
    return 0


def arguments_json(call: ToolCall) -> tuple[str, str | None]:
    """The arguments as OpenAI sends them (a JSON string), or a problem: nesting json.loads just managed can
    still be too deep to write back."""
    try:
        return json.dumps(call.arguments, ensure_ascii=False), None
    except RecursionError:
        return "", f"arguments of {call.name!r} are nested too deeply"


def fold(events: list[StreamEvent]) -> str:
    """The content the events carry (the calls are on the stream's `calls`)."""
    return "".join(event.text for event in events if isinstance(event, ContentDelta))
