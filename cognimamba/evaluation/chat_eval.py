"""`cogni test-model RUN --chat-eval FILE`: does the model take its turn, and call tools right, in conversation?

Every assistant turn of the held-out conversations is replayed as the chat app would ask for it: the
reference history up to that turn, rendered with its system turn and tools, the oldest whole turns left
out when the context is full (the app's rule). The model continues greedily until it ends its turn.

    turn_taking_rate    of all replayed turns: the reply ends with <|im_end|> within the token limit, and
                        before that never starts another turn (<|im_start|>) nor ends the text (<|endoftext|>)
    parse/name/args/no_false_call rates
                        tool_eval's four rates, scored by tool_eval.score_turn on the reply's text
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tokenizers import Tokenizer
from torch import nn

from cognimamba.chat.format import normalize_tool_calls, render_conversation
from cognimamba.config.schema import GenerationConfig
from cognimamba.data.conversation import Conversation
from cognimamba.evaluation.checks import ModelReport
from cognimamba.evaluation.tool_eval import (
    DEFAULT_MAX_NEW_TOKENS,
    EVAL_SLOTS,
    EXAMPLES_KEPT,
    ToolEvalReport,
    eval_turns,
    load_eval_conversations,
    score_turn,
)
from cognimamba.inference.batching import BatchEngine, stream_chains
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, IM_START, decode, encode
from cognimamba.runs.loading import LoadedRun

TURN_MARKERS = (IM_END, IM_START, END_OF_TEXT)  # the first one the model writes ends its reply


class CompletionModel(Protocol):
    """What the chat eval talks to: raw greedy continuations, with the special token that ended them."""

    @property
    def context_length(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def complete_many(self, prompts: list[str], max_new_tokens: int) -> Iterator[str]: ...


class RunCompletions:
    """A model's greedy continuations of prompts, each up to and including the first turn marker it writes.

    Chat decoding stops at <|im_end|> or <|endoftext|> alike and drops them; turn-taking needs to know which
    one came, so this decodes with no stop token and keeps the marker. The prompts are decoded together in
    `slots` sequence slots (inference/batching.py), with the same tokens as one at a time.
    """

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, slots: int = EVAL_SLOTS,
                 prompt_cache: bool = True) -> None:
        self.tokenizer = tokenizer
        # Without a tokenizer the engine stops at no token and hands out ids (as text) instead of text.
        # Inline: the eval's own thread steps the engine, the thread that loaded the model (BatchEngine).
        self.engine = BatchEngine(model, None, slots, prompt_cache=prompt_cache, inline=True)
        self.marker_ids = frozenset({tokenizer.token_to_id(marker) for marker in TURN_MARKERS} - {None})
        self.prompt_tokens = self.cached_tokens = 0  # over every prompt so far: what prompt caching saved reading

    @property
    def context_length(self) -> int:
        return self.engine.context_length

    def count_tokens(self, text: str) -> int:
        return len(encode(self.tokenizer, text))

    def complete_many(self, prompts: list[str], max_new_tokens: int) -> Iterator[str]:
        """Each prompt's continuation, in order, as soon as it and those before it are done."""
        options = GenerationConfig(temperature=0.0, max_new_tokens=max_new_tokens)
        # A conversation's turns one after another in one slot: each reads only what its turn adds.
        replies = stream_chains(self.engine, [encode(self.tokenizer, prompt) for prompt in prompts], options,
                                self.marker_ids)
        for reply in replies:
            ids = [int(token) for token in reply]
            self.prompt_tokens += reply.stats.prompt_tokens
            self.cached_tokens += reply.stats.cached_tokens
            yield decode(self.tokenizer, ids)

    def complete(self, prompt: str, max_new_tokens: int) -> str:
        return next(self.complete_many([prompt], max_new_tokens))


