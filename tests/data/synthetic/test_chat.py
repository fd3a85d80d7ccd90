"""The quickstart's procedural conversations: seeded, varied, and calling the app's own tools correctly."""

from __future__ import annotations

import json
from pathlib import Path

from cognimamba.chat.format import normalize_tool_calls, render_system
from cognimamba.chat.tools import ToolBox, calculate, validate_json
from cognimamba.data.chat_sources import iter_conversations, resolve_chat_source
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.data.synthetic.chat import generate_conversations, write_conversations
from cognimamba.evaluation.tool_eval import load_eval_conversations

APP_TOOLS = ToolBox(enabled=True)  # what `cogni chat --enable-tools` offers


def test_same_seed_same_conversations_other_seed_others() -> None:
    first = list(generate_conversations(50, seed=4))
    assert first == list(generate_conversations(50, seed=4))
    assert first != list(generate_conversations(50, seed=5))


def test_tools_are_exactly_the_ones_the_app_lists() -> None:
    offered = [c.tools for c in generate_conversations(300) if c.tools]
    assert 150 < len(offered) < 270  # most conversations, not all: plain chats exist too
    for tools in offered:
        assert render_system(None, tools) == render_system(None, APP_TOOLS.definitions())


def test_every_tool_call_is_valid_and_its_result_is_what_the_tool_returns() -> None:
    calls = 0
    for conversation in generate_conversations(500, seed=1):
        messages = conversation.messages
        for index, message in enumerate(messages):
            for call in normalize_tool_calls(message.get("tool_calls")):
                calls += 1
                assert conversation.tools, "a call without tools offered"
                assert call.name in APP_TOOLS.known_names()
                assert validate_json(call.arguments, APP_TOOLS.builtins[call.name].parameters) == []
                response = messages[index + 1]
                assert response["role"] == "tool" and messages[index + 2]["role"] == "assistant"
                if call.name == "calculator":
                    result = json.loads(response["content"])["result"]
                    assert result == calculate(call.arguments["expression"])
                    answer = messages[index + 2]["content"]
                    assert str(int(result) if float(result).is_integer() else result) in answer
                else:
                    shown = json.loads(response["content"])
                    assert set(shown) == {"time", "timezone"}
                    if call.arguments:
                        assert shown["timezone"] == call.arguments["timezone"]
    assert calls > 150


def test_conversations_are_varied() -> None:
    conversations = list(generate_conversations(1000, seed=2))
    user_messages = {m["content"] for c in conversations for m in c.messages if m["role"] == "user"}
    systems = [c.messages[0]["content"] for c in conversations if c.messages[0]["role"] == "system"]
    calls = [call.name for c in conversations for m in c.messages for call in normalize_tool_calls(m.get("tool_calls"))]
    assert len(user_messages) > 400
    assert any("note" in s.lower() or "context" in s.lower() for s in systems)  # questions about a given text
    assert any("one sentence" in s for s in systems) and any("character" in s or "Reply as" in s for s in systems)
    assert calls.count("calculator") > 100 and calls.count("current_time") > 50
    plain_with_tools = [c for c in conversations if c.tools and not any(m.get("tool_calls") for m in c.messages)]
    assert len(plain_with_tools) > 100  # requests no tool fits, small talk: answered in plain text
    assert any(len([m for m in c.messages if m["role"] == "user"]) >= 2 for c in conversations)


def test_is_a_named_chat_source_and_a_held_out_file(tmp_path: Path, tiny_data: Path) -> None:
    source = resolve_chat_source("synthetic-chat", count=20, seed=3)
    assert list(iter_conversations(source)) == list(generate_conversations(20, seed=3))
    held_out = tmp_path / "held_out.jsonl"
    write_conversations(held_out, 10, seed=9)
    assert load_eval_conversations(held_out) == list(generate_conversations(10, seed=9))
    result = prepare_chat(ChatPrepareOptions([MixEntry("synthetic-chat", count=40)], tiny_data / "tokenizer.json",
                                             out=tmp_path / "data"))
    assert result.data_dir.meta["train_conversations"] + result.data_dir.meta["val_conversations"] == 40
