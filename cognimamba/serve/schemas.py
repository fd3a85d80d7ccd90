"""Requests as dataclasses: the JSON body checked field by field, each mistake a 400 naming its field.

Checked by hand rather than by pydantic models so each message says what OpenAI's would (`param` is the
field's path, `messages[2].tool_call_id`), and so unknown fields that clients routinely send (`user`,
`frequency_penalty`, `logit_bias` ...) are ignored instead of refused.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cognimamba.chat.format import ToolCall
from cognimamba.serve.errors import bad_request

MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_LENGTH = 1000  # characters per stop string: enough for any real use, and bounds their checking per token
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
# A UTF-16 surrogate, escaped or as raw UTF-8 bytes: json.loads lets both through as a lone one, which is no
# character and fails wherever the text is encoded. Only JSON that holds one is searched for where it is.
SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


@dataclass
class SamplingParams:
    """The sampling fields of a request; None means the run's own default (its config's `generation`)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not OpenAI's, but vLLM's and llama-server's name for it
    repetition_penalty: float | None = None
    max_tokens: int | None = None  # None: as many as the context leaves
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass(frozen=True)
class ToolChoice:
    """`auto` (the model decides), `none` (never a call), `required` (some call) or `function` (that one)."""

    mode: str = "auto"
    name: str | None = None


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]  # in chat.format's shape: role, content, tool_calls as ToolCall
    sampling: SamplingParams
    stream: bool = False
    include_usage: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: ToolChoice = ToolChoice()


@dataclass
class CompletionRequest:
    model: str
    prompt: str
    sampling: SamplingParams
    stream: bool = False
    include_usage: bool = False


