"""ChatML with tools: exact rendering, loss-mask segments, and a parser that never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cognimamba.chat.format import (
    ToolCall,
    normalize_tool,
    normalize_tool_calls,
    parse_assistant,
    render_conversation,
    render_segments,
)

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}

CONVERSATION = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
    {"role": "tool", "content": '{"temp_c": 18}'},
    {"role": "assistant", "content": "It is 18 °C in Paris."},
]


def test_render_conversation_is_exact_chatml():
    expected = (
        "<|im_start|>system\nYou are helpful.\n<tools>\n" + json.dumps(WEATHER) + "\n</tools><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
        "</tool_call><|im_end|>\n"
        "<|im_start|>tool\n<tool_response>\n{\"temp_c\": 18}\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nIt is 18 °C in Paris.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_conversation(CONVERSATION, [WEATHER], add_generation_prompt=True) == expected


def test_segments_concatenate_to_the_conversation_and_mark_only_assistant_text():
    segments = render_segments(CONVERSATION, [WEATHER])
    assert "".join(text for text, _ in segments) == render_conversation(CONVERSATION, [WEATHER])
    trained = [text for text, is_trained in segments if is_trained]
    assert trained == ["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
                       "</tool_call><|im_end|>", "It is 18 °C in Paris.<|im_end|>"]


def test_tools_without_a_system_prompt_get_their_own_system_turn():
    text = render_conversation([{"role": "user", "content": "hi"}], [WEATHER["function"]])
    assert text.startswith("<|im_start|>system\n<tools>\n" + json.dumps(WEATHER) + "\n</tools><|im_end|>\n")


def test_bad_roles_are_refused():
    with pytest.raises(ValueError, match="unsupported role"):
        render_conversation([{"role": "user", "content": "a"}, {"role": "system", "content": "late"}])
    with pytest.raises(ValueError, match="without a name"):
        normalize_tool({"description": "nameless"})


def test_normalize_tool_calls_accepts_openai_and_plain_forms():
    calls = normalize_tool_calls([
        {"type": "function", "function": {"name": "a", "arguments": "{\"x\": 1}"}},
        {"name": "b", "arguments": {"y": 2}},
        ToolCall("c", {}),
    ])
    assert calls == [ToolCall("a", {"x": 1}), ToolCall("b", {"y": 2}), ToolCall("c", {})]


def test_parse_valid_calls_and_text():
    reply = parse_assistant('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
                            '</tool_call>\n<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}'
                            '</tool_call>', known_tools={"get_weather"})
    assert reply.ok and reply.content == "Let me check."
    assert reply.tool_calls == [ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_weather", {"city": "Rome"})]


@pytest.mark.parametrize(("text", "problem"), [
    ("<tool_call>{not json}</tool_call>", "not valid JSON"),
    ('<tool_call>{"arguments": {}}</tool_call>', 'needs a string "name"'),
    ('<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>', "not a JSON object"),
    ('<tool_call>{"name": "f", "arguments": "nope"}</tool_call>', "not a JSON object"),
    ('Sure <tool_call>{"name": "get_weather", "argu', "unclosed <tool_call>"),
    ('<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>', "unknown tool 'launch_rockets'"),
])
def test_malformed_calls_become_problems_with_the_raw_text(text, problem):
    reply = parse_assistant(text, known_tools={"get_weather"})
    assert not reply.ok
    assert problem in reply.problems[0]
    assert reply.raw_calls and reply.raw_calls[0] in text
    assert "<tool_call>" not in reply.content


HUGE_NUMBER = "1" * 5000  # more digits than Python's json agrees to read as an int
DEEP_ARGUMENTS = json.dumps("[" * 1000 + "]" * 1000)  # a JSON string holding JSON nested past the recursion limit


@pytest.mark.parametrize(("text", "problem"), [
    (f'<tool_call>{{"name": "f", "arguments": {{"x": {HUGE_NUMBER}}}}}</tool_call>', "not valid JSON"),
    (f'<tool_call>{{"name": "f", "arguments": "{{\\"x\\": {HUGE_NUMBER}}}"}}</tool_call>', "not a JSON object"),
    (f'<tool_call>{{"name": "f", "arguments": {DEEP_ARGUMENTS}}}</tool_call>', "not a JSON object"),
], ids=["huge-number", "huge-number-in-string-arguments", "deep-string-arguments"])
def test_calls_json_cannot_hold_become_problems(text, problem):
    reply = parse_assistant(text, known_tools={"f"})
    assert not reply.ok and problem in reply.problems[0]
    assert reply.raw_calls == [text] and reply.tool_calls == []


def test_null_arguments_mean_no_arguments():
    """As in the exported chat template, which writes {} for them, and in OpenAI's format."""
    reply = parse_assistant('<tool_call>\n{"name": "f", "arguments": null}\n</tool_call>', known_tools={"f"})
    assert reply.ok and reply.tool_calls == [ToolCall("f", {})]
    assert normalize_tool_calls([{"name": "f", "arguments": None},
                                 {"type": "function", "function": {"name": "g", "arguments": None}}]) == [
        ToolCall("f", {}), ToolCall("g", {})]
    text = render_conversation([{"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": None}]}])
    assert text == '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call><|im_end|>\n'


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<tool_call>", "</tool_call>", "{", "}", '"name"', ":", '"f"', "[", "]", "text",
                                 " ", "\n", '"arguments"', ",", "null", "1e999", "\\"]), max_size=30))
def test_parser_never_raises(pieces):
    reply = parse_assistant("".join(pieces), known_tools={"f"})
    assert len(reply.problems) == len(reply.raw_calls)
    assert "<tool_call>" not in reply.content
