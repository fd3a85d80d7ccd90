"""Clients that misbehave on purpose: huge or broken input, leaving early, peeking without a key (issue 27).

Each test talks to a real uvicorn server; raw httpx or a raw socket sends what the `openai` client cannot.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import BadRequestError, OpenAI

from cognimamba.config.schema import GenerationConfig
from cognimamba.serve.engine import ServedModel
from cognimamba.serve.state import ServerSettings
from tests.serve.scripted import StoppingScript, scripted_model
from tests.serve.server_thread import running_server, wait_until

USER = [{"role": "user", "content": "hi"}]
COUNTING_SECONDS = 1.0


class SlowCounting(StoppingScript):
    """Takes a second to count a prompt's tokens, as a real tokenizer does on a few megabytes of text."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.counting = threading.Event()
        self.counted: list[int] = []

    def count_tokens(self, text: str) -> int:
        self.counting.set()
        time.sleep(COUNTING_SECONDS)
        self.counted.append(len(text))
        return len(text)


def test_a_prompt_being_tokenized_does_not_hold_health():
    source = SlowCounting(["done"], context_length=100_000)
    with running_server(ServedModel(source, "scripted")) as url, ThreadPoolExecutor(1) as pool:
        body = {"model": "scripted", "messages": [{"role": "user", "content": "long " * 10_000}]}
        reply = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, timeout=10)
        assert source.counting.wait(5)
        started = time.perf_counter()
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert time.perf_counter() - started < COUNTING_SECONDS / 4
        assert reply.result().json()["choices"][0]["message"]["content"] == "done"


def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing():
    # The scripted source counts one token per character, so no prompt over 199 characters leaves room to reply.
    source = SlowCounting(["done"], context_length=200)
    with running_server(ServedModel(source, "scripted", chars_per_token=1)) as url:
        started = time.perf_counter()
        response = httpx.post(f"{url}/v1/completions", json={"model": "scripted", "prompt": "x" * 300_000})
        elapsed = time.perf_counter() - started
    assert response.status_code == 400 and elapsed < COUNTING_SECONDS / 2
    error = response.json()["error"]
    assert error["param"] == "prompt" and error["code"] == "context_length_exceeded"
    assert "300000 characters" in error["message"] and "at most 199" in error["message"]
    assert source.counted == [] and not source.counting.is_set()


