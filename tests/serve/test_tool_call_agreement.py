"""The streamed tool-call parser and chat.format.parse_assistant agree on every reply, however it is cut.

The server returns what the streamed parser makes of the reply (streamed or not); parse_assistant, with the
request's tools and failed calls kept as text, is the reference. Random model output mixes valid calls,
calls cut short, unknown and malformed names, stray braces, brackets, quotes and tags, JSON with braces and
tags inside its strings, and text around and after calls.
"""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cognimamba.chat.format import parse_assistant
from cognimamba.model.tokenizer import TOOL_CALL, TOOL_CALL_END
from cognimamba.serve.tool_call_stream import ArgumentsDelta, CallStarted, ToolCallStream, fold

OFFERED = frozenset({"get_weather", "clock"})
BOUNDED = settings(max_examples=200, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

tricky_text = st.text(alphabet=st.sampled_from('ab {}[]":,\\\n\t<>/_'), max_size=12) | st.text(max_size=8)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | tricky_text
                           | st.sampled_from([TOOL_CALL, TOOL_CALL_END, "{", "}]"]),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(tricky_text, children, max_size=3), max_leaves=8)
names = st.sampled_from([*OFFERED, "launch_missiles", "", "get\nweather", "get\\u12", "get\\x", 'a"b'])


@st.composite
def calls(draw) -> str:
    """One call as a model might write it: the usual shape, keys swapped, arguments as a string, odd spacing."""
    name, arguments = draw(names), draw(st.dictionaries(tricky_text, json_values, max_size=3))
    if draw(st.booleans()):  # the name exactly as drawn, escapes and raw newlines included
        body = f'{{"name": "{name}", "arguments": {json.dumps(arguments, ensure_ascii=False)}}}'
    else:
        fields = [("name", name), ("arguments", draw(st.sampled_from([arguments, json.dumps(arguments), None])))]
        body = json.dumps(dict(draw(st.permutations(fields))), ensure_ascii=False)
    space = st.sampled_from(["", "\n", " ", "\n\n", " \n"])
    return f"{TOOL_CALL}{draw(space)}{body}{draw(space)}{TOOL_CALL_END}"


@st.composite
def cut_calls(draw) -> str:
    text = draw(calls())
    return text[:draw(st.integers(0, len(text) - 1))]


stray = st.sampled_from([TOOL_CALL, TOOL_CALL_END, "<tool", "</tool_c", "{", "}", "[", "]", '"', "\\", "\n", " ",
                         "  \n", '{"name": "clock", "arguments": {', "}}"])
replies = st.lists(calls() | cut_calls() | stray | tricky_text, max_size=8).map("".join)


def streamed(text: str, cuts: list[int]) -> tuple[str, list[tuple[str, str]], list[str]]:
    """What the server sends for `text` arriving in pieces cut at `cuts`: content, calls and problems."""
    stream = ToolCallStream(OFFERED)
    events = []
    bounds = [0, *sorted(set(cuts)), len(text)]
    for start, end in itertools.pairwise(bounds):
        events += stream.push(text[start:end])
    events += stream.finish()
    made: list[list[str]] = []
    for event in events:
        if isinstance(event, CallStarted):
            made.append([event.name, ""])
        elif isinstance(event, ArgumentsDelta):
            made[event.index][1] += event.text
    return fold(events), [(name, arguments) for name, arguments in made], stream.problems


@BOUNDED
@given(text=replies, data=st.data())
@example(text='<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>\nHello there',
         data=None)
@example(text='Hi <tool_call>\n{"name": "get\nweather", "arguments": {}}\n</tool_call> there', data=None)
@example(text='<tool_call>\n{"name": "launch_missiles", "arguments": {}}\n</tool_call>', data=None)
@example(text='A  \n<tool_call>\n{"name": "clock", "arguments": {}}\n</tool_call>\n  B \n', data=None)
def test_streamed_calls_and_content_are_what_parse_assistant_finds(text: str, data) -> None:
    expected = parse_assistant(text, known_tools=set(OFFERED), keep_failed_calls=True)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12)) if data is not None else list(range(len(text)))
    content, made, problems = streamed(text, cuts)
    assert content == expected.content
    assert made == [(call.name, json.dumps(call.arguments, ensure_ascii=False)) for call in expected.tool_calls]
    assert problems == expected.problems
    assert all(name in OFFERED for name, _ in made)
