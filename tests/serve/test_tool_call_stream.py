"""The incremental tool-call parser: the same calls and content however the text is cut into deltas.

tests/serve/test_tool_call_agreement.py checks the same against chat.format on random model output.
"""

from __future__ import annotations

import json

import pytest

from cognimamba.chat.format import parse_assistant
from cognimamba.serve.tool_call_stream import ArgumentsDelta, CallStarted, ContentDelta, ToolCallStream, fold

CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "note": "braces } and \\" quotes {"}}\n</tool_call>'
REPLIES = [
    "Just text, no calls.",
    f"Sure.\n{CALL}",
    f"{CALL}\n{CALL.replace('add', 'sub')}",
    f"Before.\n{CALL}\nAfter.",
    '<tool_call>\n{"arguments": {"x": 2}, "name": "swapped"}\n</tool_call>',  # keys in the other order
    "a < b and <tool but no call",
]
OFFERED = frozenset({"add", "sub", "swapped"})


def run(text: str, size: int) -> tuple[list, ToolCallStream]:
    stream = ToolCallStream(OFFERED)
    events = []
    for start in range(0, len(text), size):
        events += stream.push(text[start:start + size])
    return events + stream.finish(), stream


@pytest.mark.parametrize("text", REPLIES)
def test_any_cut_gives_what_chat_format_parses(text: str):
    expected = parse_assistant(text, OFFERED, keep_failed_calls=True)
    for size in (1, 2, 3, 7, len(text)):
        events, stream = run(text, size)
        assert fold(events) == expected.content
        assert [(call.name, json.loads(call.arguments)) for call in stream.calls] == \
               [(call.name, call.arguments) for call in expected.tool_calls]


def test_content_streams_and_a_call_goes_out_whole_at_its_closing_tag():
    stream = ToolCallStream(OFFERED)
    head, rest = f"Sure.\n{CALL}".split("</tool_call>")
    events = [event for start in range(0, len(head), 4) for event in stream.push(head[start:start + 4])]
    assert fold(events) == "Sure." and all(isinstance(event, ContentDelta) for event in events)
    events = stream.push("</tool_call>" + rest)
    assert [type(event) for event in events] == [CallStarted, ArgumentsDelta]
    assert events[0].name == "add" and json.loads(events[1].text) == {"a": 1, "note": 'braces } and " quotes {'}
    assert not any("tool_call" in getattr(event, "text", "") for event in events)


def test_malformed_unknown_and_unclosed_calls_are_problems_and_come_back_as_text():
    events, stream = run("<tool_call>\nnot json\n</tool_call>", 3)
    assert stream.calls == [] and "not valid JSON" in stream.problems[0]
    assert fold(events) == "<tool_call>\nnot json\n</tool_call>"
    unknown = CALL.replace("add", "mul")
    events, stream = run(unknown, 3)
    assert stream.calls == [] and stream.problems == ["unknown tool 'mul'"] and fold(events) == unknown
    events, stream = run('Hi <tool_call>\n{"name', 3)
    assert fold(events) == 'Hi <tool_call>\n{"name' and "unclosed" in stream.problems[0]
