"""POST /v1/responses through a real server and the official `openai` client's `client.responses.create`: text
and function-call output items, tools, the streamed events with usage, and a 400 naming the field for each
mistake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from cognimamba.serve.engine import ServedModel
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@contextmanager
def client_for(model: ServedModel) -> Iterator[tuple[OpenAI, str]]:
    with running_server(model) as url:
        yield OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30), url


def stream_events(api: OpenAI, **request) -> list[dict]:
    return [event.model_dump() for event in api.responses.create(stream=True, **request)]


def test_a_plain_reply_is_one_message_item_with_usage():
    model = scripted_model(["Hello there, friend."])
    with client_for(model) as (api, _):
        response = api.responses.create(model="scripted", instructions="Be kind.", input="Hi!")
    assert response.status == "completed" and response.object == "response"
    assert response.output_text == "Hello there, friend."
    (item,) = response.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.content[0].type == "output_text"
    assert response.usage.input_tokens == len(model.source.prompts[0])  # the scripted source counts characters
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert "Be kind." in model.source.prompts[0] and "Hi!" in model.source.prompts[0]


def test_a_streamed_reply_sends_openais_events_in_order():
    with client_for(scripted_model(["Hello there, friend."], chunk=3)) as (api, _):
        events = stream_events(api, model="scripted", input=[{"role": "user", "content": "Hi!"}])
    kinds = [event["type"] for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    deltas = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert deltas == "Hello there, friend." == events[-4]["text"]
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] > 0
    assert final["output"][0]["content"][0]["text"] == deltas


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_to_an_offered_tool_is_a_function_call_item(stream: bool):
    reply = f"Let me look.\n{CALL}"
    with client_for(scripted_model([reply], chunk=5)) as (api, _):
        request = {"model": "scripted", "input": "Weather in Paris?", "tools": [WEATHER_TOOL]}
        if stream:
            events = stream_events(api, **request)
            output = events[-1]["response"]["output"]
            arguments_done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
            assert json.loads(arguments_done[0]["arguments"]) == {"city": "Paris"}
        else:
            output = api.responses.create(**request).model_dump()["output"]
    message, call = output
    assert message["type"] == "message" and message["content"][0]["text"] == "Let me look."
    assert call["type"] == "function_call" and call["name"] == "get_weather" and call["status"] == "completed"
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"].startswith("call_")


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_without_tools_never_gets_a_function_call(stream: bool):
    with client_for(scripted_model([f"Let me look.\n{CALL}"])) as (api, url):
        if stream:
            output = stream_events(api, model="scripted", input="Weather?")[-1]["response"]["output"]
        else:
            output = api.responses.create(model="scripted", input="Weather?").model_dump()["output"]
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "scripted", "messages": [{"role": "user", "content": "Weather?"}]}).json()
    assert [item["type"] for item in output] == ["message"]
    assert chat["choices"][0]["message"].get("tool_calls") is None  # the other endpoint alike


def test_a_tool_round_renders_the_call_and_its_output():
    model = scripted_model(["It is sunny in Paris."])
    with client_for(model) as (api, _):
        response = api.responses.create(model="scripted", tools=[WEATHER_TOOL], input=[
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}])
    assert response.output_text == "It is sunny in Paris."
    prompt = model.source.prompts[0]
    assert "Use tools." in prompt and '"get_weather"' in prompt and "sunny, 21 C" in prompt


def test_a_tool_choice_naming_a_function_forces_the_call():
    with client_for(scripted_model(['"city": "Rome"}}\n</tool_call>'])) as (api, _):
        response = api.responses.create(model="scripted", input="Weather?", tools=[WEATHER_TOOL],
                                        tool_choice={"type": "function", "name": "get_weather"})
    (call,) = response.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Rome"}
    assert response.tool_choice.name == "get_weather"


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"input": []}, "input", "non-empty"),
    ({"previous_response_id": "resp_1"}, "previous_response_id", "stores no responses"),
    ({"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}]}, "input[0].call_id",
     "answers no function_call"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]",
     "only text"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]", "only function tools"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice", "not in"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", "not supported"),
    ({"text": {"format": {"type": "json_schema"}}}, "text.format", "not supported"),
    ({"max_output_tokens": 0}, "max_output_tokens", "between"),
])
def test_mistakes_get_a_400_naming_the_field(body: dict, param: str, words: str):
    with client_for(scripted_model(["unused"])) as (api, _), pytest.raises(BadRequestError) as caught:
        api.responses.create(**{"model": "scripted", "input": "Hi", **body})
    assert caught.value.body["param"] == param and words in caught.value.body["message"]


def test_a_prompt_over_the_context_is_refused_and_an_unknown_model_is_404():
    with client_for(scripted_model(["unused"], context_length=64)) as (api, _):
        with pytest.raises(BadRequestError) as caught:
            api.responses.create(model="scripted", input="word " * 100)
        assert caught.value.body["code"] == "context_length_exceeded" and caught.value.body["param"] == "input"
        with pytest.raises(NotFoundError):
            api.responses.create(model="gpt-4o", input="Hi")


def test_the_tiny_model_answers_and_a_short_limit_leaves_the_response_incomplete(tiny_server: str):
    api = OpenAI(base_url=f"{tiny_server}/v1", api_key="unused", max_retries=0, timeout=60)
    response = api.responses.create(model="tiny", input="Once upon a time", max_output_tokens=2, temperature=0)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 2
    events = stream_events(api, model="tiny", input="Once upon a time", max_output_tokens=2, temperature=0)
    assert events[-1]["type"] == "response.incomplete"
    streamed = events[-1]["response"]["output"]  # greedy: the same two tokens (blank ones make no item)
    assert "".join(part["text"] for item in streamed for part in item["content"]) == response.output_text
