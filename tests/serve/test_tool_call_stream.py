"""The incremental tool-call parser: the same calls and content however the text is cut into deltas."""

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


def run(text: str, size: int) -> tuple[list, ToolCallStream]:
    stream = ToolCallStream()
    events = []
    for start in range(0, len(text), size):
        events += stream.push(text[start:start + size])
    return events + stream.finish(), stream


@pytest.mark.parametrize("text", REPLIES)
def test_any_cut_gives_what_chat_format_parses(text: str):
    expected = parse_assistant(text)
    for size in (1, 2, 3, 7, len(text)):
        events, stream = run(text, size)
        assert fold(events) == expected.content
        assert [(call.name, json.loads(call.arguments)) for call in stream.calls] == \
               [(call.name, call.arguments) for call in expected.tool_calls]


def test_name_comes_before_the_arguments_and_no_tag_leaks():
    events, _ = run(f"Sure.\n{CALL}", 4)
    kinds = [type(event) for event in events]
    started = kinds.index(CallStarted)
    assert set(kinds[:started]) == {ContentDelta} and set(kinds[started + 1:]) == {ArgumentsDelta}
    assert len(kinds) - started > 5  # the arguments arrive in several fragments, as the text did
    assert not any("tool_call" in getattr(event, "text", "") for event in events)


def test_malformed_and_unclosed_calls_are_problems_not_content():
    _, stream = run("<tool_call>\nnot json\n</tool_call>", 3)
    assert stream.calls == [] and "not valid JSON" in stream.problems[0]
    events, stream = run('Hi <tool_call>\n{"name', 3)
    assert fold(events) == "Hi" and "unclosed" in stream.problems[0]
