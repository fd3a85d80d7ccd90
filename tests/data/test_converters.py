"""Chat records to conversations: every format converts to the same conversation, the format is told from a
record's fields, and a record no converter can read is a BadRecord (skipped and counted), never a crash."""

from __future__ import annotations

import json

import pytest

from cognimamba.chat.format import render_conversation
from cognimamba.data.conversation import BadRecord
from cognimamba.data.converters import (
    CHAT_FORMATS,
    CONVERTERS,
    detect_format,
    from_alpaca,
    from_glaive,
    from_messages,
    from_sharegpt,
    to_conversation,
)
from tests.data.test_prepare_chat import TOOL_CONVERSATION, WEATHER


def test_record_formats_convert_to_the_same_conversation() -> None:
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    sharegpt = from_sharegpt({
        "conversations": [{"from": "human", "value": "Weather in Paris?"},
                          {"from": "function_call", "value": json.dumps(call)},
                          {"from": "observation", "value": '{"temp_c": 18}'},
                          {"from": "gpt", "value": "It is 18°C in Paris."}],
        "tools": json.dumps([WEATHER])})
    messages = from_messages({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                     {"role": "assistant", "content": None, "tool_calls": [
                         {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                     {"role": "tool", "content": '{"temp_c": 18}'},
                     {"role": "assistant", "content": "It is 18°C in Paris."}],
        "tools": [{"type": "function", "function": WEATHER}]})
    glaive = from_glaive({
        "system": "SYSTEM: You are a helpful assistant with access to the following functions. Use them if "
                  "required -\n" + json.dumps(WEATHER, indent=4) + "\n",
        "chat": "USER: Weather in Paris?\n\n\nASSISTANT: <functioncall> {\"name\": \"get_weather\", \"arguments\": "
                "'{\"city\": \"Paris\"}'} <|endoftext|>\n\n\nFUNCTION RESPONSE: {\"temp_c\": 18}\n\n\n"
                "ASSISTANT: It is 18°C in Paris. <|endoftext|>\n\n\n"})
    expected = render_conversation(TOOL_CONVERSATION.messages[1:], [WEATHER])
    for conversation in (sharegpt, messages, glaive):
        assert render_conversation(conversation.messages, conversation.tools) == expected

    alpaca = from_alpaca({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"})
    assert alpaca.messages == [{"role": "user", "content": "Add the numbers.\n\n2 and 3"},
                               {"role": "assistant", "content": "5"}]
    dolly = from_alpaca({"instruction": "Name a color.", "context": "", "response": "Blue."})
    assert dolly.messages[-1] == {"role": "assistant", "content": "Blue."}


def test_every_format_has_a_converter() -> None:
    assert set(CONVERTERS) == set(CHAT_FORMATS)


@pytest.mark.parametrize("record,fmt", [
    ({"conversations": [{"from": "human", "value": "hi"}]}, "sharegpt"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
    ({"system": "SYSTEM: ...", "chat": "USER: hi ASSISTANT: hello"}, "glaive"),
    ({"instruction": "Say hi.", "output": "hi"}, "alpaca"),
    ({"text": "plain text, not a chat"}, None),
])
def test_the_format_is_told_from_the_fields(record: dict, fmt: str | None) -> None:
    assert detect_format(record) == fmt


@pytest.mark.parametrize("record,fmt,problem", [
    (["not", "an", "object"], "messages", "a record is a list"),
    ({"conversations": [{"from": "narrator", "value": "Once"}]}, "sharegpt", "unknown speaker 'narrator'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "no assistant turn"),
    ({"instruction": "Say hi.", "output": "  "}, "alpaca", "no output"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}, "messages", "not text"),
])
def test_an_unreadable_record_is_a_bad_record(record: object, fmt: str, problem: str) -> None:
    with pytest.raises(BadRecord, match=problem):
        to_conversation(record, fmt)
