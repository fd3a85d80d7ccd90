"""Chat records to `Conversation`s: one converter per record format, and the format told from a record's fields.

Every record, local or from the hub, is turned into a `Conversation` (OpenAI-style messages + tools) by the
converter of its format; rendering to text is chat/format's job, never this module's.

    alpaca    {"instruction", "input"?, "output"}  (Dolly's instruction/context/response also read)
    sharegpt  {"conversations": [{"from": human|gpt|system|function_call|observation, "value"}], "tools"?}
    messages  {"messages": [{"role", "content", "tool_calls"?}], "tools"?}   (OpenAI style)
    glaive    {"system": "SYSTEM: ...", "chat": "USER: ... ASSISTANT: <functioncall> {...}"}  (Glaive v2 raw)

A new format is one `from_<format>` function here, its entry in CONVERTERS, and its fields in `detect_format`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from cognimamba.chat.format import normalize_tool, normalize_tool_calls
from cognimamba.data.conversation import BadRecord, Conversation

CHAT_FORMATS = ("alpaca", "sharegpt", "messages", "glaive")


def _as_structure(value: Any, where: str) -> Any:
    """Lists and dicts sometimes arrive JSON-encoded (Glaive's `tools`, Arrow's streaming JSON reader)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise BadRecord(f"{where} is a string but not JSON ({error.msg})") from error
    return value


def _tools(value: Any) -> list[dict[str, Any]] | None:
    tools = _as_structure(value, "tools")
    if not tools:
        return None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list):
        raise BadRecord(f"tools must be a list of tool definitions, not {type(tools).__name__}")
    try:
        return [normalize_tool(_as_structure(tool, "tool")) for tool in tools]
    except (ValueError, AttributeError, TypeError) as error:
        raise BadRecord(f"tools: {error}") from error


