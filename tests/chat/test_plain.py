"""`cogni chat --prompt --json`: the object scripts read, built from the events of one exchange."""

from __future__ import annotations

import io

from cognimamba.chat.controller import ChatController
from cognimamba.chat.plain import ReplyPrinter, prompt_json, reply_once
from cognimamba.chat.session import ChatSession
from cognimamba.chat.tools import ToolBox
from tests.chat.scripts import ScriptedSource


def call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def exchange(replies: list[str], tools_enabled: bool) -> dict:
    printer = ReplyPrinter(io.StringIO(), io.StringIO())
    chat = ChatController(ChatSession(tools=ToolBox(enabled=tools_enabled)))
    reply_once(chat, "what is 12 times 7?", ScriptedSource(replies), printer)
    return prompt_json(printer)


def test_tool_calls_list_name_arguments_and_result_in_the_order_they_ran():
    replies = [call("calculator", '{"expression": "12*7"}') + "\n" + call("calculator", '{"expression": "84+1"}'),
               "12 times 7 is 84."]
    payload = exchange(replies, tools_enabled=True)
    assert payload["text"] == "12 times 7 is 84."
    assert payload["tool_calls"] == [
        {"name": "calculator", "arguments": {"expression": "12*7"}, "result": {"result": 84}},
        {"name": "calculator", "arguments": {"expression": "84+1"}, "result": {"result": 85}}]
    assert [result["name"] for result in payload["tool_results"]] == ["calculator", "calculator"]  # the older key


def test_a_call_that_did_not_run_has_no_result_and_a_plain_reply_no_calls():
    skipped = exchange([call("calculator", '{"expression": "12*7"}')], tools_enabled=False)
    assert skipped["tool_calls"] == [{"name": "calculator", "arguments": {"expression": "12*7"}, "result": None}]
    plain = exchange(["Hello!"], tools_enabled=True)
    assert plain["text"] == "Hello!" and plain["tool_calls"] == [] and "tool_results" not in plain
