"""Stop strings through the real server: bounded in the request, so no client can make them costly."""

from __future__ import annotations

import pytest
from openai import BadRequestError, OpenAI

from cognimamba.serve.schemas import MAX_STOP_LENGTH
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

HELLO = [{"role": "user", "content": "hi"}]


def test_a_stop_string_over_the_length_cap_is_a_400_naming_stop():
    with running_server(scripted_model(["fine, thanks"])) as url:
        api = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        reply = api.chat.completions.create(model="scripted", messages=HELLO, stop=["x" * MAX_STOP_LENGTH, ","])
        assert reply.choices[0].message.content == "fine"
        with pytest.raises(BadRequestError) as raised:
            api.chat.completions.create(model="scripted", messages=HELLO, stop=["ok", "x" * (MAX_STOP_LENGTH + 1)])
        with pytest.raises(BadRequestError) as raised_completion:
            api.completions.create(model="scripted", prompt="hi", stop="x" * 100_000)
    for error in (raised.value, raised_completion.value):
        assert error.body["param"] == "stop"
        assert f"{MAX_STOP_LENGTH} characters" in error.body["message"]
