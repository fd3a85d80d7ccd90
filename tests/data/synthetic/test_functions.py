"""The invented-function conversations: seeded, varied, every call valid against its schema and copied from the
user's words."""

from __future__ import annotations

import json
from collections import Counter

from cognimamba.chat.format import render_segments
from cognimamba.data.chat_sources import iter_conversations, resolve_chat_source
from cognimamba.data.synthetic.functions import SUBJECTS, generate_conversations
from tests.data.synthetic.test_tools import assert_calls_parse_back, assert_seeded

JSON_TYPES = {"string": str, "integer": int, "number": int | float, "array": list}


def test_same_seed_same_conversations() -> None:
    assert_seeded(generate_conversations)


def said(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def test_every_call_names_an_offered_function_with_schema_valid_arguments_the_user_gave() -> None:
    names, subjects, plain, calls = Counter(), set(), 0, 0
    for conversation in generate_conversations(400, seed=0):
        offered = {tool["name"]: tool for tool in conversation.tools or []}
        assert 1 <= len(offered) <= 3 and len(offered) == len(conversation.tools or [])
        names.update(offered.keys())
        render_segments(conversation.messages, conversation.tools)  # renders without error
        user_text = ""
        for index, message in enumerate(conversation.messages):
            if message["role"] == "user":
                user_text += message["content"] + "\n"
            if message["role"] != "assistant" or not message.get("tool_calls"):
                continue
            (call,) = message["tool_calls"]
            schema = offered[call["name"]]["parameters"]
            assert set(call["arguments"]) == set(schema["required"]) == set(schema["properties"])
            for key, value in call["arguments"].items():
                assert isinstance(value, JSON_TYPES[schema["properties"][key]["type"]]), (key, value)
                assert not isinstance(value, bool)
                assert said(value) in user_text, (key, value, user_text)  # copied, never guessed
            result = json.loads(conversation.messages[index + 1]["content"])
            answer = conversation.messages[index + 2]["content"]
            assert conversation.messages[index + 1]["role"] == "tool"
            assert any(said(value) in answer for value in result.values())
            subjects.add(call["name"].split("_", 1)[1])
            calls += 1
        if not any(m.get("tool_calls") for m in conversation.messages):
            plain += 1
    assert len(names) > 100  # the names vary: a model cannot learn them by heart
    assert len(subjects) > len(SUBJECTS) // 2
    assert 0.1 < plain / 400 < 0.35 and calls > 300


def test_no_fit_requests_ask_for_something_not_offered() -> None:
    checked = 0
    for conversation in generate_conversations(300, seed=1):
        reply = conversation.messages[-1]
        if reply["role"] == "assistant" and reply["content"].startswith(("I'm sorry", "Sorry")):
            asked = reply["content"].split("can't ")[-1].split("able to ")[-1].split(".")[0]
            assert asked.replace(" the ", "_").replace(" ", "_") not in {t["name"] for t in conversation.tools}
            checked += 1
    assert checked > 20


def test_rendered_calls_parse_back() -> None:
    assert_calls_parse_back(generate_conversations(100, seed=2))


def test_is_a_chat_source_by_name() -> None:
    source = resolve_chat_source("synthetic-functions", count=7, seed=5)
    conversations = list(iter_conversations(source))
    assert len(conversations) == 7
    assert [c.messages for c in conversations] == [c.messages for c in generate_conversations(7, seed=5)]
    assert source.identity()["generator"] == "synthetic-functions"