@dataclass
class ChatEvalReport:
    turns: int = 0
    turns_taken: int = 0
    trimmed: int = 0  # turns whose history lost its oldest turns to fit the context
    skipped_too_long: int = 0  # turns whose system turn and latest user turn alone exceed the context
    tools: ToolEvalReport = field(default_factory=ToolEvalReport)
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first misses, for a human reader

    @property
    def turn_taking_rate(self) -> float | None:
        return self.turns_taken / self.turns if self.turns else None

    def metrics(self) -> dict[str, Any]:
        tool_metrics = {key: value for key, value in self.tools.metrics().items()
                        if key not in ("skipped_too_long", "tool_eval_conversations")}
        return {"turn_taking_rate": self.turn_taking_rate, "turns": self.turns, "turns_taken": self.turns_taken,
                **tool_metrics, "conversations": self.tools.conversations, "trimmed_history": self.trimmed,
                "skipped_too_long": self.skipped_too_long, "examples": self.examples}

    def summary(self) -> str:
        rate = f"{self.turn_taking_rate:.2f}" if self.turn_taking_rate is not None else "n/a"
        text = f"turn-taking {rate} ({self.turns_taken}/{self.turns}); {self.tools.summary()}"
        if self.trimmed:
            text += f"; {self.trimmed} histories trimmed to fit"
        if self.skipped_too_long:
            text += f"; {self.skipped_too_long} turns longer than the context skipped"
        return text


def takes_turn(raw: str) -> bool:
    """The reply ends its turn with <|im_end|> before any other turn marker (a missing one: the limit hit first)."""
    return raw.find(IM_END) >= 0 and all(marker not in raw[:raw.find(IM_END)] for marker in TURN_MARKERS)


def reply_text(raw: str) -> str:
    """The reply as the app shows it: the text before the first turn marker."""
    cut = min((raw.find(marker) for marker in TURN_MARKERS if marker in raw), default=len(raw))
    return raw[:cut]


def fit_prompt(history: list[dict[str, Any]], tools: list[dict[str, Any]] | None, model: CompletionModel,
               reserve: int) -> tuple[str, bool] | None:
    """The prompt for the next reply, leaving `reserve` tokens: the system turn and tools always kept, the
    oldest whole turns (each starting at a user message) left out until it fits; None when nothing fits."""
    head = history[:1] if history and history[0]["role"] == "system" else []
    rest = history[len(head):]
    starts = [0, *(index for index, message in enumerate(rest) if message["role"] == "user" and index > 0)]
    for start in starts:
        prompt = render_conversation(head + rest[start:], tools, add_generation_prompt=True)
        if model.count_tokens(prompt) <= model.context_length - reserve:
            return prompt, start > 0
    return None


def reply_reserve(model: CompletionModel, max_new_tokens: int) -> int:
    """Tokens each prompt leaves for the reply: up to max_new_tokens, at most a quarter of the context."""
    return min(max_new_tokens, max(1, model.context_length // 4))


def chat_eval(model: CompletionModel, conversations: Iterable[Conversation],
              max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, on_turn: Callable[[int], None] | None = None
              ) -> ChatEvalReport:
    """Replay every assistant turn with greedy decoding; score turn-taking and tool calls."""
    report = ChatEvalReport()
    reserve = reply_reserve(model, max_new_tokens)
    turns: list[tuple[dict[str, Any], str]] = []  # each replayed turn's reference and prompt
    for conversation in conversations:
        report.tools.conversations += 1
        for history, reference in eval_turns(conversation):
            fitted = fit_prompt(history, conversation.tools, model, reserve)
            if fitted is None:
                report.skipped_too_long += 1
                continue
            prompt, trimmed = fitted
            report.trimmed += trimmed
            turns.append((reference, prompt))
    replies = model.complete_many([prompt for _, prompt in turns], max_new_tokens)
    for (reference, _), raw in zip(turns, replies, strict=True):
        took_turn = takes_turn(raw)
        report.turns += 1
        report.turns_taken += took_turn
        correct = score_turn(reference, reply_text(raw), report.tools)
        if not (took_turn and correct) and len(report.examples) < EXAMPLES_KEPT:
            wanted = [call.to_json() for call in normalize_tool_calls(reference.get("tool_calls"))]
            report.examples.append({"expected": wanted or reference.get("content", "")[:200], "reply": raw[:300]})
        if on_turn is not None:
            on_turn(report.turns)
    return report


def eval_chat_turns(loaded: LoadedRun, path: Path, format: str | None, report: ModelReport,
                    on_turn: Callable[[int], None] | None = None) -> ChatEvalReport:
    """Run the chat eval on a held-out file and add its check and figures (under "chat_eval") to `report`."""
    held_out = load_eval_conversations(path, format)
    result = chat_eval(RunCompletions(loaded.model, loaded.tokenizer), held_out, on_turn=on_turn)
    report.metrics["chat_eval"] = {**result.metrics(), "file": str(path)}
    detail = result.summary() if result.turns else (f"every turn of {path} is longer than the context "
                                                    f"({loaded.config.model.max_seq_len} tokens)")
    report.add("chat eval", result.turns > 0, f"{detail} on {path}")
    return result
