"""`cogni test-model RUN --tool-eval FILE`: does the model call the right tool, the right way, only when it should?

Every assistant turn of the held-out conversations is replayed: the reference history up to that turn is
rendered with chat_format, the model answers greedily, and `chat_format.parse_assistant` reads the answer.
A turn is scored only when its reference reply fits (in the context after the prompt, and in max_new_tokens):
a reply cut off by the limit says nothing about tool use. Such turns are skipped and counted.

    parse_rate          of the turns where the reference calls a tool: the reply holds <tool_call> blocks
                        whose JSON all parse into {"name", "arguments"}
    name_rate           ... and calls the same tool names as the reference
    arg_keys_rate       ... and passes the same argument keys to each
    args_rate           ... and the same argument values
    no_false_call_rate  of the turns where the reference answers in plain text: the reply holds no <tool_call>
    stop_reasons        how the scored replies ended (stop_token, max_new_tokens, context)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cognimamba.chat.format import (
    ParsedReply,
    ToolCall,
    normalize_tool_calls,
    parse_assistant,
    render_assistant_content,
    render_conversation,
)
from cognimamba.config.schema import GenerationConfig
from cognimamba.data.chat_sources import iter_conversations, resolve_chat_source
from cognimamba.data.conversation import Conversation
from cognimamba.errors import CogniError
from cognimamba.inference.batching import Reply
from cognimamba.model.tokenizer import TOOL_CALL

DEFAULT_MAX_NEW_TOKENS = 160
EXAMPLES_KEPT = 3


EVAL_SLOTS = 8  # held-out turns decoded at once: enough to share each weight read, few enough for any cache


class ReplyModel(Protocol):
    """What the eval talks to: `inference.decoding.ChatModel` (a real run), or anything with the same surface."""

    @property
    def context_length(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def replies(self, prompts: list[str], settings: GenerationConfig, slots: int) -> Iterator[Reply]: ...


@dataclass
class ToolEvalReport:
    conversations: int = 0
    tool_turns: int = 0
    parsed: int = 0
    right_name: int = 0
    right_arg_keys: int = 0
    right_args: int = 0
    plain_turns: int = 0
    no_false_call: int = 0
    skipped_too_long: int = 0  # the prompt and the reference reply do not fit, or the reply passes max_new_tokens
    stop_reasons: Counter[str] = field(default_factory=Counter)  # of the scored replies
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first misses, for a human reader

    @staticmethod
    def _rate(count: int, total: int) -> float | None:
        return count / total if total else None

    @property
    def parse_rate(self) -> float | None:
        return self._rate(self.parsed, self.tool_turns)

    @property
    def name_rate(self) -> float | None:
        return self._rate(self.right_name, self.tool_turns)

    @property
    def arg_keys_rate(self) -> float | None:
        return self._rate(self.right_arg_keys, self.tool_turns)

    @property
    def args_rate(self) -> float | None:
        return self._rate(self.right_args, self.tool_turns)

    @property
    def no_false_call_rate(self) -> float | None:
        return self._rate(self.no_false_call, self.plain_turns)

    def metrics(self) -> dict[str, Any]:
        """The rates (None where no turn of that kind exists) and the counts behind them."""
        return {"parse_rate": self.parse_rate, "name_rate": self.name_rate, "arg_keys_rate": self.arg_keys_rate,
                "args_rate": self.args_rate, "no_false_call_rate": self.no_false_call_rate,
                "tool_call_turns": self.tool_turns, "parsed_calls": self.parsed, "right_names": self.right_name,
                "right_arg_keys": self.right_arg_keys, "right_args": self.right_args,
                "plain_turns": self.plain_turns, "no_false_calls": self.no_false_call,
                "skipped_too_long": self.skipped_too_long, "stop_reasons": dict(self.stop_reasons),
                "tool_eval_conversations": self.conversations}

    def summary(self) -> str:
        def show(rate: float | None, count: int, total: int) -> str:
            return f"{rate:.2f} ({count}/{total})" if rate is not None else "n/a (0 turns)"

        text = (f"parse {show(self.parse_rate, self.parsed, self.tool_turns)}, "
                f"name {show(self.name_rate, self.right_name, self.tool_turns)}, "
                f"arg keys {show(self.arg_keys_rate, self.right_arg_keys, self.tool_turns)}, "
                f"args {show(self.args_rate, self.right_args, self.tool_turns)}, "
                f"no false call {show(self.no_false_call_rate, self.no_false_call, self.plain_turns)}")
        if self.stop_reasons:
            text += "; stopped by " + ", ".join(f"{reason} {count}" for reason, count in self.stop_reasons.items())
        if self.skipped_too_long:
            text += f"; {self.skipped_too_long} turns whose reference reply does not fit skipped"
        return text


def eval_turns(conversation: Conversation) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """(history before the turn, the reference assistant turn) for every assistant turn."""
    for index, message in enumerate(conversation.messages):
        if message["role"] == "assistant":
            yield conversation.messages[:index], message


def reference_reply_tokens(model: ReplyModel, reference: dict[str, Any]) -> int:
    """Tokens of the reference reply as the model would have to write it, without its <|im_end|>."""
    content = str(reference.get("content") or "")
    return model.count_tokens(render_assistant_content(content, normalize_tool_calls(reference.get("tool_calls"))))


def reply_fits(model: ReplyModel, prompt_tokens: int, reply_tokens: int, max_new_tokens: int) -> bool:
    """Room for the whole reply within max_new_tokens, and for it and its <|im_end|> within the context."""
    return reply_tokens <= max_new_tokens and prompt_tokens + reply_tokens + 1 <= model.context_length


def calls_match(expected: list[ToolCall], made: list[ToolCall], same: Callable[[ToolCall, ToolCall], bool]) -> bool:
    """Every expected call paired with its own made call of the same name for which `same` holds."""
    remaining = list(made)
    for want in expected:
        match = next((call for call in remaining if call.name == want.name and same(call, want)), None)
        if match is None:
            return False
        remaining.remove(match)
    return True


def score_turn(reference: dict[str, Any], reply: str, report: ToolEvalReport) -> bool:
    """Count one reply against its reference turn; True when it got everything right."""
    expected = normalize_tool_calls(reference.get("tool_calls"))
    if not expected:
        report.plain_turns += 1
        clean = TOOL_CALL not in reply
        report.no_false_call += clean
        return clean
    report.tool_turns += 1
    parsed: ParsedReply = parse_assistant(reply)
    if not parsed.tool_calls or parsed.problems:
        return False
    report.parsed += 1
    if sorted(call.name for call in parsed.tool_calls) != sorted(call.name for call in expected):
        return False
    report.right_name += 1
    if not calls_match(expected, parsed.tool_calls, lambda made, want: set(made.arguments) == set(want.arguments)):
        return False
    report.right_arg_keys += 1
    if not calls_match(expected, parsed.tool_calls, lambda made, want: made.arguments == want.arguments):
        return False
    report.right_args += 1
    return True


def tool_eval(model: ReplyModel, conversations: Iterable[Conversation], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
              on_turn: Callable[[int], None] | None = None, slots: int = EVAL_SLOTS) -> ToolEvalReport:
    """Replay every assistant turn with greedy decoding, `slots` at once, and score the replies."""
    report = ToolEvalReport()
    options = GenerationConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    turns: list[tuple[dict[str, Any], str]] = []  # each replayed turn's reference and prompt
    for conversation in conversations:
        report.conversations += 1
        for history, reference in eval_turns(conversation):
            prompt = render_conversation(history, conversation.tools, add_generation_prompt=True)
            if not reply_fits(model, model.count_tokens(prompt), reference_reply_tokens(model, reference),
                              max_new_tokens):
                report.skipped_too_long += 1
                continue
            turns.append((reference, prompt))
    replies = model.replies([prompt for _, prompt in turns], options, slots)
    for count, ((reference, _), reply) in enumerate(zip(turns, replies, strict=True), start=1):
        text = reply.text()
        report.stop_reasons[reply.stats.stop_reason] += 1
        correct = score_turn(reference, text, report)
        if not correct and len(report.examples) < EXAMPLES_KEPT:
            wanted = [call.to_json() for call in normalize_tool_calls(reference.get("tool_calls"))]
            report.examples.append({"expected": wanted or reference.get("content", "")[:200],
                                    "reply": text[:300], "stop_reason": reply.stats.stop_reason})
        if on_turn is not None:
            on_turn(count)
    return report


def load_eval_conversations(path: Path, format: str | None = None) -> list[Conversation]:
    """The held-out file, read exactly as `cogni prepare` reads chat data (format from --format or detected)."""
    path = Path(path)
    if not path.is_file():
        raise CogniError(f"{path}: tool-eval file not found")
    conversations = list(iter_conversations(resolve_chat_source(str(path), format)))
    if not any(message["role"] == "assistant" for conversation in conversations
               for message in conversation.messages):
        raise CogniError(f"{path}: no assistant turns to evaluate")
    return conversations
