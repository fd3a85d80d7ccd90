"""The generation worker under load: queueing, refusing when full, disconnects, /health during a reply."""

from __future__ import annotations

import time

import httpx

from cognimamba.serve.state import ServerSettings
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server, wait_until

BODY = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def test_client_disconnect_mid_stream_stops_generation():
    model = scripted_model(["one two three four five six"], chunk=4, pause_after=2)  # waits after two chunks
    source = model.source
    with running_server(model) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY) as response:
            lines = response.iter_lines()
            # Its space waits for what follows; deltas already waiting may come joined ("one two").
            assert next(line for line in lines if '"content": "one' in line)
            wait_until(source.paused.is_set, "the reply to reach its pause")
        # The client is gone; the decoding loop sees the cancel before its next token and ends.
        wait_until(lambda: source.stats.stop_reason == "cancelled", "generation to stop")
        assert source.stats.generated_tokens == 2
        source.resume.set()
        source.pause_after = None
        reply = httpx.post(f"{url}/v1/chat/completions", json={**BODY, "stream": False}).json()
        assert reply["choices"][0]["message"]["content"] == "one two three four five six"  # and it keeps serving


def test_health_answers_while_a_reply_streams():
    model = scripted_model(["a long reply"], pause_after=1)
    with running_server(model) as url, httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY):
        wait_until(model.source.paused.is_set, "the reply to start")
        started = time.perf_counter()
        health = httpx.get(f"{url}/health", timeout=2).json()
        assert health["pending_requests"] == 1 and time.perf_counter() - started < 1
        model.source.resume.set()


def test_requests_past_max_concurrency_get_429_and_queued_ones_finish_in_order():
    model = scripted_model(["done"], pause_after=0)
    with running_server(model, ServerSettings(max_concurrency=2)) as url, \
            httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY) as first, \
            httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY) as second:
        wait_until(model.source.paused.is_set, "the first reply to start")
        refused = httpx.post(f"{url}/v1/chat/completions", json=BODY)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "--queue-size" in refused.json()["error"]["message"]
        model.source.resume.set()
        assert "[DONE]" in first.read().decode() and "[DONE]" in second.read().decode()
