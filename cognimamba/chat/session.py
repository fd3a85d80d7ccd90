"""One conversation: its messages, system prompt, settings and tools, and the loop that gets a reply.

The TUI, the line-mode chat and `--prompt` all drive the same `ChatSession.reply`, which yields events
(text deltas, a finished reply, tool results, a trimmed context) instead of printing, so every front end
shows the same thing. The session hands any `ReplySource` the messages and tools to answer (a run on this
machine is `chat.sources.LocalSource`, a server `chat.remote.RemoteSource`); how they become a prompt is the
source's business.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cognimamba.chat.format import ParsedReply, ToolCall, parse_assistant
from cognimamba.chat.tools import ToolBox, ToolResult
from cognimamba.config.schema import Config, GenerationConfig, set_field, validate
from cognimamba.errors import CogniError
from cognimamba.inference.decode_step import GenerationStats

MINIMAL_REPLY_TOKENS = 16  # room for a short answer when checking that tools fit
SETTING_FIELDS = ("temperature", "top_k", "top_p", "max_new_tokens", "repetition_penalty", "seed")


class ReplySource(Protocol):
    """What a chat needs from a model: messages and tools in (`Message.to_chat` dicts and tool definitions),
    text deltas out, the reply's `stats` after.

    `chat.sources.LocalSource` (a run on this machine: it renders ChatML) and `chat.remote.RemoteSource` (an
    OpenAI-compatible server: it sends the messages as JSON) are the real ones. The defaults below are what a
    source without the feature does; a source gets them by subclassing this class (a Protocol's methods are
    inherited only by explicit subclasses), so no front end asks what a source can do.
    """

    name: str
    defaults: GenerationConfig
    notice: str | None = None  # something the user should know about how replies are made (after warm_up)
    # > 0: each reply's stats.token_choices holds that many likeliest alternatives per token (the token
    # inspector); a source that cannot say how likely a token was leaves them empty.
    top_alternatives: int = 0

    @property
    def context_length(self) -> int: ...

    @property
    def stats(self) -> GenerationStats: ...

    def count_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                     add_generation_prompt: bool = False) -> int:
        """The tokens these messages take in the model's prompt (an estimate where the source has no tokenizer)."""
        ...

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt for a reply to `messages` as the model gets it, for people (the token inspector)."""
        ...

    def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
               settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        """The assistant's reply to `messages` as text deltas; tool calls come as `<tool_call>` blocks."""
        ...

    def warm_up(self) -> None:
        """Get ready for the first reply (compile, connect); nothing to do by default."""

    def close(self) -> None:
        """Let go of what the source holds (a model process); nothing to do by default. Safe to call twice."""