class Steady(StoppingScript):
    """Streams a chunk every 5 ms: never the quiet quarter second the old disconnect check waited for."""

    cancelled_at: float | None = None

    def stream(self, prompt: str, options: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        for chunk in super().stream(prompt, options, cancel, stop):
            time.sleep(0.005)
            yield chunk
        if cancel is not None and cancel.is_set():
            self.cancelled_at = time.monotonic()


def test_a_non_streaming_client_that_leaves_cancels_its_reply_at_once():
    source = Steady(lambda prompt: "x" * 4000 if "long" in prompt else "short", chunk=1)  # 4000 chunks: 20 s
    with running_server(ServedModel(source, "scripted")) as url:
        body = {"model": "scripted", "messages": [{"role": "user", "content": "a long one"}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.5)  # closes its connection on the way out
        left_at = time.monotonic()
        wait_until(lambda: source.cancelled_at is not None, "the reply to be cancelled", seconds=3)
        assert source.cancelled_at - left_at < 0.5
        started = time.perf_counter()
        next_reply = httpx.post(f"{url}/v1/chat/completions", json={**body, "messages": USER}, timeout=5)
        assert next_reply.json()["choices"][0]["message"]["content"] == "short"
        assert time.perf_counter() - started < 1


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(scripted_model(["fine"])) as url:
        yield url


def chat_body(messages: str = '[{"role": "user", "content": "hi"}]', extra: str = "") -> bytes:
    return f'{{"model": "scripted", "messages": {messages}{extra}}}'.encode()


def with_call(arguments: str) -> bytes:
    """A conversation whose assistant turn called a tool with these arguments (a JSON string, as sent)."""
    call = ('{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", '
            f'"function": {{"name": "clock", "arguments": {arguments}}}}}]}}')
    return chat_body(f'[{{"role": "user", "content": "hi"}}, {call}]')


def with_tool(description: str, parameters: str = '{"type": "object"}') -> bytes:
    tool = f'{{"type": "function", "function": {{"name": "clock", "description": {description}, ' \
           f'"parameters": {parameters}}}}}'
    return chat_body(extra=f', "tools": [{tool}]')


DIGITS = "7" * 5000  # Python refuses to read an integer of over 4300 digits
DEEP = "[" * 100_000 + "]" * 100_000
MALFORMED = [
    ("an integer of 5000 digits", chat_body(extra=f', "max_tokens": {DIGITS}'), "max_tokens"),
    ("a 5000-digit integer in a tool schema", with_tool('"t"', f'{{"type": "object", "maximum": {DIGITS}}}'),
     "tools[0].function.parameters.maximum"),
    ("arguments nested 100,000 deep", with_call(f'"{DEEP}"'), "messages[1].tool_calls[0].function.arguments"),
    ("a 5000-digit integer in arguments", with_call(f'"{{\\"n\\": {DIGITS}}}"'),
     "messages[1].tool_calls[0].function.arguments.n"),
    ("a lone surrogate in content", chat_body('[{"role": "user", "content": "a\\ud800b"}]'), "messages[0].content"),
    ("a lone low surrogate in a text part", chat_body('[{"role": "user", "content": [{"type": "text", '
                                                      '"text": "\\udc00"}]}]'), "messages[0].content[0].text"),
    ("a lone surrogate as raw UTF-8 bytes", chat_body('[{"role": "user", "content": "a') + b'\xed\xa0\x80"}]}',
     "messages[0].content"),
    ("a lone surrogate in a tool description", with_tool('"\\ud800"'), "tools[0].function.description"),
    ("a lone surrogate in a parameter name", with_tool('"t"', '{"properties": {"\\ud800": {}}}'),
     "tools[0].function.parameters.properties"),
    ("a lone surrogate in arguments", with_call('"{\\"city\\": \\"\\\\ud800\\"}"'),
     "messages[1].tool_calls[0].function.arguments.city"),
    ("a lone surrogate in a completion prompt", b'{"model": "scripted", "prompt": "\\ud800"}', "prompt"),
    ("a long integer under a lone surrogate key", chat_body(extra=f', "x": {{"\\ud800": {DIGITS}}}'),
     "x.\\ud800"),  # the error quotes the key escaped, as UTF-8 cannot carry it
]


@pytest.mark.parametrize(("case", "body", "field"), MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_input_is_a_400_naming_its_field(server: str, case: str, body: bytes, field: str):
    path = "/v1/completions" if b'"prompt"' in body else "/v1/chat/completions"
    response = httpx.post(f"{server}{path}", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and f"'{field}'" in error["message"]
    assert httpx.get(f"{server}/health").status_code == 200


def test_a_valid_surrogate_pair_is_one_character(server: str):
    body = chat_body('[{"role": "user", "content": "\\ud83d\\ude00"}]')
    response = httpx.post(f"{server}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200


def test_a_client_that_drops_mid_body_is_one_log_line_499(caplog):
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(caplog.handler)  # uvicorn's loggers do not propagate to the root, where caplog listens
    try:
        with caplog.at_level(logging.INFO, logger="cognimamba.serve"), running_server(scripted_model(["x"])) as url:
            # The module's shared server may log its last request's line just after that test had its reply.
            caplog.clear()
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as connection:
                connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: "
                                   b"application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": \"scr")
                time.sleep(0.1)  # the server has started reading the body
            wait_until(lambda: any("/v1/chat/completions" in r.getMessage() for r in caplog.records),
                       "the request's log line")
            time.sleep(0.2)  # anything logged after the line would show up by now
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    records = [r for r in caplog.records if r.name in ("cognimamba.serve", "uvicorn.error")]
    assert [r.getMessage().rsplit(" ", 1)[0] for r in records] == ["POST /v1/chat/completions 499"]
    assert not any(r.exc_info for r in records)


@pytest.mark.parametrize("prompt", [[[1, 2, 3]], [1, 2, 3]])
def test_token_id_prompts_are_refused_as_such(server: str, prompt: list):
    api = OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    with pytest.raises(BadRequestError, match="token-id prompts are not accepted") as refused:
        api.completions.create(model="scripted", prompt=prompt)
    assert refused.value.body["param"] == "prompt"


def test_health_without_the_key_says_only_ok():
    with running_server(scripted_model(["x"]), ServerSettings(api_key="sk-k")) as url:
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{url}/health", headers={"Authorization": "Bearer wrong"}).json() == {"status": "ok"}
        full = httpx.get(f"{url}/health", headers={"Authorization": "Bearer sk-k"}).json()
        assert full == {"status": "ok", "model": "scripted", "pending_requests": 0}


def test_no_text_longer_than_the_character_bound_fits_in_fewer_tokens(tiny_model: ServedModel):
    vocab = tiny_model.source.tokenizer.get_vocab(with_added_tokens=True)
    longest = max(vocab, key=len)
    texts = [tiny_model.source.tokenizer.decode([vocab[longest]], skip_special_tokens=False) * 50, "x" * 2000,
             "日本語 ünïcödé 🙂" * 50, " ".join(str(n) for n in range(300)), "<|im_start|>user\n" * 40, " " * 3000]
    for text in texts:
        assert len(text) <= tiny_model.chars_per_token * tiny_model.count_tokens(text)


def test_a_megabyte_prompt_to_the_real_model_is_refused_without_holding_health(tiny_server: str,
                                                                              tiny_model: ServedModel):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Once upon a time " * 200_000}]}  # 3.4 MB
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(httpx.post, f"{tiny_server}/v1/chat/completions", json=body, timeout=30)
        slowest_health = 0.0
        while not reply.done():
            started = time.perf_counter()
            httpx.get(f"{tiny_server}/health", timeout=10)
            slowest_health = max(slowest_health, time.perf_counter() - started)
    assert slowest_health < 1
    response = reply.result()
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    assert f"at most {tiny_model.max_prompt_chars} " in response.json()["error"]["message"]


def test_a_lone_surrogate_never_reaches_the_real_tokenizer(tiny_server: str):
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 1}'
    response = httpx.post(f"{tiny_server}/v1/chat/completions", content=body,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages[0].content"
