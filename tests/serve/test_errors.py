"""Bad requests: each gets its status and an OpenAI-shaped error that names the problem, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from openai import AuthenticationError, BadRequestError, NotFoundError, OpenAI

from cognimamba.serve.state import ServerSettings
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

KEY = "sk-test-key"
USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A scripted model with a 200-token context (one token per character), a key, and a 20 kB body limit."""
    model = scripted_model(["fine"], context_length=200)
    with running_server(model, ServerSettings(api_key=KEY, max_body_bytes=20_000)) as url:
        yield url


def post(url: str, body: object, path: str = "/v1/chat/completions", key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, headers={**headers, "Content-Type": "application/json"})


def chat(**fields) -> dict:
    return {"model": "scripted", "messages": USER, **fields}


CASES = [
    ("bad JSON", b'{"model": "scripted", "messages": [', 400, "not valid JSON"),
    ("body not an object", [1, 2], 400, "JSON object"),
    ("temperature of the wrong type", chat(temperature="hot"), 400, "'temperature' must be a number"),
    ("temperature out of range", chat(temperature=3), 400, "between 0 and 2"),
    ("unknown role", chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages[0].role"),
    ("empty messages", chat(messages=[]), 400, "non-empty list"),
    ("messages not a list", chat(messages="hi"), 400, "non-empty list"),
    ("prompt too long", chat(messages=[{"role": "user", "content": "x" * 300}]), 400, "more than the model's context"),
    ("wrong model", chat(model="gpt-4o"), 404, "does not exist"),
    ("n = 2", chat(n=2), 400, "n = 1"),
    ("negative max_tokens", chat(max_tokens=-5), 400, "'max_tokens' is -5"),
    ("bad tool schema", chat(tools=[{"type": "function", "function": {"description": "no name"}}]), 400,
     "tools[0].function.name"),
    ("tool message without a call id", chat(messages=[*USER, {"role": "tool", "content": "42"}]), 400,
     "messages[1].tool_call_id"),
    ("tool message answering no call", chat(messages=[*USER, {"role": "tool", "tool_call_id": "x", "content": "4"}]),
     400, "answers no tool call"),
    ("response_format json", chat(response_format={"type": "json_object"}), 400, "only {\"type\": \"text\"}"),
    ("unknown tool_choice", chat(tools=[TOOL], tool_choice="sometimes"), 400, "'tool_choice' must be"),
    ("tool_choice naming a missing tool", chat(tools=[TOOL], tool_choice={"type": "function",
                                                                           "function": {"name": "nope"}}),
     400, "not in 'tools'"),
    ("stop of the wrong type", chat(stop=5), 400, "'stop' must be"),
    ("stream_options without stream", chat(stream_options={"include_usage": True}), 400, "only allowed with"),
    ("image content", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), 400,
     "only text content parts"),
    ("completion without a prompt", {"model": "scripted"}, 400, "'prompt' must be"),
    ("oversized body", chat(messages=[{"role": "user", "content": "x" * 30_000}]), 413, "over the server's limit"),
]


@pytest.mark.parametrize(("case", "body", "status", "says"), CASES, ids=[case[0] for case in CASES])
def test_bad_request_gets_its_status_and_an_openai_error(server: str, case: str, body, status: int, says: str):
    path = "/v1/completions" if case.startswith("completion") else "/v1/chat/completions"
    response = post(server, body, path)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert says in error["message"]
    assert "Traceback" not in response.text


def test_too_long_prompt_says_by_how_much(server: str):
    response = post(server, chat(messages=[{"role": "user", "content": "x" * 300}]))
    prompt_tokens = len("<|im_start|>user\n" + "x" * 300 + "<|im_end|>\n<|im_start|>assistant\n")
    assert f"{prompt_tokens - 200 + 1} more than the model's context of 200" in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_missing_or_wrong_key_is_401(server: str, key: str | None):
    response = post(server, chat(), key=key)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_health_needs_no_key_and_unknown_paths_are_404(server: str):
    assert httpx.get(f"{server}/health").status_code == 200
    response = httpx.get(f"{server}/v2/everything")
    assert response.status_code == 404 and "no such endpoint" in response.json()["error"]["message"]


def test_openai_client_raises_its_own_exception_classes(server: str):
    api = OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(NotFoundError, match="does not exist"):
        api.chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(BadRequestError, match="n = 1"):
        api.chat.completions.create(model="scripted", messages=USER, n=2)
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()


class Exploding:
    """A source whose generation fails: the request gets a 500 without details, the server goes on."""

    name = "broken"
    context_length = 100
    defaults = scripted_model(["x"]).defaults

    def count_tokens(self, text: str) -> int:
        return 1

    def stream(self, prompt, options, cancel=None):
        raise RuntimeError("secret internal detail")


def test_generation_failure_is_a_500_without_a_traceback():
    from cognimamba.serve.engine import ServedModel

    with running_server(ServedModel(Exploding(), "broken")) as url:
        body = {"model": "broken", "messages": USER}
        response = httpx.post(f"{url}/v1/chat/completions", json=body)
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
        assert "secret" not in response.text and "Traceback" not in response.text
        streamed = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": True}).text
        assert '"server_error"' in streamed and streamed.endswith("data: [DONE]\n\n")
        assert httpx.get(f"{url}/health").status_code == 200
