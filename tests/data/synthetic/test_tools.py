"""The seeded synthetic tool-calling conversations: deterministic, varied, correct, and preparable."""

from __future__ import annotations

import ast
import json
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from cognimamba.chat.format import parse_assistant, render_conversation, render_segments
from cognimamba.data.conversation import Conversation
from cognimamba.data.synthetic.tools import TOOLS, UNITS, generate_conversations
from tests.conftest import run_cli

OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def arithmetic(node: ast.expr) -> float:
    """The value of an expression made only of numbers and + - * /."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    assert isinstance(node, ast.BinOp) and type(node.op) in OPERATORS, ast.dump(node)
    return OPERATORS[type(node.op)](arithmetic(node.left), arithmetic(node.right))


def assert_seeded(generate: Callable[..., Iterator[Conversation]]) -> None:
    """The same (count, seed) gives the same conversations, another seed others, and a longer run extends a
    shorter one."""
    def rendered(count: int, seed: int) -> list[str]:
        return [render_conversation(c.messages, c.tools) for c in generate(count, seed=seed)]

    assert rendered(50, seed=3) == rendered(50, seed=3)
    assert rendered(50, seed=3) != rendered(50, seed=4)
    assert rendered(20, seed=3) == rendered(50, seed=3)[:20]


def assert_calls_parse_back(conversations: Iterable[Conversation]) -> None:
    """Every rendered assistant turn parses back to the calls it was written from."""
    for conversation in conversations:
        for message in conversation.messages:
            if message["role"] == "assistant":
                text = render_conversation([message]).split("assistant\n", 1)[1].removesuffix("<|im_end|>\n")
                parsed = parse_assistant(text, known_tools={tool["name"] for tool in conversation.tools or []})
                assert parsed.ok
                assert [(c.name, c.arguments) for c in parsed.tool_calls] == \
                    [(c["name"], c["arguments"]) for c in message.get("tool_calls") or []]


def test_same_seed_same_conversations() -> None:
    assert_seeded(generate_conversations)


def test_calls_use_offered_tools_with_valid_arguments() -> None:
    used, plain, requests = Counter(), 0, set()
    for conversation in generate_conversations(400, seed=0):
        offered = {tool["name"]: tool for tool in conversation.tools or []}
        render_segments(conversation.messages, conversation.tools)  # renders without error
        for index, message in enumerate(conversation.messages):
            if message["role"] == "user":
                requests.add(message["content"])
            if message["role"] != "assistant":
                continue
            calls = message.get("tool_calls") or []
            if not calls:
                assert "<tool_call>" not in message["content"]
                continue
            (call,) = calls
            schema = offered[call["name"]]["parameters"]  # a call only ever names an offered tool
            assert set(schema["required"]) <= set(call["arguments"]) <= set(schema["properties"])
            assert conversation.messages[index + 1]["role"] == "tool"
            assert conversation.messages[index + 2]["role"] == "assistant"  # the answer follows the result
            used[call["name"]] += 1
        if not any(m.get("tool_calls") for m in conversation.messages):
            plain += 1
    assert set(used) == set(TOOLS)  # every tool template appears
    assert 0.12 < plain / 400 < 0.35  # some conversations need no tool
    assert len(requests) > 250  # phrasings and arguments vary


def test_tool_results_are_right_and_answers_use_them() -> None:
    factors = {(source, target): convert for source, target, convert in UNITS}
    checked = Counter()
    for conversation in generate_conversations(300, seed=1):
        messages = conversation.messages
        for index, message in enumerate(messages):
            if not message.get("tool_calls"):
                continue
            call = message["tool_calls"][0]
            result = json.loads(messages[index + 1]["content"])
            answer = messages[index + 2]["content"]
            if call["name"] == "calculate":
                expected = arithmetic(ast.parse(call["arguments"]["expression"], mode="eval").body)
                assert result["result"] == expected
                checked["calculate"] += 1
            elif call["name"] == "convert_units":
                args = call["arguments"]
                assert result["value"] == round(factors[args["from_unit"], args["to_unit"]](args["value"]), 2)
                checked["convert_units"] += 1
            elif call["name"] == "get_weather":
                assert str(result["temperature"]) in answer and call["arguments"]["location"] in answer
                checked["get_weather"] += 1
    assert min(checked.values()) >= 5 and len(checked) == 3


def test_rendered_calls_parse_back() -> None:
    assert_calls_parse_back(generate_conversations(100, seed=2))


@pytest.mark.slow
def test_cli_prepares_synthetic_tools(tmp_path: Path, tiny_data: Path, cogni_home: Path) -> None:
    out = tmp_path / "synthetic"
    result = run_cli("prepare", "synthetic-tools", "--count", "120", "--tokenizer", str(tiny_data / "tokenizer.json"),
                     "--out", str(out), env={"COGNI_HOME": str(cogni_home)})
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_conversations"] + meta["val_conversations"] == 120
    assert meta["sources"][0]["count"] == 120 and meta["format"] == "chat"
    again = run_cli("prepare", "synthetic-tools", "--count", "120", "--tokenizer", str(tiny_data / "tokenizer.json"),
                    "--out", str(out), env={"COGNI_HOME": str(cogni_home)})
    assert again.returncode == 0 and again.stderr.startswith("reused")
