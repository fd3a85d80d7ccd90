"""A Responses API request (`POST /v1/responses`) read as the `ChatRequest` the chat format renders.

The Responses API says the same things as chat completions in other words: `instructions` is the system
message, `input` a string or a list of items (messages, the assistant's `function_call`s and their
`function_call_output`s), `tools` lists functions flat (`{"type": "function", "name", "parameters"}`), and the
reply's length is `max_output_tokens`. Each mistake is a 400 naming its field (`input[3].call_id`), as
serve/schemas.py does for chat; what needs state this server does not keep (`previous_response_id`, a stored
`conversation`, `background`) is refused rather than ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cognimamba.chat.format import ToolCall
from cognimamba.serve.errors import bad_request
from cognimamba.serve.schemas import (
    ChatRequest,
    ToolChoice,
    check_tool_name,
    load_json,
    request_model,
    sampling_params,
    text_content,
)

TEXT_PARTS = ("input_text", "output_text", "text")
MESSAGE_ROLES = ("system", "developer", "user", "assistant")
# Items a reasoning model hands back between turns; this model writes none, so they say nothing to it.
IGNORED_ITEMS = ("reasoning",)
# Fields that need state kept between requests; this server keeps none (store is always false).
STATEFUL_FIELDS = {"previous_response_id": "send the whole conversation in 'input'",
                   "conversation": "send the whole conversation in 'input'",
                   "prompt": "send 'instructions' and 'input' instead of a stored prompt"}


@dataclass
class ResponsesRequest:
    chat: ChatRequest
    echo: dict[str, Any]  # the request's settings as the response object repeats them


def parse_responses_request(body: dict[str, Any]) -> ResponsesRequest:
    _refuse_unsupported(body)
    tools = _function_tools(body.get("tools"))
    choice, choice_echo = _tool_choice(body.get("tool_choice"), tools)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request("'instructions' must be a string", "instructions")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise bad_request("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    sampling = sampling_params(body, ("max_output_tokens",))
    chat = ChatRequest(model=request_model(body), messages=_input_messages(body.get("input"), instructions),
                       sampling=sampling, stream=bool(stream), tools=[tool for tool, _ in tools], tool_choice=choice)
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("'metadata' must be an object of strings", "metadata")
    echo = {"instructions": instructions, "max_output_tokens": sampling.max_tokens, "metadata": metadata or {},
            "parallel_tool_calls": parallel, "temperature": sampling.temperature, "top_p": sampling.top_p,
            "tool_choice": choice_echo, "tools": [flat for _, flat in tools], "store": False,
            "text": {"format": {"type": "text"}}, "truncation": body.get("truncation") or "disabled",
            "reasoning": {"effort": None, "summary": None}}
    return ResponsesRequest(chat, echo)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, hint in STATEFUL_FIELDS.items():
        if body.get(name) is not None:
            raise bad_request(f"'{name}': this server stores no responses or conversations; {hint}", name)
    if body.get("background"):
        raise bad_request("'background': this server answers while the request is open; leave it out", "background")
    text = body.get("text")
    kind = text.get("format", {}).get("type", "text") if isinstance(text, dict) and \
        isinstance(text.get("format", {}), dict) else None
    if text is not None and kind != "text":
        raise bad_request(f"'text.format' {json.dumps(kind)} is not supported; only {{\"type\": \"text\"}}",
                          "text.format")
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise bad_request("'truncation' must be \"auto\" or \"disabled\"", "truncation")


def _input_messages(value: Any, instructions: str | None) -> list[dict[str, Any]]:
    """`input` as chat.format's messages: consecutive function_call items join the assistant turn before them."""
    if isinstance(value, str) and value:
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise bad_request("'input' must be a non-empty string or a non-empty list of items", "input")
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    open_calls: set[str] = set()  # call ids of the latest assistant turn, which function_call_output may answer
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise bad_request(f"'{where}' must be an object: a message, function_call or function_call_output item",
                              where)
        kind = item.get("type", "message")
        if kind == "message":
            _add_message(messages, item, where)
            if messages[-1]["role"] == "assistant":
                open_calls = set()
        elif kind == "function_call":
            call_id = _call_id(item, where)
            if not messages or messages[-1]["role"] != "assistant":
                messages.append({"role": "assistant", "content": "", "tool_calls": []})
                open_calls = set()
            messages[-1]["tool_calls"].append(_function_call(item, where))
            open_calls.add(call_id)
        elif kind == "function_call_output":
            call_id = _call_id(item, where)
            if call_id not in open_calls:
                raise bad_request(f"'{where}.call_id' {call_id!r} answers no function_call of the assistant turn "
                                  "before it", f"{where}.call_id")
            output = item.get("output")
            content = json.dumps(output, ensure_ascii=False) if isinstance(output, dict) else \
                text_content(output, f"{where}.output", TEXT_PARTS)
            messages.append({"role": "tool", "content": content})
        elif kind not in IGNORED_ITEMS:
            raise bad_request(f"'{where}.type' {json.dumps(kind)} is not supported; send message, function_call "
                              "and function_call_output items", f"{where}.type")
    if not messages:
        raise bad_request("'input' holds nothing to answer", "input")
    return messages