class _LongInteger:
    """Stands in for an integer of more digits than Python reads (sys.get_int_max_str_digits), to find its field."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))


def _read_integer(text: str) -> int | _LongInteger:
    try:
        return int(text)
    except ValueError:
        return _LongInteger(text)


def _is_long_integer(item: Any) -> bool:
    return isinstance(item, _LongInteger)


def _has_lone_surrogate(item: Any) -> bool:
    if not isinstance(item, str) or item.isascii():
        return False
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _first_where(value: Any, where: str, bad: Callable[[Any], bool]) -> tuple[str, Any] | None:
    """The path and value of the first item for which `bad` holds (an object's key counts as the object).

    A loop rather than recursion: the JSON may be nested as deep as its parser allows.
    """
    stack = [(where, value)]
    while stack:
        path, item = stack.pop()
        if bad(item) or (isinstance(item, dict) and any(bad(key) for key in item)):
            return path, item
        if isinstance(item, dict):
            stack += reversed([(f"{path}.{key}" if path else str(key), child) for key, child in item.items()])
        elif isinstance(item, list):
            stack += reversed([(f"{path}[{index}]", child) for index, child in enumerate(item)])
    return None


def _field(path: str) -> str:
    return f"'{path}'" if path else "the request body"


def load_json(raw: str | bytes, where: str = "") -> Any:
    """json.loads, with what it fails on or lets through a 400 naming the field (`where`, or the whole body)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise bad_request(f"{_field(where)} is nested too deeply", where or None, "invalid_json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise bad_request(f"{_field(where)} is not valid JSON ({error})", where or None, "invalid_json") from None
    except ValueError:  # json.loads raises nothing else: an integer of more digits than Python reads
        path, number = _first_where(json.loads(raw, parse_int=_read_integer), where, _is_long_integer) \
            or (where, _LongInteger(""))
        raise bad_request(f"{_field(path)} is an integer of {number.digits} digits; at most "
                          f"{sys.get_int_max_str_digits()} are accepted", path or None) from None
    raw_bytes = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    found = _first_where(value, where, _has_lone_surrogate) if SURROGATE.search(raw_bytes) else None
    if found is not None:
        raise bad_request(f"{_field(found[0])} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not a "
                          "character; send valid Unicode text", found[0] or None)
    return value


def parse_json_body(raw: bytes) -> dict[str, Any]:
    body = load_json(raw)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    messages = _messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    stream, include_usage = _stream_fields(body)
    _check_n_and_format(body)
    return ChatRequest(model=request_model(body), messages=messages, sampling=sampling_params(body), stream=stream,
                       include_usage=include_usage, tools=tools, tool_choice=_tool_choice(body, tools))


def parse_completion_request(body: dict[str, Any]) -> CompletionRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int | list) and not isinstance(prompt[0], bool):
        raise bad_request("'prompt': token-id prompts are not accepted; send the prompt as text", "prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise bad_request("'prompt': one prompt per request (a list of several is not supported)", "prompt")
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("'prompt' must be a non-empty string", "prompt")
    stream, include_usage = _stream_fields(body)
    _check_n_and_format(body)
    return CompletionRequest(model=request_model(body), prompt=prompt, sampling=sampling_params(body), stream=stream,
                             include_usage=include_usage)


def request_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required: the id from GET /v1/models", "model")
    return model


def _number(body: dict[str, Any], name: str, low: float, high: float, integer: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise bad_request(f"'{name}' must be {'an integer' if integer else 'a number'}, not {json.dumps(value)}",
                          name)
    if not low <= value <= high:
        raise bad_request(f"'{name}' is {value}; it must be between {low:g} and {high:g}", name)
    return value


def sampling_params(body: dict[str, Any], max_tokens_fields: tuple[str, ...] = ("max_completion_tokens", "max_tokens"),
                    ) -> SamplingParams:
    """The sampling fields; the reply's length limit is the first of `max_tokens_fields` given (the Responses API
    calls it max_output_tokens)."""
    max_tokens = None
    for name in max_tokens_fields:
        max_tokens = _number(body, name, 1, 2**31, integer=True)
        if max_tokens is not None:
            break
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > MAX_STOP_STRINGS:
        raise bad_request(f"'stop' must be a string or a list of up to {MAX_STOP_STRINGS} strings", "stop")
    if any(len(s) > MAX_STOP_LENGTH for s in stop):
        longest = max(len(s) for s in stop)
        raise bad_request(f"'stop' strings may be at most {MAX_STOP_LENGTH} characters each; one has {longest}",
                          "stop")
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if top_p == 0:
        raise bad_request("'top_p' must be above 0 (1 keeps every token)", "top_p")
    return SamplingParams(temperature=temperature, top_p=top_p, top_k=_number(body, "top_k", 0, 2**31, integer=True),
                          repetition_penalty=_number(body, "repetition_penalty", 0.01, 10), max_tokens=max_tokens,
                          stop=[s for s in stop if s], seed=_number(body, "seed", -(2**63), 2**63 - 1, integer=True))


def _stream_fields(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise bad_request("'stream_options' is only allowed with 'stream': true", "stream_options")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise bad_request("'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
    return stream, bool(options.get("include_usage", False))


def _check_n_and_format(body: dict[str, Any]) -> None:
    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        raise bad_request(f"'n' is {json.dumps(n)}; this server makes one choice per request (n = 1)", "n")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        kind = response_format.get("type") if isinstance(response_format, dict) else response_format
        raise bad_request(f"'response_format' {json.dumps(kind)} is not supported; only {{\"type\": \"text\"}}",
                          "response_format")


def text_content(value: Any, where: str, part_types: tuple[str, ...] = ("text",)) -> str:
    """Message content: a string, null, or a list of text parts (what newer clients send) of `part_types`."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        texts = []
        for index, part in enumerate(value):
            text = part.get("text") if isinstance(part, dict) and part.get("type") in part_types else None
            if not isinstance(text, str):
                raise bad_request(f"'{where}[{index}]': only text content parts are supported", f"{where}[{index}]")
            texts.append(text)
        return "".join(texts)
    raise bad_request(f"'{where}' must be a string or a list of text parts", where)


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise bad_request("'messages' must be a non-empty list of messages", "messages")
    messages: list[dict[str, Any]] = []
    open_calls: set[str] = set()  # ids of the latest assistant's calls that tool messages may answer
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"'{where}' must be an object with a 'role'", where)
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise bad_request(f"'{where}.role' is {json.dumps(role)}; use one of {', '.join(CHAT_ROLES)}",
                              f"{where}.role")
        content = text_content(message.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            if any(m["role"] != "system" for m in messages):
                raise bad_request(f"'{where}': system messages only at the start of the conversation", where)
            if messages:  # several leading system messages become one
                messages[0]["content"] += "\n" + content
                continue
            messages.append({"role": "system", "content": content})
        elif role == "assistant":
            calls, ids = _assistant_calls(message.get("tool_calls"), f"{where}.tool_calls")
            messages.append({"role": "assistant", "content": content, "tool_calls": calls})
            open_calls = set(ids)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"'{where}.tool_call_id' is required: the id of the call this answers",
                                  f"{where}.tool_call_id")
            if call_id not in open_calls:
                raise bad_request(f"'{where}.tool_call_id' {call_id!r} answers no tool call of the assistant "
                                  "message before it", f"{where}.tool_call_id")
            messages.append({"role": "tool", "content": content})
        else:
            messages.append({"role": "user", "content": content})
    return messages


def check_tool_name(name: Any, where: str) -> None:
    """One rule for offered names and for past calls' names: a name is rendered into the prompt as it is."""
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise bad_request(f"'{where}' must be 1-64 letters, digits, _ or -", where)


def _assistant_calls(value: Any, where: str) -> tuple[list[ToolCall], list[str]]:
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise bad_request(f"'{where}' must be a list", where)
    calls, ids = [], []
    for index, call in enumerate(value):
        body = call.get("function") if isinstance(call, dict) else None
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise bad_request(f"'{where}[{index}]' must be {{\"id\", \"type\": \"function\", \"function\": "
                              "{\"name\", \"arguments\"}}", f"{where}[{index}]")
        arguments = body.get("arguments") or "{}"
        parsed = load_json(arguments, f"{where}[{index}].function.arguments") if isinstance(arguments, str) \
            else arguments
        if not isinstance(parsed, dict):
            raise bad_request(f"'{where}[{index}].function.arguments' must be a JSON object (as a string)",
                              f"{where}[{index}].function.arguments")
        check_tool_name(body["name"], f"{where}[{index}].function.name")
        calls.append(ToolCall(body["name"], parsed))
        ids.append(str(call.get("id", "")))
    return calls, ids


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("'tools' must be a list of {\"type\": \"function\", \"function\": {...}}", "tools")
    tools = []
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict):
            raise bad_request(f"'{where}' must be {{\"type\": \"function\", \"function\": {{\"name\", ...}}}}", where)
        check_tool_name(function.get("name"), f"{where}.function.name")
        if not isinstance(function.get("parameters", {}), dict):
            raise bad_request(f"'{where}.function.parameters' must be a JSON Schema object",
                              f"{where}.function.parameters")
        if not isinstance(function.get("description", ""), str):
            raise bad_request(f"'{where}.function.description' must be a string", f"{where}.function.description")
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(body: dict[str, Any], tools: list[dict[str, Any]]) -> ToolChoice:
    value = body.get("tool_choice")
    if value is None:
        return ToolChoice("auto")
    names = [tool["function"]["name"] for tool in tools]
    if isinstance(value, str) and value in ("auto", "none", "required"):
        choice = ToolChoice(value)
    elif isinstance(value, dict) and isinstance(value.get("function"), dict):
        choice = ToolChoice("function", value["function"].get("name"))
        if choice.name not in names:
            raise bad_request(f"'tool_choice' names {choice.name!r}, which is not in 'tools'", "tool_choice")
    else:
        raise bad_request("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
    if choice.mode in ("required", "function") and not tools:
        raise bad_request(f"'tool_choice' {value!r} needs 'tools'", "tool_choice")
    return choice
