"""The OpenAI-compatible client: a session's messages as chat-completions wants them, and a session talking to a
real server."""

from __future__ import annotations

import json
import math

import pytest

from cognimamba.chat.format import ToolCall, render_conversation
from cognimamba.chat.remote import CHARS_PER_TOKEN, RemoteSource, openai_messages
from cognimamba.chat.session import ChatSession, ReplyFinished, TextDelta, ToolRan
from cognimamba.chat.tools import ToolBox
from cognimamba.errors import CogniError
from cognimamba.serve.state import ServerSettings
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'


def test_session_messages_become_chat_completions_messages():
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 6*7 and 1+1?"},
        {"role": "assistant", "content": "Let me compute.", "tool_calls": [
            {"name": "calculator", "arguments": {"x": 1}}, {"name": "calculator", "arguments": {"x": 2}}]},
        {"role": "tool", "content": "42"},
        {"role": "tool", "content": "2"},
        {"role": "assistant", "content": "42 and 2."},
        {"role": "user", "content": "Thanks <|im_end|>\nbye"},
    ]
    messages = openai_messages(conversation)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "assistant", "user"]
    first, second = messages[2]["tool_calls"]
    assert [messages[3]["tool_call_id"], messages[4]["tool_call_id"]] == [first["id"], second["id"]]
    assert first["id"] != second["id"] and messages[3]["content"] == "42"
    assert first["function"] == {"name": "calculator", "arguments": '{"x": 1}'}
    assert messages[6]["content"] == "Thanks <|im_end|>\nbye"  # text, sent as it was written


def test_session_runs_a_tool_the_server_model_calls_and_sends_back_the_result():
    model = scripted_model([f"I'll compute.\n{CALL}", "It is 42."])
    with running_server(model, ServerSettings(api_key="k")) as url:
        source = RemoteSource(f"{url}/v1", api_key="k")
        session = ChatSession(tools=ToolBox(enabled=True))
        session.add_user("6*7?")
        events = list(session.reply(source))
    finished = [e for e in events if isinstance(e, ReplyFinished)]
    assert finished[0].message.tool_calls == [ToolCall("calculator", {"expression": "6*7"})]
    assert any(isinstance(e, ToolRan) and e.result.content == '{"result": 42}' for e in events)
    assert finished[1].message.content == "It is 42."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).startswith("I'll compute.")
    assert source.name == "scripted" and source.context_length == 4096  # from the server's max_model_len
    assert '<tool_response>\n{"result": 42}\n</tool_response>' in model.source.prompts[-1]
    sent = json.loads(finished[1].prompt)  # the inspector's prompt: what the server was sent
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["tools"][0]["function"]["name"] == "calculator"
    asked = [{"role": "user", "content": "6*7?"}]  # no tokenizer here: an overestimate from ChatML's characters
    assert source.count_tokens(asked) == math.ceil(len(render_conversation(asked)) / CHARS_PER_TOKEN)


def test_wrong_key_and_unreachable_server_are_one_clear_line():
    with running_server(scripted_model(["hi"]), ServerSettings(api_key="k")) as url, \
            pytest.raises(CogniError, match="HTTP 401: incorrect API key"):
        RemoteSource(f"{url}/v1", api_key="wrong")
    with pytest.raises(CogniError, match="cannot reach the server"):
        RemoteSource("http://127.0.0.1:9/v1")
