"""A chat request as the model's prompt: the run's prompt format (chat/templates.py: ChatML + tools, or an
imported checkpoint's own template), and what tool_choice forces.

tool_choice is enforced by the start of the reply, not by asking nicely: "none" stops the reply at a
`<tool_call>`; a named function puts `<tool_call>\\n{"name": "NAME", "arguments": {` in the model's mouth
and lets it write the arguments; "required" first lets the model pick the likeliest of the allowed
names (scored by the model itself), then does the same. The forced start runs through the arguments' `{`,
so a model that would rather talk still has to write inside a call; if the call does not parse anyway,
the reply says so (serve/responses.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from cognimamba.chat.templates import CHATML, PromptFormat
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import TOOL_CALL
from cognimamba.serve.errors import bad_request
from cognimamba.serve.schemas import ChatRequest

CALL_NAME_HEAD = f'{TOOL_CALL}\n{{"name": "'


class Scores(Protocol):
    def likeliest(self, prefix: str, continuations: list[str]) -> str: ...


def named_call_start(name: str) -> str:
    """The first characters of a call to `name`, exactly as chat.format (and Qwen's template) renders one, up to
    its arguments' `{`."""
    return f'{TOOL_CALL}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": {{'


@dataclass(frozen=True)
class ForcedStart:
    """Text the reply must begin with: fixed, or a call to whichever of `choose_from` the model prefers."""

    text: str = ""
    choose_from: tuple[str, ...] = ()

    def resolve(self, model: Scores, prompt: str) -> str:
        if not self.choose_from:
            return self.text
        endings = [json.dumps(name, ensure_ascii=False)[1:] for name in self.choose_from]  # name + closing quote
        best = model.likeliest(prompt + CALL_NAME_HEAD, endings)
        return named_call_start(self.choose_from[endings.index(best)])

    @property
    def longest(self) -> str:
        """The longest text it can resolve to, for checking that the prompt leaves room."""
        return max([self.text, *(named_call_start(name) for name in self.choose_from)], key=len)


@dataclass(frozen=True)
class ChatPrompt:
    text: str
    forced: ForcedStart = ForcedStart()
    stop: list[str] = field(default_factory=list)  # besides the request's own
    # What a call in the reply may name: the offered tools, unless "none". Empty for a request without tools, so
    # it never gets a call back on any endpoint (what the model writes between the tags stays text).
    tool_names: frozenset[str] = frozenset()


def chat_prompt(request: ChatRequest, prompt_format: PromptFormat = CHATML) -> ChatPrompt:
    """The same rendering `cogni chat` sends the model, plus tool_choice's constraint.

    Forced calls start as chat.format writes them; a format that has no such calls refuses tools when rendering.
    """
    try:
        text = prompt_format.render(request.messages, request.tools or None, add_generation_prompt=True)
    except CogniError as error:  # a template that cannot take these tools or these turns
        raise bad_request(str(error), "tools" if request.tools else "messages") from error
    stop = list(prompt_format.stop)  # a model that skips its end-of-turn token would go on to write the next turn
    choice = request.tool_choice
    names = tuple(tool["function"]["name"] for tool in request.tools)
    if choice.mode == "none":
        return ChatPrompt(text, stop=[*stop, TOOL_CALL])
    if choice.mode == "function" and choice.name is not None:
        return ChatPrompt(text, ForcedStart(named_call_start(choice.name)), stop, frozenset(names))
    if choice.mode == "required":
        forced = ForcedStart(named_call_start(names[0])) if len(names) == 1 else ForcedStart(choose_from=names)
        return ChatPrompt(text, forced, stop, frozenset(names))
    return ChatPrompt(text, stop=stop, tool_names=frozenset(names))
