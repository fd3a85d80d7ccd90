"""tool_choice "required" and a named function through the real server: a call, or the model's text, never nothing.

The scripted model answers only what follows the forced start, as a real one would go on from it.
"""

from __future__ import annotations

import json

import pytest
from openai import OpenAI

from cognimamba.serve.responses import INVALID_TOOL_CALL
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

HELLO = [{"role": "user", "content": "What time is it?"}]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CLOCK_TOOL = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}
NAMED_CLOCK = {"type": "function", "function": {"name": "clock"}}
CHATTY = "I would rather talk about the weather than call a tool, if that is all right with you."


def client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_the_forced_start_includes_the_arguments_opening_brace():
    model = scripted_model(lambda prompt: '"time_zone": "UTC"}}\n</tool_call>'
                           if prompt.endswith('{"name": "clock", "arguments": {') else CHATTY)
    with running_server(model) as url:
        reply = client(url).chat.completions.create(model="scripted", messages=HELLO,
                                                    tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice=NAMED_CLOCK)
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "clock" and json.loads(call.function.arguments) == {"time_zone": "UTC"}
    assert reply.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("tool_choice", ["required", NAMED_CLOCK])
def test_a_forced_call_that_does_not_parse_returns_the_text_and_says_so(tool_choice):
    model = scripted_model([CHATTY], chunk=5)
    with running_server(model) as url:
        api = client(url)
        reply = api.chat.completions.create(model="scripted", messages=HELLO, tools=[CLOCK_TOOL],
                                            tool_choice=tool_choice)
        chunks = list(api.chat.completions.create(model="scripted", messages=HELLO, tools=[CLOCK_TOOL],
                                                  tool_choice=tool_choice, stream=True,
                                                  stream_options={"include_usage": True}))
    choice = reply.choices[0]
    assert choice.message.tool_calls is None and CHATTY in choice.message.content
    assert choice.finish_reason == INVALID_TOOL_CALL  # not a "stop" that passes the text off as an answer
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == choice.message.content
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
           [choice.finish_reason]
    generated = -(-len(CHATTY) // 5)  # the script's tokens: one per chunk of five characters
    assert reply.usage.completion_tokens == chunks[-1].usage.completion_tokens == generated


def test_completion_tokens_count_only_what_the_model_generated():
    arguments = '"time_zone": "UTC"}}\n</tool_call>'  # three "tokens" of twelve characters, after either start
    model = scripted_model(lambda prompt: arguments if prompt.endswith("{") else "{" + arguments, chunk=12)
    with running_server(model) as url:
        reply = client(url).chat.completions.create(model="scripted", messages=HELLO, tools=[CLOCK_TOOL],
                                                    tool_choice=NAMED_CLOCK, max_tokens=3)
    assert reply.choices[0].message.tool_calls[0].function.name == "clock"
    assert reply.usage.completion_tokens == 3  # not the forced `<tool_call>\n{"name": "clock", ...` as well