@dataclass
class Message:
    """A chat message as stored and shown; `meta` keeps what the UI needs (stats, problems, raw calls)."""

    role: str
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_chat(self) -> dict[str, Any]:
        """The `{"role", "content", "tool_calls"}` form chat_format renders."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [{"name": call.name, "arguments": call.arguments} for call in self.tool_calls]
        return message


# Events yielded by ChatSession.reply, in order: [ContextTrimmed] ReplyStarted TextDelta* ReplyFinished
# (ToolSkipped | ToolRan)*, and again from ContextTrimmed/ReplyStarted when tool results go back to the model.
# ContextTrimmed comes when more old messages than before must be left out of the prompt.


@dataclass(frozen=True)
class ContextTrimmed:
    dropped_messages: int
    prompt_tokens: int
    context_length: int

    def describe(self) -> str:
        return (f"context full: the {self.dropped_messages} oldest message(s) were left out of the prompt "
                f"(the system prompt is kept; {self.prompt_tokens}/{self.context_length} tokens used)")


@dataclass(frozen=True)
class ReplyStarted:
    round: int
    prompt_tokens: int


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReplyFinished:
    message: Message
    parsed: ParsedReply
    stats: GenerationStats
    prompt_tokens: int
    context_length: int
    prompt: str = ""  # the prompt as the model got it (ReplySource.render: ChatML for a local model)

    @property
    def context_used(self) -> int:
        return self.prompt_tokens + self.stats.generated_tokens


@dataclass(frozen=True)
class ToolRan:
    call: ToolCall
    result: ToolResult
    message: Message


@dataclass(frozen=True)
class ToolSkipped:
    call: ToolCall
    reason: str


ChatEvent = ContextTrimmed | ReplyStarted | TextDelta | ReplyFinished | ToolRan | ToolSkipped


@dataclass(frozen=True)
class PromptPlan:
    """What the model is asked to answer, and how many of the oldest messages had to be left out of it."""

    messages: list[dict[str, Any]]  # the system prompt, then the turns kept
    tools: list[dict[str, Any]]
    tokens: int
    dropped_messages: int


def settings_with(settings: GenerationConfig, changes: dict[str, Any], source: str = "settings") -> GenerationConfig:
    """A copy of `settings` with `changes` (strings or values) converted and range-checked like the config."""
    config = Config(generation=dataclasses.replace(settings))
    for name, value in changes.items():
        if name not in SETTING_FIELDS:
            raise CogniError(f"{source}: unknown setting {name!r}; use one of {', '.join(SETTING_FIELDS)}")
        set_field(config, f"generation.{name}", value, source)
    validate(config)
    return config.generation


def settings_from_dict(data: Any) -> GenerationConfig:
    """Settings stored with a chat; unknown or invalid entries fall back to the defaults instead of failing."""
    settings = GenerationConfig()
    if isinstance(data, dict):
        for name in SETTING_FIELDS:
            if name in data:
                try:
                    settings = settings_with(settings, {name: data[name]})
                except CogniError:
                    continue
    return settings


def describe_settings(settings: GenerationConfig) -> str:
    seed = "random" if settings.seed < 0 else str(settings.seed)
    return (f"temperature {settings.temperature:g}, top-k {settings.top_k}, top-p {settings.top_p:g}, "
            f"max {settings.max_new_tokens} tokens, seed {seed}")


class ChatSession:
    """The state of one chat and the reply loop, including tool calls and context trimming."""

    def __init__(self, system_prompt: str = "", settings: GenerationConfig | None = None,
                 tools: ToolBox | None = None, messages: list[Message] | None = None, max_tool_rounds: int = 3,
                 stop: list[str] | None = None) -> None:
        self.system_prompt = system_prompt
        self.stop = list(stop or [])  # extra stop strings (a local source also stops at a new turn's start)
        self.settings = settings or GenerationConfig()
        self.tools = tools or ToolBox()
        self.messages: list[Message] = list(messages or [])
        self.max_tool_rounds = max_tool_rounds
        self.announced_drop = 0  # messages left out of the last announced prompt: say so again only when it grows
        self._token_counts: dict[str, int] = {}

    def add_user(self, text: str) -> Message:
        message = Message("user", text)
        self.messages.append(message)
        return message

    def clear(self) -> None:
        self.messages.clear()
        self.announced_drop = 0

    def _head(self) -> list[dict[str, Any]]:
        return [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []

    def _count(self, source: ReplySource, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = False) -> int:
        key = json.dumps([messages, tools, add_generation_prompt], ensure_ascii=False, default=str)
        if key not in self._token_counts:
            self._token_counts[key] = source.count_tokens(messages, tools, add_generation_prompt)
        return self._token_counts[key]

    def plan_prompt(self, source: ReplySource) -> PromptPlan:
        """The conversation to answer, leaving out the oldest whole turns until it fits the context.

        Room for the reply is kept (up to a quarter of the context), the system prompt and tool
        definitions always stay, and so does the latest turn. A turn's tokens do not depend on its
        neighbours (in ChatML every turn starts with <|im_start|> and ends with <|im_end|>\\n, special tokens
        the BPE never merges across), so a conversation's count is the sum of its turns' and each turn is
        counted once.
        """
        context = source.context_length
        reserve = min(self.settings.max_new_tokens, max(1, context // 4))
        tools = self.tools.definitions()
        fixed = self._count(source, self._head(), tools, add_generation_prompt=True)
        turn_tokens = [self._count(source, [m.to_chat()]) for m in self.messages]
        turn_starts = sorted({0, *(i for i, message in enumerate(self.messages) if message.role == "user")})
        start = 0
        total = fixed + sum(turn_tokens)
        for candidate in turn_starts:
            if total - sum(turn_tokens[:candidate]) <= context - reserve or candidate == turn_starts[-1]:
                start = candidate
                break
        kept = self._head() + [m.to_chat() for m in self.messages[start:]]
        tokens = source.count_tokens(kept, tools, add_generation_prompt=True)
        if tokens >= context:
            raise CogniError(f"the latest message needs {tokens - fixed} tokens and the system prompt and tools "
                             f"{fixed}, more than the model's context of {context} tokens; "
                             f"{self.ways_out('shorten the message')}")
        return PromptPlan(kept, tools, tokens, start)

    def ways_out(self, first: str) -> str:
        """Every way out of a full context, so an error about it never leaves the user guessing."""
        ways = [first, "shorten or remove the system prompt", "clear the chat"]
        if self.tools.definitions():
            ways.append("turn tools off (Ctrl+T, /tools off)")
        ways.append("use a run trained with a longer context (model.max_seq_len)")
        return ", ".join(ways[:-1]) + " or " + ways[-1]

    def check_tools_fit(self, source: ReplySource, tools: ToolBox) -> None:
        """CogniError unless `tools`' definitions, the system prompt and a short exchange fit the context.

        A chat whose tool definitions fill the context cannot answer anything; refusing to turn them on says so
        once, instead of failing every message after.
        """
        exchange = [*self._head(), {"role": "user", "content": "What is 2+2?"}]
        needed = self._count(source, exchange, tools.definitions(), add_generation_prompt=True)
        needed += MINIMAL_REPLY_TOKENS
        if needed > source.context_length:
            raise CogniError(f"tools do not fit: their definitions, the system prompt and a short exchange need "
                             f"{needed} tokens, more than the model's context of {source.context_length}; keep "
                             "tools off, shorten the system prompt, or use a run trained with a longer context")

    def reply(self, source: ReplySource, cancel: threading.Event | None = None) -> Iterator[ChatEvent]:
        """Generate the assistant's reply to the conversation, run enabled tools and feed their results back.

        At most `max_tool_rounds` rounds of tool results go back to the model. A call in the reply after the
        last round is not run (ToolSkipped, and the reason saved with the reply): its result would never reach
        the model, and a tool should not act for a model that cannot see what it did.
        """
        for round_index in range(self.max_tool_rounds + 1):
            plan = self.plan_prompt(source)
            if plan.dropped_messages > self.announced_drop:
                yield ContextTrimmed(plan.dropped_messages, plan.tokens, source.context_length)
            self.announced_drop = plan.dropped_messages
            yield ReplyStarted(round_index, plan.tokens)
            pieces = []
            for delta in source.stream(plan.messages, plan.tools, self.settings, cancel, stop=self.stop):
                pieces.append(delta)
                yield TextDelta(delta)
            stats = dataclasses.replace(source.stats)
            last_round = round_index == self.max_tool_rounds
            message, parsed = self._assistant_message("".join(pieces), stats, last_round)
            self.messages.append(message)
            yield ReplyFinished(message, parsed, stats, plan.tokens, source.context_length,
                                source.render(plan.messages, plan.tools))
            if not parsed.tool_calls:
                return
            reasons = message.meta.get("not_run") or [None] * len(parsed.tool_calls)
            ran = False
            for call, reason in zip(parsed.tool_calls, reasons, strict=True):
                if reason is not None:
                    yield ToolSkipped(call, reason)
                    continue
                result = self.tools.run(call)
                tool_message = Message("tool", result.content, meta={"name": call.name, "ok": result.ok})
                self.messages.append(tool_message)
                ran = True
                yield ToolRan(call, result, tool_message)
            if not ran:
                return

    def _assistant_message(self, raw: str, stats: GenerationStats, last_round: bool) -> tuple[Message, ParsedReply]:
        parsed = parse_assistant(raw, self.tools.known_names())
        meta: dict[str, Any] = {
            "stop_reason": stats.stop_reason,
            "prompt_tokens": stats.prompt_tokens,
            "generated_tokens": stats.generated_tokens,
            "tokens_per_second": round(stats.tokens_per_second, 2),
            "time_to_first_token": round(stats.time_to_first_token, 4),
        }
        if parsed.problems:
            meta["problems"] = parsed.problems
            meta["raw_calls"] = parsed.raw_calls
        reasons = [self._why_not_run(call, stats, last_round) for call in parsed.tool_calls]
        if any(reason is not None for reason in reasons):
            meta["not_run"] = reasons  # saved with the reply, so a reopened chat says why a call has no result
        return Message("assistant", parsed.content, parsed.tool_calls, meta), parsed

    def _why_not_run(self, call: ToolCall, stats: GenerationStats, last_round: bool) -> str | None:
        if stats.stop_reason == "cancelled":
            return "the reply was stopped"
        reason = self.tools.why_not_run(call)
        if reason is None and last_round:
            reason = (f"the reply reached the limit of {self.max_tool_rounds} tool rounds, so the result could not "
                      "go back to the model")
        return reason


def conversation_markdown(title: str, session: ChatSession, run: str = "") -> str:
    """A chat as Markdown for people (export): headings per turn, tool calls and results as JSON blocks."""
    lines = [f"# {title}", ""]
    if run:
        lines += [f"Model: `{run}`  ", ""]
    lines += [f"Settings: {describe_settings(session.settings)}", ""]
    if session.system_prompt:
        lines += ["## System", "", session.system_prompt, ""]
    for message in session.messages:
        if message.role == "tool":
            lines += [f"## Tool result ({message.meta.get('name', 'tool')})", "", "```json",
                      pretty_json(message.content), "```", ""]
            continue
        lines += [f"## {message.role.capitalize()}", ""]
        if message.content:
            lines += [message.content, ""]
        for call in message.tool_calls:
            lines += [f"Tool call `{call.name}`:", "", "```json",
                      json.dumps(call.arguments, indent=2, ensure_ascii=False), "```", ""]
        for problem, raw in zip(message.meta.get("problems", []), message.meta.get("raw_calls", []), strict=False):
            lines += [f"> Malformed tool call: {problem}", "", "```", raw, "```", ""]
        if message.meta.get("stop_reason") == "cancelled":
            lines += ["*(stopped)*", ""]
    return "\n".join(lines).rstrip() + "\n"


def pretty_json(text: str) -> str:
    """Indented JSON for people; text that is not JSON comes back unchanged."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (json.JSONDecodeError, RecursionError):
        return text
