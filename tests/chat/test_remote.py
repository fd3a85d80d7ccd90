"""The OpenAI-compatible client: prompts read back into messages, and a session talking to a real server."""

from __future__ import annotations

import pytest

from cognimamba.chat.format import ToolCall, render_conversation
from cognimamba.chat.remote import RemoteSource, prompt_messages
from cognimamba.chat.session import ChatSession, ReplyFinished, TextDelta, ToolRan
from cognimamba.chat.tools import ToolBox
from cognimamba.errors import CogniError
from cognimamba.serve.state import ServerSettings
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'


def test_a_rendered_prompt_reads_back_into_the_same_conversation():
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 6*7?"},
        {"role": "assistant", "content": "Let me compute.", "tool_calls": [ToolCall("calculator", {"x": 1})]},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "42."},
        {"role": "user", "content": "Thanks\nbye"},
    ]
    prompt = render_conversation(conversation, tools, add_generation_prompt=True)
    messages, read_tools = prompt_messages(prompt)
    assert read_tools == tools
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant", "user"]
    call = messages[2]["tool_calls"][0]
    assert messages[3]["tool_call_id"] == call["id"] and messages[3]["content"] == "42"
    assert call["function"] == {"name": "calculator", "arguments": '{"x": 1}'}
    assert messages[5]["content"] == "Thanks\nbye" and messages[0]["content"] == "Be brief."


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


def test_wrong_key_and_unreachable_server_are_one_clear_line():
    with running_server(scripted_model(["hi"]), ServerSettings(api_key="k")) as url, \
            pytest.raises(CogniError, match="HTTP 401: incorrect API key"):
        RemoteSource(f"{url}/v1", api_key="wrong")
    with pytest.raises(CogniError, match="cannot reach the server"):
        RemoteSource("http://127.0.0.1:9/v1")
