"""The API through the official `openai` client against a real server: the tiny trained model, then scripts."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from openai import OpenAI

from cognimamba.chat.format import ToolCall, render_conversation
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

HELLO = [{"role": "user", "content": "Once upon a time"}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}\n</tool_call>'
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}
CLOCK_TOOL = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}


def client(url: str, api_key: str = "unused") -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=30)


def test_lists_the_one_model_and_answers_health(tiny_server):
    models = client(tiny_server).models.list().data
    assert [model.id for model in models] == ["tiny"]
    assert httpx.get(f"{tiny_server}/health").json()["status"] == "ok"


@pytest.mark.parametrize("temperature", [0.0, 1.0])  # the tiny model's greedy reply is mostly newlines
def test_streamed_deltas_add_up_to_the_non_streamed_reply(tiny_server, temperature: float):
    api = client(tiny_server)
    whole = api.chat.completions.create(model="tiny", messages=HELLO, temperature=temperature, seed=3, max_tokens=20)
    chunks = list(api.chat.completions.create(model="tiny", messages=HELLO, temperature=temperature, seed=3,
                                              max_tokens=20, stream=True))
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == whole.choices[0].message.content
    assert whole.choices[0].message.content or temperature == 0
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 20
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_include_usage_sends_a_last_chunk_without_choices(tiny_server):
    api = client(tiny_server)
    whole = api.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=10)
    chunks = list(api.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=10, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_next_turn_reports_the_prompt_tokens_it_found_cached(tiny_server):
    api = client(tiny_server)
    first = api.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=8)
    turn = [*HELLO, {"role": "assistant", "content": first.choices[0].message.content or "Hi"},
            {"role": "user", "content": "And then?"}]
    second = api.chat.completions.create(model="tiny", messages=turn, temperature=0, max_tokens=8)
    # The first turn's prompt is still in a slot: the second reads only what follows it (and perhaps the first's
    # last token, "\n", which BPE may merge with a reply that starts with a newline).
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens - 1 <= cached < second.usage.prompt_tokens


def test_stop_string_ends_the_reply_before_it(tiny_server):
    api = client(tiny_server)
    full = api.chat.completions.create(model="tiny", messages=HELLO, temperature=1, seed=5, max_tokens=30)
    text = full.choices[0].message.content
    stop = text[len(text) // 2:][:3]
    cut = api.chat.completions.create(model="tiny", messages=HELLO, temperature=1, seed=5, max_tokens=30, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[:text.index(stop)].rstrip()


def test_completion_streamed_and_not(tiny_server):
    api = client(tiny_server)
    whole = api.completions.create(model="tiny", prompt="Once upon a time", temperature=1, seed=2, max_tokens=12)
    chunks = list(api.completions.create(model="tiny", prompt="Once upon a time", temperature=1, seed=2, max_tokens=12,
                                         stream=True, stream_options={"include_usage": True}))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == whole.choices[0].text
    used = whole.usage.completion_tokens
    assert chunks[-1].usage.completion_tokens == used and 0 < used <= 12
    # A sampled end-of-text may end the reply early; otherwise the limit does.
    assert whole.choices[0].finish_reason == ("length" if used == 12 else "stop")


def test_tool_call_comes_back_parsed_with_finish_reason_tool_calls():
    model = scripted_model([f"Let me look.\n{CALL}"])
    with running_server(model) as url:
        reply = client(url).chat.completions.create(model="scripted", messages=HELLO, tools=[WEATHER_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": [1, 2]}


@pytest.mark.parametrize("chunk", [1, 5, 1000])  # 1000: the whole reply in one delta, as several tokens can be
def test_tool_call_streams_as_deltas_without_leaking_tags(chunk: int):
    model = scripted_model([f"Let me look.\n{CALL}"], chunk=chunk)
    with running_server(model) as url:
        chunks = list(client(url).chat.completions.create(model="scripted", messages=HELLO, tools=[WEATHER_TOOL],
                                                          stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    call_deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert content == "Let me look." and "<tool_call>" not in content
    assert call_deltas[0].id.startswith("call_") and call_deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in call_deltas)
    assert json.loads(arguments) == {"city": "Paris", "days": [1, 2]}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_never_returns_a_call():
    model = scripted_model([f"Let me look.\n{CALL}"])
    with running_server(model) as url:
        reply = client(url).chat.completions.create(model="scripted", messages=HELLO, tools=[WEATHER_TOOL],
                                                    tool_choice="none")
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == "Let me look."


def test_named_tool_choice_starts_the_reply_with_that_call():
    # The script answers only what follows the forced start: the arguments and the closing tag.
    model = scripted_model(lambda prompt: '"time_zone": "UTC"}}\n</tool_call>'
                           if prompt.endswith('{"name": "clock", "arguments": {') else "no call")
    with running_server(model) as url:
        reply = client(url).chat.completions.create(
            model="scripted", messages=HELLO, tools=[WEATHER_TOOL, CLOCK_TOOL],
            tool_choice={"type": "function", "function": {"name": "clock"}})
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "clock" and json.loads(call.function.arguments) == {"time_zone": "UTC"}
    assert reply.choices[0].finish_reason == "tool_calls"


def test_required_tool_choice_takes_the_name_the_model_scores_highest():
    model = scripted_model(lambda prompt: '}}\n</tool_call>')
    model.scorer = lambda prefix, endings: endings[-1]  # the model "prefers" the last tool
    with running_server(model) as url:
        reply = client(url).chat.completions.create(model="scripted", messages=HELLO,
                                                    tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice="required")
    assert reply.choices[0].message.tool_calls[0].function.name == "clock"


def test_multi_turn_exchange_with_a_tool_result_round_trips():
    model = scripted_model(["It is 18 degrees in Paris."])
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'},
    ]
    with running_server(model) as url:
        reply = client(url).chat.completions.create(model="scripted", messages=messages, tools=[WEATHER_TOOL])
    assert reply.choices[0].message.content == "It is 18 degrees in Paris."
    expected = render_conversation([
        messages[0], messages[1], {"role": "assistant", "content": "",
                                   "tool_calls": [ToolCall("get_weather", {"city": "Paris"})]},
        {"role": "tool", "content": '{"temp_c": 18}'}], [WEATHER_TOOL], add_generation_prompt=True)
    assert model.source.prompts[-1] == expected  # the very text `cogni chat` would have sent


def test_each_request_logs_one_line(caplog):
    model = scripted_model(["hello there"])
    with caplog.at_level(logging.INFO, logger="cognimamba.serve"), running_server(model) as url:
        client(url).chat.completions.create(model="scripted", messages=HELLO)
    lines = [r.getMessage() for r in caplog.records if r.name == "cognimamba.serve"]
    assert any(line.startswith("POST /v1/chat/completions 200 tokens ") and line.endswith("s") for line in lines)
