"""ChatML with tools: the one place that renders conversations and parses model replies.

    <|im_start|>system
    You are helpful.
    <tools>
    {"type": "function", "function": {"name": "get_weather", ...}}
    </tools><|im_end|>
    <|im_start|>user
    Weather in Paris?<|im_end|>
    <|im_start|>assistant
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call><|im_end|>
    <|im_start|>tool
    <tool_response>
    {"temp_c": 18}
    </tool_response><|im_end|>

Prepare, chat and the exported Hugging Face chat template all produce exactly this text. JSON is
written with `json.dumps(..., ensure_ascii=False)`, which is what transformers' `tojson` filter does.

Only the template writes control tokens: every text put inside it (messages, tool definitions, calls and
results) goes through `tokenizer.literal`, so a message that spells `<|im_end|>` is encoded as those characters,
never as the token that ends a turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from cognimamba.model.tokenizer import (
    IM_END,
    IM_START,
    TOOL_CALL,
    TOOL_CALL_END,
    TOOL_RESPONSE,
    TOOL_RESPONSE_END,
    TOOLS,
    TOOLS_END,
    literal,
)

ROLES = ("system", "user", "assistant", "tool")
UNCLOSED_CALL = f"unclosed {TOOL_CALL} (the reply ended before {TOOL_CALL_END})"  # the problem a cut-off call gives


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


@dataclass
class ParsedReply:
    """A model reply split into its text and tool calls; `problems` says what could not be understood."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    raw_calls: list[str] = field(default_factory=list)  # the malformed call texts, shown to the user as-is

    @property
    def ok(self) -> bool:
        return not self.problems


def normalize_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """OpenAI-style `{"type": "function", "function": {...}}`; a bare `{name, description, parameters}` is wrapped."""
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return tool
    if "name" in tool:
        return {"type": "function", "function": tool}
    raise ValueError(f"tool definition without a name: {json.dumps(tool)[:80]}")


def normalize_tool_calls(calls: list[Any] | None) -> list[ToolCall]:
    """Accept OpenAI `{"type": "function", "function": {"name", "arguments": "<json>"}}` or `{"name", "arguments"}`."""
    result = []
    for call in calls or []:
        if isinstance(call, ToolCall):
            result.append(call)
            continue
        body = call.get("function", call) if isinstance(call, dict) else {}
        arguments = body.get("arguments")
        if arguments is None:  # absent or null: no arguments, as the exported chat template writes them
            arguments = {}
        elif isinstance(arguments, str):
            arguments = json.loads(arguments) if arguments.strip() else {}
        result.append(ToolCall(str(body["name"]), dict(arguments)))
    return result


def render_system(system: str | None, tools: list[dict[str, Any]] | None) -> str | None:
    """System turn content: the prompt, then the tool definitions inside <tools>."""
    system = literal(system) if system is not None else None
    if not tools:
        return system
    lines = [literal(json.dumps(normalize_tool(tool), ensure_ascii=False)) for tool in tools]
    block = f"{TOOLS}\n" + "\n".join(lines) + f"\n{TOOLS_END}"
    return f"{system}\n{block}" if system else block


def render_assistant_content(content: str, tool_calls: list[ToolCall]) -> str:
    parts = [literal(content)] if content else []
    parts += [f"{TOOL_CALL}\n{literal(call.to_json())}\n{TOOL_CALL_END}" for call in tool_calls]
    return "\n".join(parts)


def render_tool_response(content: str) -> str:
    return f"{TOOL_RESPONSE}\n{literal(content)}\n{TOOL_RESPONSE_END}"


