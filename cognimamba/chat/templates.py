"""The prompt a chat is rendered to: our ChatML + tools, or an imported checkpoint's own Jinja chat template.

A run made by `cogni import-hf` keeps its checkpoint's chat template (`hf_chat_template` in config.json) and
speaks it by default: that is the format the pretrained model learned. A run trained here, `--init-from` such a
run included, learned our ChatML from `cogni prepare`'s data, and its config.json does not carry the template,
so it speaks ChatML; `inference.chat_template` in the run's config.json ("auto", "chatml", "own") overrides the
choice.

The template renders the way transformers' `apply_chat_template` does (a sandboxed Jinja environment with its
`tojson`, `raise_exception`, `strftime_now`, `trim_blocks` and `lstrip_blocks`), with one difference: every
string of the conversation and the tools goes through `model/tokenizer.literal` first, so a message that spells
`<|eot_id|>` or `<start_of_turn>` stays text (transformers' `sanitize_control_tokens=True`).

Tool calls: a template that writes `<tool_call>` (Qwen 2.5 and 3) asks for `<tool_call>{"name", "arguments"}
</tool_call>`, exactly what chat/format parses, so tools work as with ChatML. Any other template (Llama 3's plain
JSON calls, Gemma 3, which has no tool format) is refused tools with one line that names the fix.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import jinja2
import jinja2.ext
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cognimamba.chat.format import ROLES, normalize_tool, normalize_tool_calls, render_conversation
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import IM_START, TOOL_CALL, keep_plain, literal
from cognimamba.runs.layout import CONFIG
from cognimamba.system.fileio import read_json

CHAT_TEMPLATES = ("auto", "chatml", "own")
# Tokens that end or start a turn in the families' templates: a reply stops at the first one the template writes
# (the tokenizer's stop ids cover only <|endoftext|> and <|im_end|>).
TURN_TOKENS = ("<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|eom_id|>", "<|start_header_id|>", "<end_of_turn>",
               "<start_of_turn>")


class PromptFormat(Protocol):
    """How a conversation becomes the model's prompt, and what ends a reply in it."""

    name: str
    stop: tuple[str, ...]

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True) -> str: ...


@dataclass(frozen=True)
class ChatML:
    """chat/format's ChatML + tools: what runs trained here speak."""

    name: str = "chatml"
    stop: tuple[str, ...] = (IM_START,)  # a model that skips <|im_end|> would go on to write the next turn

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True) -> str:
        return render_conversation(messages, tools, add_generation_prompt)


CHATML = ChatML()


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' filter: Jinja's own tojson escapes HTML characters
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


class _TemplateDict:
    """transformers' `dict` for templates: building dicts, nothing of the type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args)


class _TemplateNamespace(jinja2.utils.Namespace):
    """transformers' `namespace`: no underscore-prefixed names, the way to CPython's internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's own signature trick, so namespace(self=...) works
        self, attributes = args[0], dict(*args[1:], **kwargs)
        for name in attributes:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attributes)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """The template in transformers' environment (utils/chat_template_utils.py), minus its `{% generation %}`
    tracker, which only marks assistant tokens for training."""
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    environment.globals["dict"] = _TemplateDict()
    environment.globals["namespace"] = _TemplateNamespace
    try:
        return environment.from_string(source)
    except jinja2.exceptions.TemplateError as error:
        raise CogniError(f"the run's chat template does not compile ({error})") from error


def literal_data(value: Any) -> Any:
    """Every string in `value` (keys too) as `literal` text."""
    if isinstance(value, str):
        return literal(value)
    if isinstance(value, dict):
        return {literal_data(key): literal_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [literal_data(item) for item in value]
    return value


def template_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message as templates read it (OpenAI's shape, arguments as an object), its text literal."""
    if message.get("role") not in ROLES:  # templates write the role as it is, between control tokens
        raise CogniError(f"unsupported role {message.get('role')!r} (system, user, assistant, tool)")
    shaped: dict[str, Any] = {"role": message["role"], "content": literal(str(message.get("content") or ""))}
    calls = normalize_tool_calls(message.get("tool_calls"))
    if calls:
        shaped["tool_calls"] = [{"type": "function", "function": {"name": literal(call.name),
                                                                  "arguments": literal_data(call.arguments)}}
                                for call in calls]
    for key in ("name", "tool_call_id", "reasoning_content"):
        if isinstance(message.get(key), str):
            shaped[key] = literal(message[key])
    return shaped


@dataclass(frozen=True)
class OwnTemplate:
    """A checkpoint's own Jinja chat template, rendered as transformers renders it."""

    source: str
    special_tokens: tuple[tuple[str, str], ...] = ()  # (("bos_token", "<bos>"), ...): read by name
    plain_spellings: frozenset[str] = frozenset()  # tokens import-hf appended: text in this template's world
    name: str = "own"

    @property
    def stop(self) -> tuple[str, ...]:
        eos = dict(self.special_tokens).get("eos_token")
        turn = [token for token in TURN_TOKENS if token in self.source]
        return tuple(dict.fromkeys([*turn, *([eos] if eos else [])]))

    @property
    def speaks_tool_calls(self) -> bool:
        """Whether the template asks for calls in <tool_call> tags, the format chat/format parses."""
        return TOOL_CALL in self.source

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True) -> str:
        if tools and not self.speaks_tool_calls:
            raise CogniError("this run speaks its checkpoint's own chat template, which has no <tool_call> format "
                             "for tools; fine-tune it on tool chats (cogni train --init-from RUN) or set "
                             "inference.chat_template to chatml in its config.json")
        try:
            text = compile_template(self.source).render(
                messages=[template_message(message) for message in messages],
                tools=[literal_data(normalize_tool(tool)) for tool in tools] if tools else None, documents=None,
                add_generation_prompt=add_generation_prompt, **dict(self.special_tokens))
        except jinja2.exceptions.TemplateError as error:
            raise CogniError(f"the run's chat template refused the conversation: {error}") from error
        return keep_plain(text, self.plain_spellings) if self.plain_spellings else text


def prompt_format(run_info: dict[str, Any], where: str = "run config") -> PromptFormat:
    """The format a run's config.json payload names (see the module's docstring)."""
    inference = run_info.get("inference")
    choice = inference.get("chat_template", "auto") if isinstance(inference, dict) else "auto"
    if choice not in CHAT_TEMPLATES:
        raise CogniError(f"{where}: inference.chat_template = {choice!r}; choose one of {', '.join(CHAT_TEMPLATES)}")
    source = run_info.get("hf_chat_template")
    if choice == "own" and not isinstance(source, str):
        raise CogniError(f'{where}: inference.chat_template = "own", but the run has no chat template of its own '
                         "(only `cogni import-hf` keeps one); use chatml")
    if choice == "chatml" or not isinstance(source, str):
        return CHATML
    special = run_info.get("hf_special_tokens")
    appended: Collection[str] = run_info.get("added_special_tokens") or ()
    return OwnTemplate(source, tuple(sorted(special.items())) if isinstance(special, dict) else (),
                       frozenset(appended))


def run_prompt_format(run: Path) -> PromptFormat:
    """The prompt format of the run dir `run` (a LoRA run's own config.json: its base's template is not its)."""
    path = Path(run) / CONFIG
    payload = read_json(path, "run config")
    return prompt_format(payload if isinstance(payload, dict) else {}, str(path))