def _text(value: Any, where: str) -> str:
    """Message content: a string, or OpenAI's list of {"type": "text", "text"} parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(part.get("text") or "" for part in value if isinstance(part, dict))
    raise BadRecord(f"{where} is not text ({type(value).__name__})")


def _check(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not any(message["role"] == "assistant" for message in messages):
        raise BadRecord("no assistant turn")
    if any(message["role"] == "system" for message in messages[1:]):
        raise BadRecord("a system message after the first turn")
    return messages


def from_alpaca(record: dict[str, Any]) -> Conversation:
    instruction = _text(record.get("instruction"), "instruction").strip()
    context = _text(record.get("input") if record.get("input") is not None else record.get("context"), "input").strip()
    output = _text(record.get("output") if record.get("output") is not None else record.get("response"), "output")
    if not instruction:
        raise BadRecord("no instruction")
    if not output.strip():
        raise BadRecord("no output")
    user = f"{instruction}\n\n{context}" if context else instruction
    messages: list[dict[str, Any]] = []
    system = _text(record.get("system"), "system").strip()
    if system:
        messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output.strip()}]
    return Conversation(messages)


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "system": "system", "function_call": "assistant",
                  "observation": "tool", "tool": "tool", "function": "tool", "ipython": "tool"}


def _function_call(value: str) -> dict[str, Any]:
    """A ShareGPT `function_call` turn: JSON {"name", "arguments"} (arguments may be a JSON string)."""
    try:
        call = normalize_tool_calls([_as_structure(value, "function_call")])[0]
    except (BadRecord, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise BadRecord(f"function_call is not {{\"name\", \"arguments\"}} JSON: {value[:60]!r}") from error
    return {"name": call.name, "arguments": call.arguments}


def from_sharegpt(record: dict[str, Any]) -> Conversation:
    turns = _as_structure(record.get("conversations"), "conversations")
    if not isinstance(turns, list) or not turns:
        raise BadRecord("no \"conversations\" list")
    messages: list[dict[str, Any]] = []
    system = _text(record.get("system"), "system").strip()
    if system:
        messages.append({"role": "system", "content": system})
    for turn in turns:
        turn = _as_structure(turn, "turn")
        if not isinstance(turn, dict):
            raise BadRecord("a turn is not an object")
        speaker = str(turn.get("from", turn.get("role", ""))).lower()
        value = _text(turn.get("value", turn.get("content")), f"{speaker} turn")
        role = SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise BadRecord(f"unknown speaker {speaker!r}")
        if speaker == "function_call":
            call = _function_call(value)
            previous = messages[-1] if messages else None
            if previous and previous["role"] == "assistant" and previous.get("tool_calls") is not None:
                previous["tool_calls"].append(call)  # parallel calls: consecutive function_call turns
            elif previous and previous["role"] == "assistant" and not previous.get("tool_calls"):
                previous["tool_calls"] = [call]  # text, then a call in the same reply
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif role == "system":
            if messages:
                raise BadRecord("a system turn after the first turn")
            messages.append({"role": "system", "content": value})
        else:
            messages.append({"role": role, "content": value})
    return Conversation(_check(messages), _tools(record.get("tools")))


def from_messages(record: dict[str, Any]) -> Conversation:
    raw = _as_structure(record.get("messages"), "messages")
    if not isinstance(raw, list) or not raw:
        raise BadRecord("no \"messages\" list")
    messages: list[dict[str, Any]] = []
    for item in raw:
        item = _as_structure(item, "message")
        if not isinstance(item, dict):
            raise BadRecord("a message is not an object")
        role = item.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise BadRecord(f"unsupported role {role!r}")
        message: dict[str, Any] = {"role": role, "content": _text(item.get("content"), f"{role} content")}
        if role == "assistant" and item.get("tool_calls"):
            calls = _as_structure(item["tool_calls"], "tool_calls")
            try:
                message["tool_calls"] = [{"name": c.name, "arguments": c.arguments}
                                         for c in normalize_tool_calls([_as_structure(c, "tool call") for c in calls])]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
                raise BadRecord(f"tool_calls are not {{\"name\", \"arguments\"}} objects ({error})") from error
        messages.append(message)
    return Conversation(_check(messages), _tools(record.get("tools")))


_GLAIVE_TURN = re.compile(r"(USER|ASSISTANT|FUNCTION RESPONSE):")
_GLAIVE_QUOTED_ARGUMENTS = re.compile(r"^\{\s*\"name\"\s*:\s*\"([^\"]+)\"\s*,\s*\"arguments\"\s*:\s*'(.*)'\s*\}$",
                                      re.DOTALL)
GLAIVE_END = "<|endoftext|>"
GLAIVE_CALL = "<functioncall>"


def _glaive_tools(system: str) -> list[dict[str, Any]] | None:
    """The function definitions after 'Use them if required -': JSON objects one after another."""
    start = system.find("{")
    if start < 0:
        return None
    text, decoder, tools, position = system[start:], json.JSONDecoder(), [], 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            break
        try:
            tool, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise BadRecord(f"function definitions in the system prompt are not JSON ({error.msg})") from error
        tools.append(tool)
    return [normalize_tool(tool) for tool in tools] or None


def _glaive_call(body: str) -> dict[str, Any]:
    """Glaive writes `{"name": "f", "arguments": '{"a": 1}'}`: the arguments JSON in single quotes."""
    body = body.strip()
    try:
        return _function_call(body)
    except BadRecord:
        match = _GLAIVE_QUOTED_ARGUMENTS.match(body)
        if match is None:
            raise
        try:
            arguments = json.loads(match.group(2)) if match.group(2).strip() else {}
        except json.JSONDecodeError as error:
            raise BadRecord(f"function call arguments are not JSON: {match.group(2)[:60]!r}") from error
        if not isinstance(arguments, dict):
            raise BadRecord("function call arguments are not a JSON object") from None
        return {"name": match.group(1), "arguments": arguments}


def from_glaive(record: dict[str, Any]) -> Conversation:
    """Glaive v2's own boilerplate system prompt is dropped: the tools block says the same thing."""
    chat = _text(record.get("chat"), "chat")
    if not chat.strip():
        raise BadRecord("no \"chat\" text")
    tools = _glaive_tools(_text(record.get("system"), "system"))
    pieces = _GLAIVE_TURN.split(chat)
    messages: list[dict[str, Any]] = []
    for speaker, body in zip(pieces[1::2], pieces[2::2], strict=True):
        body = body.replace(GLAIVE_END, "").strip()
        if speaker == "USER":
            messages.append({"role": "user", "content": body})
        elif speaker == "FUNCTION RESPONSE":
            messages.append({"role": "tool", "content": body})
        elif GLAIVE_CALL in body:
            text, _, call = body.partition(GLAIVE_CALL)
            messages.append({"role": "assistant", "content": text.strip(), "tool_calls": [_glaive_call(call)]})
        else:
            messages.append({"role": "assistant", "content": body})
    return Conversation(_check(messages), tools)


CONVERTERS: dict[str, Callable[[dict[str, Any]], Conversation]] = {
    "alpaca": from_alpaca, "sharegpt": from_sharegpt, "messages": from_messages, "glaive": from_glaive,
}


def detect_format(record: dict[str, Any]) -> str | None:
    """The chat format a record is in, from the fields it has; None when it is not chat data."""
    if record.get("conversations") is not None:
        return "sharegpt"
    if record.get("messages") is not None:
        return "messages"
    if record.get("chat") is not None and record.get("system") is not None:
        return "glaive"
    if record.get("instruction") is not None:
        return "alpaca"
    return None


def to_conversation(record: Any, format: str) -> Conversation:
    if not isinstance(record, dict):
        raise BadRecord(f"a record is a {type(record).__name__}, not an object")
    try:
        return CONVERTERS[format](record)
    except BadRecord:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        raise BadRecord(f"{type(error).__name__}: {error}") from error