def _turn(role: str, content: str) -> str:
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def render_segments(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                    add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """The conversation as (text, trained) pieces: only assistant replies and their <|im_end|> are trained.

    Concatenating the texts gives `render_conversation(...)`; the flags become the loss mask.
    """
    segments: list[tuple[str, bool]] = []
    messages = list(messages)
    system = None
    if messages and messages[0].get("role") == "system":
        system = str(messages[0].get("content") or "")
        messages = messages[1:]
    system_content = render_system(system, tools)
    if system_content is not None:
        segments.append((_turn("system", system_content), False))
    for message in messages:
        role = message.get("role")
        if role not in ROLES or role == "system":
            raise ValueError(f"unsupported role {role!r} (system only first; then user, assistant, tool)")
        content = str(message.get("content") or "")
        if role == "assistant":
            body = render_assistant_content(content, normalize_tool_calls(message.get("tool_calls")))
            segments.append((f"{IM_START}assistant\n", False))
            segments.append((f"{body}{IM_END}", True))
            segments.append(("\n", False))
        elif role == "tool":
            segments.append((_turn("tool", render_tool_response(content)), False))
        else:
            segments.append((_turn(role, literal(content)), False))
    if add_generation_prompt:
        segments.append((f"{IM_START}assistant\n", False))
    return segments


def render_conversation(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                        add_generation_prompt: bool = False) -> str:
    return "".join(text for text, _ in render_segments(messages, tools, add_generation_prompt))


_CALL_PATTERN = re.compile(re.escape(TOOL_CALL) + r"(.*?)" + re.escape(TOOL_CALL_END), re.DOTALL)


def parse_tool_call(body: str, known_tools: Collection[str] | None = None) -> tuple[ToolCall | None, str | None]:
    """One call's JSON -> (call, None) or (None, problem). Never raises.

    Beyond JSONDecodeError, json.loads raises ValueError for integers of more digits than Python will
    convert and RecursionError for deep nesting; a model can write either.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        return None, f"tool call is not valid JSON ({error.__class__.__name__}: {str(error)[:60]})"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None, "tool call JSON needs a string \"name\""
    arguments = data.get("arguments")
    if arguments is None:  # absent or null: no arguments, as the renderer and the exported template read them
        arguments = {}
    elif isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return None, f"arguments of {data['name']!r} are not a JSON object"
    if not isinstance(arguments, dict):
        return None, f"arguments of {data['name']!r} are not a JSON object"
    if known_tools is not None and data["name"] not in known_tools:
        return ToolCall(data["name"], arguments), f"unknown tool {data['name']!r}"
    return ToolCall(data["name"], arguments), None


def parse_assistant(text: str, known_tools: Collection[str] | None = None,
                    keep_failed_calls: bool = False) -> ParsedReply:
    """Split a reply into text and tool calls. Malformed output gives problems, never an exception.

    A call that does not parse is cut out of the content (its text kept in `raw_calls`, for the chat to show);
    a call to a tool outside `known_tools` is listed too, so the chat can answer it. With `keep_failed_calls`,
    as an API server answers (only a good call to an offered tool is a call), both stay in the content as
    the model wrote them, and so does a call the reply never closed.
    """
    reply = ParsedReply(content="")
    pieces: list[str] = []
    position = 0  # where the content piece after the last call starts
    searched = 0  # where an unclosed call may start
    for match in _CALL_PATTERN.finditer(text):
        searched = match.end()
        call, problem = parse_tool_call(match.group(1).strip(), known_tools)
        if problem is not None:
            reply.problems.append(problem)
            reply.raw_calls.append(match.group(0))
            if keep_failed_calls:
                continue  # its text stays in the piece around it
        pieces.append(text[position:match.start()])
        position = match.end()
        if call is not None and (problem is None or problem.startswith("unknown tool")):
            reply.tool_calls.append(call)
    unclosed = text.find(TOOL_CALL, searched)
    if unclosed >= 0:
        reply.problems.append(UNCLOSED_CALL)
        reply.raw_calls.append(text[unclosed:])
    pieces.append(text[position:] if unclosed < 0 or keep_failed_calls else text[position:unclosed])
    reply.content = "\n".join(piece.strip("\n") for piece in pieces if piece.strip()).strip()
    return reply