def _add_message(messages: list[dict[str, Any]], item: dict[str, Any], where: str) -> None:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise bad_request(f"'{where}.role' is {json.dumps(role)}; use one of {', '.join(MESSAGE_ROLES)}",
                          f"{where}.role")
    content = text_content(item.get("content"), f"{where}.content", TEXT_PARTS)
    if role in ("system", "developer"):
        if any(message["role"] != "system" for message in messages):
            raise bad_request(f"'{where}': system and developer messages only at the start of the conversation",
                              where)
        if messages:  # instructions, or several leading system messages, become one
            messages[0]["content"] += "\n" + content
        else:
            messages.append({"role": "system", "content": content})
    elif role == "assistant":
        messages.append({"role": "assistant", "content": content, "tool_calls": []})
    else:
        messages.append({"role": "user", "content": content})


def _call_id(item: dict[str, Any], where: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"'{where}.call_id' is required: the id that ties a call to its output", f"{where}.call_id")
    return call_id


def _function_call(item: dict[str, Any], where: str) -> ToolCall:
    check_tool_name(item.get("name"), f"{where}.name")
    arguments = item.get("arguments") or "{}"
    if not isinstance(arguments, str):
        raise bad_request(f"'{where}.arguments' must be a JSON object as a string", f"{where}.arguments")
    parsed = load_json(arguments, f"{where}.arguments")
    if not isinstance(parsed, dict):
        raise bad_request(f"'{where}.arguments' must be a JSON object as a string", f"{where}.arguments")
    return ToolCall(item["name"], parsed)


def _function_tools(value: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each tool as chat.format reads it ({"type", "function": {...}}) and as the response echoes it (flat)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("'tools' must be a list of {\"type\": \"function\", \"name\", \"parameters\"}", "tools")
    tools = []
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad_request(f"'{where}': only function tools are supported ({{\"type\": \"function\", \"name\", "
                              f"\"parameters\"}}), not {json.dumps(kind)}", where)
        check_tool_name(tool.get("name"), f"{where}.name")
        parameters = tool.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise bad_request(f"'{where}.parameters' must be a JSON Schema object", f"{where}.parameters")
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise bad_request(f"'{where}.description' must be a string", f"{where}.description")
        function = {"name": tool["name"], "description": description, "parameters": parameters}
        tools.append(({"type": "function", "function": function},
                      {"type": "function", **function, "strict": tool.get("strict")}))
    return tools


def _tool_choice(value: Any, tools: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[ToolChoice, Any]:
    """The choice, and its echo: "auto", "none", "required" or {"type": "function", "name"}."""
    if value is None:
        return ToolChoice("auto"), "auto"
    names = [flat["name"] for _, flat in tools]
    if isinstance(value, str) and value in ("auto", "none", "required"):
        choice = ToolChoice(value)
    elif isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        choice = ToolChoice("function", value["name"])
        if choice.name not in names:
            raise bad_request(f"'tool_choice' names {choice.name!r}, which is not in 'tools'", "tool_choice")
    else:
        raise bad_request("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                          "{\"type\": \"function\", \"name\": ...}", "tool_choice")
    if choice.mode in ("required", "function") and not tools:
        raise bad_request(f"'tool_choice' {json.dumps(value)} needs 'tools'", "tool_choice")
    return choice, value
